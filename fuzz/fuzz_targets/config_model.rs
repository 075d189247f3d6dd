//! `config.json` -> `ModelConfig::from_json_str` -> `layout::tensor_table` -> `Model::new` over a
//! store built to match (every tensor of the table, F32, synthesised in memory) -> one decode
//! step and a two-token chunk. This is the path the review found wrapping arithmetic and the
//! `num_hidden_layers` memory bomb on. Configs implying more than 4 MiB of weights are valid but
//! skipped after `tensor_table` (`MODEL_BUDGET_BYTES`). Seeds: the fixtures' and the demo model's
//! `config.json`.
#![no_main]

use blockffn::config::ModelConfig;
use blockffn::layout::tensor_table;
use blockffn::model::{FfnMode, Logits, Model};
use blockffn::weights::WeightStore;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(cfg) = ModelConfig::from_json_str(text) else { return };
    let table = tensor_table(&cfg);
    let tensors: Vec<(String, Vec<usize>)> = table.iter().map(|e| (e.rt_name.clone(), e.rt_shape.clone())).collect();
    drop(table);
    let Some(file) = blockffn_fuzz::synth_safetensors(&tensors) else { return };
    let Ok(store) = WeightStore::from_buf(blockffn_fuzz::aligned(&file)) else { return };
    let Ok(model) = Model::new(cfg, store) else { return };
    let mut cache = model.new_cache();
    let bos = model.config().bos_token_id.unwrap_or(0);
    let _ = model.forward(&mut cache, &[bos], FfnMode::Sparse, Logits::Last);
    let _ = model.forward(&mut cache, &[0], FfnMode::Dense, Logits::Last);
    let _ = model.forward_chunk(&mut cache, &[0, 1], Logits::All);
});
