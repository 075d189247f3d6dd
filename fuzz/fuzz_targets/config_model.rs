//! `config.json` -> `ModelConfig::from_json_str` -> `layout::tensor_table` -> `Model::new` over a
//! store built to match (every tensor of the table, F32, synthesised in memory) -> one decode
//! step, one dense step and a two-token chunk. This is the path the review found wrapping
//! arithmetic and the `num_hidden_layers` memory bomb on. Configs implying more than 4 MiB of
//! weights are valid but skipped after `tensor_table` (`MODEL_BUDGET_BYTES`).
//!
//! Two input modes:
//! * an input starting with `{` (or whitespace) is the config text itself (seeds: the fixtures'
//!   and the demo model's `config.json`);
//! * any other input is a list of edits applied to a fixture config, so that values such as 2^62
//!   or u64::MAX reach any key in one mutation (byte-level mutation of JSON digits rarely gets
//!   there): byte 0 picks the fixture, then each 3-10 byte record sets one key (see `edit`).
#![no_main]

use blockffn::config::ModelConfig;
use blockffn::layout::tensor_table;
use blockffn::model::{FfnMode, Logits, Model};
use blockffn::weights::WeightStore;
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value};

/// Every key `src/config.rs` reads.
const KEYS: &[&str] = &[
    "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
    "head_dim", "intermediate_size", "max_position_embeddings", "rms_norm_eps", "rope_theta",
    "scale_emb", "dim_model_base", "scale_depth", "tie_word_embeddings", "bos_token_id", "eos_token_id",
    "attention_type", "q_lora_rank", "kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim",
    "ffn_type", "ffn_gated", "router_act", "expert_size", "num_experts", "norm_after_router", "norm_scale",
    "moe_top_k", "hidden_act", "rope_scaling",
];
const WORDS: &[&str] = &[
    "mla", "vanilla", "block", "block_linear", "moe", "relu", "softmax", "rms", "sum", "none", "silu", "gelu", "",
];

/// Applies one edit record; returns the bytes it consumed (0 = input exhausted).
fn edit(map: &mut Map<String, Value>, r: &[u8]) -> usize {
    if r.len() < 2 {
        return 0;
    }
    let key = KEYS[r[0] as usize % KEYS.len()].to_string();
    let arg = &r[2..];
    let (v, used) = match r[1] % 9 {
        0 if arg.len() >= 8 => (Value::from(u64::from_le_bytes(arg[..8].try_into().unwrap())), 8),
        1 if !arg.is_empty() => (Value::from(arg[0] as i64 - 16), 1),
        // 2^k - 1, 2^k, 2^k + 1: the edges where products and casts wrap (k = 0..=64)
        2 if !arg.is_empty() => {
            let k = (arg[0] % 65) as u32;
            let p = if k == 64 { u64::MAX } else { 1u64 << k };
            (Value::from(p.wrapping_add((arg[0] / 65 % 3) as u64).wrapping_sub(1)), 1)
        }
        3 => {
            map.remove(&key);
            return 2;
        }
        4 if !arg.is_empty() => (Value::from(WORDS[arg[0] as usize % WORDS.len()]), 1),
        5 if arg.len() >= 8 => (
            serde_json::Number::from_f64(f64::from_le_bytes(arg[..8].try_into().unwrap())).map_or(Value::Null, Value::Number),
            8,
        ),
        6 if !arg.is_empty() => (Value::Bool(arg[0] & 1 == 1), 1),
        7 => (Value::Null, 0),
        8 if !arg.is_empty() => (Value::from(-((arg[0] as i64) << 32)), 1),
        _ => return 0,
    };
    map.insert(key, v);
    2 + used
}

fn config_text(data: &[u8]) -> Option<String> {
    match data.first() {
        None => None,
        Some(b'{' | b' ' | b'\n' | b'\t' | b'\r') => std::str::from_utf8(data).ok().map(str::to_owned),
        Some(&b) => {
            let base = blockffn_fuzz::FIXTURE_CONFIGS[b as usize % blockffn_fuzz::FIXTURE_CONFIGS.len()];
            let Ok(Value::Object(mut map)) = serde_json::from_str(base) else { unreachable!("fixture config") };
            let mut at = 1;
            while at < data.len() {
                let n = edit(&mut map, &data[at..]);
                if n == 0 {
                    break;
                }
                at += n;
            }
            Some(Value::Object(map).to_string())
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some(text) = config_text(data) else { return };
    let Ok(cfg) = ModelConfig::from_json_str(&text) else { return };
    let table = tensor_table(&cfg);
    let tensors: Vec<(String, Vec<usize>)> = table.iter().map(|e| (e.rt_name.clone(), e.rt_shape.clone())).collect();
    drop(table);
    let Some(file) = blockffn_fuzz::synth_safetensors(&tensors) else { return };
    let Ok(store) = WeightStore::from_buf(blockffn_fuzz::aligned(&file)) else { return };
    let Ok(model) = Model::new(cfg, store) else { return };
    let Ok(mut cache) = model.new_cache() else { return };
    let bos = model.config().bos_token_id.unwrap_or(0);
    let _ = model.forward(&mut cache, &[bos], FfnMode::Sparse, Logits::Last);
    let _ = model.forward(&mut cache, &[0], FfnMode::Dense, Logits::Last);
    let _ = model.forward_chunk(&mut cache, &[0, 1], Logits::All);
});
