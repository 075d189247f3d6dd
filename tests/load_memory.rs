//! Loading holds the weights once: peak resident memory while loading stays ≤ 1.2 × the weight
//! file. (Alone in its own test binary so no other test allocates meanwhile. Linux only.)
#![cfg(not(target_arch = "wasm32"))]

mod common;

use blockffn::config::ModelConfig;
use blockffn::convert::{convert_dir, OutDtype};
use blockffn::layout::tensor_table;
use blockffn::model::{FfnMode, Logits};
use blockffn::package::load_dir;
use common::*;
use safetensors::tensor::TensorView;
use safetensors::Dtype;

fn status_kb(key: &str) -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = s.lines().find(|l| l.starts_with(key)).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
#[cfg(target_os = "linux")]
fn peak_memory_while_loading_is_at_most_1_2x_weights() {
    let cfg_json = serde_json::json!({
        "vocab_size": 32000, "hidden_size": 256, "num_hidden_layers": 4, "num_attention_heads": 4,
        "num_key_value_heads": 2, "max_position_embeddings": 512, "rms_norm_eps": 1e-5, "scale_emb": 12,
        "dim_model_base": 64, "scale_depth": 1.4, "tie_word_embeddings": false, "bos_token_id": 1,
        "eos_token_id": 2, "attention_type": "vanilla", "ffn_type": "block_linear", "num_experts": 16,
        "expert_size": 64, "norm_after_router": "rms"
    });
    let cfg = ModelConfig::from_json_str(&cfg_json.to_string()).unwrap();
    let hf = scratch("mem-hf");
    std::fs::write(hf.join("config.json"), cfg_json.to_string()).unwrap();
    {
        let table = tensor_table(&cfg);
        let mut seed = 12345u32;
        let data: Vec<Vec<u8>> = table
            .iter()
            .map(|e| {
                let n: usize = e.hf_shape.iter().product();
                (0..n)
                    .flat_map(|_| {
                        seed = seed.wrapping_mul(1664525).wrapping_add(1013904223);
                        ((seed >> 9) as f32 / (1u32 << 23) as f32 * 0.2 - 0.1).to_le_bytes()
                    })
                    .collect()
            })
            .collect();
        let views: Vec<(String, TensorView)> = table
            .iter()
            .zip(&data)
            .map(|(e, d)| (e.hf_name.clone(), TensorView::new(Dtype::F32, e.hf_shape.clone(), d).unwrap()))
            .collect();
        safetensors::serialize_to_file(views, None, &hf.join("model.safetensors")).unwrap();
    }
    let out = scratch("mem-out");
    convert_dir(&hf, &out, OutDtype::F32, |_| {}).unwrap();
    let weight_bytes = std::fs::metadata(out.join("model.safetensors")).unwrap().len();
    assert!(weight_bytes > 60 << 20, "test model should be large enough to measure ({weight_bytes} bytes)");

    // Reset the peak-RSS counter, then load.
    std::fs::write("/proc/self/clear_refs", "5").expect("clear_refs");
    let before = status_kb("VmRSS:") * 1024;
    let pkg = load_dir(&out).unwrap();
    let peak = status_kb("VmHWM:") * 1024;
    let growth = peak.saturating_sub(before);
    let ratio = growth as f64 / weight_bytes as f64;
    println!("weights {weight_bytes} B, peak growth while loading {growth} B, ratio {ratio:.3}");
    assert!(ratio <= 1.2, "loading peaked at {ratio:.3} x the weight bytes");
    assert_eq!(pkg.model.weight_bytes() as u64, weight_bytes);

    // And the loaded model runs.
    let mut cache = pkg.model.new_cache().unwrap();
    let o = pkg.model.forward(&mut cache, &[1, 2, 3], FfnMode::Sparse, Logits::Last).unwrap();
    assert!(o.logits[0].iter().all(|v| v.is_finite()));
}
