//! The engine compiled to wasm32, run under Node by wasm-bindgen-test: it must reproduce the
//! PyTorch reference on a golden fixture through the same `WeightBuffer` / `Engine` API the JS
//! layer uses. (The embedded package is kept current by tests/runtime_package.rs.)
#![cfg(target_arch = "wasm32")]

use blockffn::wasm::{Engine, WeightBuffer};
use wasm_bindgen_test::*;

const CONFIG: &str = include_str!("fixtures/mla_block_linear/runtime/config.json");
const WEIGHTS: &[u8] = include_bytes!("fixtures/mla_block_linear/runtime/model.safetensors");
const TOKENIZER: &[u8] = include_bytes!("fixtures/mla_block_linear/runtime/tokenizer.json");
const EXPECTED: &str = include_str!("fixtures/mla_block_linear/expected.json");

fn engine() -> Engine {
    let mut buf = WeightBuffer::new(WEIGHTS.len()).unwrap();
    // Stream in uneven chunks, as a download would.
    for (i, chunk) in WEIGHTS.chunks(7777).enumerate() {
        buf.write(i * 7777, chunk).unwrap();
    }
    Engine::new(CONFIG, &mut buf, Some(TOKENIZER.to_vec()), Some("f32".into())).unwrap()
}

fn expected() -> serde_json::Value {
    serde_json::from_str(EXPECTED).unwrap()
}

fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
}

#[wasm_bindgen_test]
fn wasm_engine_reproduces_reference_logits() {
    let exp = expected();
    let e = engine();
    let vocab = e.vocab_size();
    for dense in [false, true] {
        let got = e.logits(&ids(&exp["ids"]), dense).unwrap();
        let mut worst = 0.0f64;
        for (p, row) in exp["logits"].as_array().unwrap().iter().enumerate() {
            for (j, v) in row.as_array().unwrap().iter().enumerate() {
                worst = worst.max((got[p * vocab + j] as f64 - v.as_f64().unwrap()).abs());
            }
        }
        assert!(worst < 1e-4, "wasm logits differ from the reference by {worst} (dense={dense})");
    }
}

#[wasm_bindgen_test]
fn wasm_engine_reproduces_greedy_continuation_and_tokenizer() {
    let exp = expected();
    let e = engine();
    let prompt = ids(&exp["greedy"]["prompt_ids"]);
    // The fixture's continuation contains no EOS, so stopping at EOS does not shorten it.
    let got = e.generate_ids(&prompt, 12, None, None, None, None, 0, false).unwrap();
    assert_eq!(got, ids(&exp["greedy"]["new_ids"]));
    let text = "The river runs";
    let t = e.tokenize(text).unwrap();
    assert_eq!(t[0], 1, "BOS first");
    assert_eq!(e.detokenize(&t).unwrap(), text);
}

#[wasm_bindgen_test]
fn wasm_engine_rejects_bad_input_without_panicking() {
    let e = engine();
    let err = e.logits(&[1, 384], false).unwrap_err();
    let code = js_sys::Reflect::get(&err, &"code".into()).unwrap();
    assert_eq!(code.as_string().unwrap(), "InvalidInput");
    // The engine stays usable after an error.
    assert_eq!(e.logits(&[1, 5], false).unwrap().len(), 2 * 384);
    let mut short = WeightBuffer::new(16).unwrap();
    assert!(short.write(8, &[0u8; 16]).is_err());
}

/// RELIABILITY defect 4: on wasm32 (32-bit usize) config values past 2^32 and a safetensors
/// header length of 2^32 + n were truncated (a 3-layer model from `num_hidden_layers`
/// 4294967299, `hidden_size` 2^32+64 read as 64). They are refused, as natively.
#[wasm_bindgen_test]
fn config_values_past_32_bits_are_refused() {
    use blockffn::config::ModelConfig;
    let base: serde_json::Value = serde_json::from_str(CONFIG).unwrap();
    for (key, v) in [("num_hidden_layers", 4_294_967_299u64), ("hidden_size", (1 << 32) + 64), ("vocab_size", (1 << 32) + 384)] {
        let mut c = base.clone();
        c[key] = v.into();
        let e = ModelConfig::from_json_str(&c.to_string()).unwrap_err().to_string();
        assert!(e.contains(&format!("`{key}` {v} exceeds the supported maximum")), "{e}");
    }
    let mut c = base.clone();
    c["eos_token_id"] = 4_294_967_298u64.into();
    assert!(ModelConfig::from_json_str(&c.to_string()).is_err());

    let mut w = WEIGHTS.to_vec();
    let n = u64::from_le_bytes(w[..8].try_into().unwrap()) + (1u64 << 32);
    w[..8].copy_from_slice(&n.to_le_bytes());
    let mut buf = blockffn::weights::AlignedBuf::zeroed(w.len()).unwrap();
    buf.as_bytes_mut().copy_from_slice(&w);
    let e = blockffn::weights::WeightStore::from_buf(buf).err().expect("refused").to_string();
    assert!(e.contains(&format!("header of {n} bytes runs past the end")), "{e}");
}
