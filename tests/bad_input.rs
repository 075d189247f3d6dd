//! Bad input gets a clear message and a non-zero exit, never a panic.
#![cfg(not(target_arch = "wasm32"))]

mod common;

use std::path::{Path, PathBuf};

use blockffn::convert::read_source;
use common::*;
use safetensors::tensor::TensorView;

/// A copy of a fixture's HF directory that a test may damage.
fn hf_copy(name: &str) -> PathBuf {
    let src = fixture(name).join("hf");
    let dst = scratch(&format!("hf-{name}"));
    for e in std::fs::read_dir(&src).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, dst.join(p.file_name().unwrap())).unwrap();
    }
    dst
}

/// Rewrites an HF directory's weights as `model.safetensors` (optionally transforming tensors).
fn to_safetensors(dir: &Path, edit: impl Fn(&str, &mut Vec<usize>, &mut Vec<u8>)) {
    let (_, tensors) = read_source(dir).unwrap();
    let mut owned = Vec::new();
    for (name, t) in tensors {
        let (mut shape, mut data) = (t.shape, t.data);
        edit(&name, &mut shape, &mut data);
        owned.push((name, t.dtype, shape, data));
    }
    let views: Vec<(String, TensorView)> =
        owned.iter().map(|(n, d, s, b)| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap())).collect();
    std::fs::write(dir.join("model.safetensors"), safetensors::serialize(views, None).unwrap()).unwrap();
    std::fs::remove_file(dir.join("pytorch_model.bin")).unwrap();
}

fn convert_err(dir: &Path, needle: &str) -> String {
    let out = scratch("out");
    run_err(&["convert", path_str(dir), path_str(&out)], needle)
}

#[test]
fn safetensors_source_converts_like_pytorch_bin() {
    let dir = hf_copy("mla_block3d");
    to_safetensors(&dir, |_, _, _| {});
    let out = scratch("st-out");
    run_ok(&["convert", path_str(&dir), path_str(&out)]);
    let bin = convert("mla_block3d", "f32");
    let a = std::fs::read(out.join("model.safetensors")).unwrap();
    let b = std::fs::read(bin.join("model.safetensors")).unwrap();
    assert!(a == b, "safetensors and pytorch_model.bin sources must give identical runtime weights");
}

#[test]
fn truncated_pytorch_bin_is_refused() {
    for cut in [0.2, 0.5, 0.97] {
        let dir = hf_copy("mla_block_linear");
        let p = dir.join("pytorch_model.bin");
        let bytes = std::fs::read(&p).unwrap();
        std::fs::write(&p, &bytes[..(bytes.len() as f64 * cut) as usize]).unwrap();
        convert_err(&dir, "invalid checkpoint");
    }
}

#[test]
fn truncated_safetensors_is_refused() {
    let dir = hf_copy("gqa_sum_norm");
    to_safetensors(&dir, |_, _, _| {});
    let p = dir.join("model.safetensors");
    let bytes = std::fs::read(&p).unwrap();
    std::fs::write(&p, &bytes[..bytes.len() - 1000]).unwrap();
    convert_err(&dir, "not a valid safetensors file");
}

#[test]
fn wrong_tensor_shape_is_named() {
    let dir = hf_copy("gqa_sum_norm");
    to_safetensors(&dir, |name, shape, data| {
        if name == "model.layers.1.mlp.router_proj.weight" {
            // drop one expert row
            let row = shape[1] * 2;
            shape[0] -= 1;
            data.truncate(data.len() - row);
        }
    });
    convert_err(
        &dir,
        "tensor `model.layers.1.mlp.router_proj.weight` has shape [7, 64], but config.json implies [8, 64]",
    );
}

#[test]
fn missing_and_extra_tensors_are_named() {
    let dir = hf_copy("gqa_sum_norm");
    to_safetensors(&dir, |name, shape, data| {
        if name == "model.norm.weight" {
            shape.clear();
            shape.push(0);
            data.clear();
        }
    });
    // A zero-sized tensor under the right name is a shape error…
    convert_err(&dir, "model.norm.weight");
    // …and an unknown tensor is named as unexpected.
    let dir = hf_copy("gqa_sum_norm");
    to_safetensors(&dir, |_, _, _| {});
    let (_, tensors) = read_source(&dir).unwrap();
    let mut extra = tensors[0].1.clone();
    extra.shape = vec![extra.data.len() / 2];
    let owned: Vec<(String, _)> =
        tensors.into_iter().chain([("model.layers.0.mlp.shared_expert.weight".to_string(), extra)]).collect();
    let views: Vec<(String, TensorView)> =
        owned.iter().map(|(n, t)| (n.clone(), TensorView::new(t.dtype, t.shape.clone(), &t.data).unwrap())).collect();
    std::fs::write(dir.join("model.safetensors"), safetensors::serialize(views, None).unwrap()).unwrap();
    convert_err(&dir, "model.layers.0.mlp.shared_expert.weight");
}

#[test]
fn bad_config_keys_are_named() {
    let edits: [(&str, serde_json::Value, &str); 4] = [
        ("scale_emb", serde_json::Value::Null, "missing key `scale_emb`"),
        ("ffn_type", "moe".into(), "unknown `ffn_type` \"moe\""),
        ("attention_type", "linear".into(), "unknown `attention_type` \"linear\""),
        ("hidden_size", "64".into(), "`hidden_size` must be a non-negative integer"),
    ];
    for (key, value, needle) in edits {
        let dir = hf_copy("mla_block_linear");
        let p = dir.join("config.json");
        let mut cfg: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
        if value.is_null() {
            cfg.as_object_mut().unwrap().remove(key);
        } else {
            cfg[key] = value;
        }
        std::fs::write(&p, cfg.to_string()).unwrap();
        convert_err(&dir, needle);
    }
    let dir = hf_copy("mla_block_linear");
    std::fs::write(dir.join("config.json"), "{\"hidden_size\": 64,").unwrap();
    convert_err(&dir, "config.json is not valid JSON");
}

#[test]
fn pickle_calling_a_global_is_refused_without_running_it() {
    let marker = Path::new("/tmp/pwned");
    let _ = std::fs::remove_file(marker);
    let dir = hf_copy("mla_block_linear");
    std::fs::copy(fixture("torch").join("evil.bin"), dir.join("pytorch_model.bin")).unwrap();
    convert_err(&dir, "refused unsafe pickle");
    assert!(!marker.exists(), "the pickle's payload must never run");
}

#[test]
fn bad_requests_are_refused() {
    let model = convert("mla_block_linear", "f32");
    let m = path_str(&model);
    run_err(&["logits", "--model", m, "--ids", "1,384"], "token id 384 at position 1 is out of range");
    run_err(&["generate", "--model", m, "--ids", "1,99999", "--max-new-tokens", "2"], "out of range");
    run_err(&["generate", "--model", m, "--prompt", "", "--max-new-tokens", "2"], "the prompt is empty");
    let long: Vec<String> = (0..300).map(|i| (3 + i % 300).to_string()).collect();
    run_err(&["logits", "--model", m, "--ids", &long.join(",")], "exceed the model's context of 256 tokens");
    let long_text = "word ".repeat(400);
    run_err(&["generate", "--model", m, "--prompt", &long_text, "--max-new-tokens", "1"], "max_position_embeddings");
    run_err(
        &["generate", "--model", m, "--ids", "1,2", "--max-new-tokens", "2", "--top-p", "1.5"],
        "top-p must be in (0, 1]",
    );
    let empty = scratch("empty").join("empty.txt");
    std::fs::write(&empty, "").unwrap();
    run_err(&["eval", "--model", m, "--text", path_str(&empty)], "at least one token");
    run_err(&["logits", "--model", m, "--ids", "1,x"], "invalid value");
}
