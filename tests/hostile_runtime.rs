//! Hostile runtime packages and CLI inputs (RELIABILITY.md defects 2–4 and 8–11, the native parts
//! of 15): each reproduction ends in a typed error (exit 1 or 2) within 20 s under a 1.5 GiB
//! address-space cap (`common::run_hostile`), and valid variants load with unchanged results.
#![cfg(not(target_arch = "wasm32"))]

mod common;

use std::path::{Path, PathBuf};

use common::*;
use serde_json::Value;

/// The f32 runtime package of the `mla_block_linear` fixture (untied head, 3 layers, 12 experts).
fn base() -> PathBuf {
    fixture("mla_block_linear").join("runtime")
}

/// A scratch copy of the base package with its config edited and the manifest re-hashed.
fn with_config(tag: &str, edit: impl FnOnce(&mut serde_json::Map<String, Value>)) -> PathBuf {
    let d = package_copy(&base(), tag);
    let p = d.join("config.json");
    let mut c: Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    edit(c.as_object_mut().unwrap());
    std::fs::write(&p, serde_json::to_string_pretty(&c).unwrap()).unwrap();
    forge_manifest(&d);
    d
}

fn logits_args(d: &Path) -> Vec<String> {
    vec!["logits".into(), "--model".into(), d.to_str().unwrap().into(), "--ids".into(), "1,2,3".into()]
}

fn hostile_logits(d: &Path, needle: &str) -> String {
    let a = logits_args(d);
    run_hostile(&a.iter().map(String::as_str).collect::<Vec<_>>(), needle)
}

/// `model.safetensors` split into its header (parsed) and data section.
fn read_weights(d: &Path) -> (serde_json::Map<String, Value>, Vec<u8>) {
    let b = std::fs::read(d.join("model.safetensors")).unwrap();
    let n = u64::from_le_bytes(b[..8].try_into().unwrap()) as usize;
    let header: Value = serde_json::from_slice(&b[8..8 + n]).unwrap();
    (header.as_object().unwrap().clone(), b[8 + n..].to_vec())
}

/// Writes a header and data section back (header padded with spaces to keep 8-byte alignment).
fn write_weights(d: &Path, header: &serde_json::Map<String, Value>, data: &[u8]) {
    let mut h = serde_json::to_vec(header).unwrap();
    while (8 + h.len()) % 8 != 0 {
        h.push(b' ');
    }
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&h);
    out.extend_from_slice(data);
    std::fs::write(d.join("model.safetensors"), out).unwrap();
}

/// Defect 2: `num_hidden_layers` without an upper bound built ~10 table entries per layer before any
/// weight was looked at (SIGABRT at 3.5 GiB). Now it is refused while the config is read.
#[test]
fn defect02_num_hidden_layers_is_bounded() {
    for v in [Value::from(1_000_000_000u64), Value::from(1u64 << 40), Value::from(u64::MAX), Value::from(1025u64)] {
        let d = with_config("layers", |c| {
            c.insert("num_hidden_layers".into(), v.clone());
        });
        let e = hostile_logits(&d, "`num_hidden_layers`");
        assert!(e.contains("exceeds the supported maximum 1024"), "{e}");
    }
}

/// Defect 2 through `convert`: the same config value in a Hugging Face directory.
#[test]
fn defect02_convert_refuses_huge_layer_count() {
    let hf = scratch("hf-layers");
    for e in std::fs::read_dir(fixture("mla_block_linear").join("hf")).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, hf.join(p.file_name().unwrap())).unwrap();
    }
    let p = hf.join("config.json");
    let mut c: Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    c["num_hidden_layers"] = Value::from(u64::MAX);
    std::fs::write(&p, c.to_string()).unwrap();
    let out = scratch("hf-layers-out");
    run_hostile(&["convert", path_str(&hf), path_str(&out)], "`num_hidden_layers`");
}

/// Defect 3: `num_experts · expert_size` wrapped to 0 and matched zero-size expert tensors; the
/// forward then panicked (`capacity overflow`). Now the dimension is bounded, and the product too.
#[test]
fn defect03_wrapping_expert_width_is_refused() {
    let d = with_config("wrap", |c| {
        c.insert("expert_size".into(), Value::from(1u64 << 62));
    });
    let (mut h, data) = read_weights(&d);
    // The reproduction's zero-size expert tensors (data offsets collapse to empty ranges at the end).
    for (name, e) in h.iter_mut() {
        if name.ends_with("mlp.up_proj") || name.ends_with("mlp.down_proj_t") {
            e["shape"] = serde_json::json!([0, 64]);
        }
    }
    write_weights(&d, &h, &data);
    forge_manifest(&d);
    hostile_logits(&d, "`expert_size`");

    // Within each key's bound, the product is still checked (65,535 × 2^20 would wrap on wasm32).
    let d = with_config("wrap-product", |c| {
        c.insert("num_experts".into(), Value::from(65_535u64));
        c.insert("expert_size".into(), Value::from(1u64 << 20));
    });
    hostile_logits(&d, "exceeds the supported FFN width");
    // Heads × head dim: every factor bounded, so the product stays far below 2^32.
    let d = with_config("wrap-heads", |c| {
        c.insert("num_attention_heads".into(), Value::from(1u64 << 33));
    });
    hostile_logits(&d, "`num_attention_heads`");
}

/// Defect 4 (native side): values past 2^32 are rejected, never truncated (the wasm32 side is
/// `tests/wasm_node.rs::config_values_past_32_bits_are_refused`).
#[test]
fn defect04_values_past_32_bits_are_refused() {
    for (key, v) in [("hidden_size", (1u64 << 32) + 64), ("vocab_size", (1u64 << 32) + 384), ("num_hidden_layers", 4_294_967_299)] {
        let d = with_config(key, |c| {
            c.insert(key.into(), Value::from(v));
        });
        hostile_logits(&d, &format!("`{key}` {v} exceeds the supported maximum"));
    }
    // A safetensors header length of 2^32 + n: past the end of the file, whatever usize is.
    let d = package_copy(&base(), "hdr");
    let p = d.join("model.safetensors");
    let mut b = std::fs::read(&p).unwrap();
    let n = u64::from_le_bytes(b[..8].try_into().unwrap()) + (1u64 << 32);
    b[..8].copy_from_slice(&n.to_le_bytes());
    std::fs::write(&p, b).unwrap();
    forge_manifest(&d);
    hostile_logits(&d, &format!("header of {n} bytes runs past the end"));
}

/// Defect 8: small package files were read with `fs::read` before any size check: `/dev/zero`
/// grew to 2 GiB, a FIFO hung forever. Now: regular files only, read no further than the manifest.
#[test]
fn defect08_small_files_are_bounded_and_regular() {
    use std::os::unix::fs::symlink;
    let d = package_copy(&base(), "zero-manifest");
    std::fs::remove_file(d.join("manifest.json")).unwrap();
    symlink("/dev/zero", d.join("manifest.json")).unwrap();
    hostile_logits(&d, "not a regular file");

    for name in ["config.json", "tokenizer.json", "model.safetensors"] {
        let d = package_copy(&base(), "fifo");
        std::fs::remove_file(d.join(name)).unwrap();
        let st = std::process::Command::new("mkfifo").arg(d.join(name)).status().unwrap();
        assert!(st.success());
        hostile_logits(&d, "not a regular file");
    }

    // A regular file longer than the manifest says is read only one byte past it.
    let d = package_copy(&base(), "long-tok");
    let mut t = std::fs::read(d.join("tokenizer.json")).unwrap();
    t.resize(t.len() + (64 << 20), b' ');
    std::fs::write(d.join("tokenizer.json"), t).unwrap();
    hostile_logits(&d, "tokenizer.json is larger than the 13014 bytes manifest.json records");

    // A manifest past its 1 MiB cap is refused whatever it claims.
    let d = package_copy(&base(), "big-manifest");
    let mut m = std::fs::read(d.join("manifest.json")).unwrap();
    m.resize(m.len() + (2 << 20), b' ');
    std::fs::write(d.join("manifest.json"), m).unwrap();
    hostile_logits(&d, "larger than the 1048576 bytes a manifest can be");
}

/// Defect 9: tensor ranges that overlap (lm_head pointed at the embedding's bytes, the sum of
/// lengths unchanged) loaded and gave different logits. Now the ranges must tile the data.
#[test]
fn defect09_overlapping_tensor_ranges_are_refused() {
    let d = package_copy(&base(), "overlap");
    let (mut h, data) = read_weights(&d);
    let embed = h["model.embed_tokens.weight"]["data_offsets"].clone();
    h["lm_head.weight"]["data_offsets"] = embed;
    write_weights(&d, &h, &data);
    forge_manifest(&d);
    let e = hostile_logits(&d, "corrupt file");
    assert!(e.contains("overlaps") || e.contains("belong to no tensor"), "{e}");
}

/// Defect 10: config values finite as f64 but infinite as f32 became `inf` (null logits, ids
/// [0,0,…], RoPE silently off); non-finite weights gave the same. Both are refused now.
#[test]
fn defect10_non_finite_values_are_refused() {
    for (key, v) in [("scale_emb", 1e39), ("scale_depth", 1e300), ("rope_theta", 1e39)] {
        let d = with_config(key, |c| {
            c.insert(key.into(), Value::from(v));
        });
        hostile_logits(&d, &format!("`{key}` {v} is not a finite 32-bit float"));
    }
    // A NaN in the final norm's weights (f32 package): the logits are NaN, reported as such.
    let d = package_copy(&base(), "nan");
    let (h, mut data) = read_weights(&d);
    let off = h["model.norm.weight"]["data_offsets"][0].as_u64().unwrap() as usize;
    data[off..off + 4].copy_from_slice(&f32::NAN.to_le_bytes());
    write_weights(&d, &h, &data);
    forge_manifest(&d);
    hostile_logits(&d, "non-finite logit");
    let gen = ["generate", "--model", path_str(&d), "--ids", "1,2", "--max-new-tokens", "3"];
    run_hostile(&gen, "non-finite logit");
}

/// Defect 11: token ids in the config were truncated to 32 bits (2^32 + 2 read as 2) or ignored
/// (`["2"]` read as "no EOS").
#[test]
fn defect11_config_token_ids_are_exact() {
    for (key, v) in [
        ("eos_token_id", serde_json::json!(4_294_967_298u64)),
        ("bos_token_id", serde_json::json!(4_294_967_297u64)),
        ("eos_token_id", serde_json::json!(["2"])),
        ("eos_token_id", serde_json::json!([2, -1])),
    ] {
        let d = with_config(key, |c| {
            c.insert(key.into(), v.clone());
        });
        hostile_logits(&d, &format!("`{key}` must be a token id"));
    }
    // A list of valid ids still works: the first is the stop id.
    let d = with_config("eos-list", |c| {
        c.insert("eos_token_id".into(), serde_json::json!([2, 3]));
    });
    let a = logits_args(&d);
    run_ok(&a.iter().map(String::as_str).collect::<Vec<_>>());
}

/// Defect 15: an upper-case sha256 and a UTF-8 BOM in the manifest or config are valid variants
/// (same logits); a manifest dtype that does not match the weights is refused.
#[test]
fn defect15_manifest_variants_and_dtype_label() {
    let want = logits_of(path_str(&base()), "1,2,3", &[]);

    let d = package_copy(&base(), "upper");
    let c = d.join("config.json");
    let text = std::fs::read_to_string(&c).unwrap();
    std::fs::write(&c, format!("\u{feff}{text}")).unwrap();
    forge_manifest(&d);
    let p = d.join("manifest.json");
    let mut m: Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    for (_, f) in m["files"].as_object_mut().unwrap() {
        f["sha256"] = Value::from(f["sha256"].as_str().unwrap().to_uppercase());
    }
    std::fs::write(&p, format!("\u{feff}{}", serde_json::to_string(&m).unwrap())).unwrap();
    assert_eq!(logits_of(path_str(&d), "1,2,3", &[]), want, "BOM / upper-case hex must load the same model");

    let d = package_copy(&base(), "label");
    let p = d.join("manifest.json");
    let mut m: Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    m["dtype"] = Value::from("f16");
    std::fs::write(&p, m.to_string()).unwrap();
    hostile_logits(&d, "manifest.json says dtype \"f16\" but the weight matrices are stored as F32");
    m["dtype"] = Value::from("f64");
    std::fs::write(&p, m.to_string()).unwrap();
    hostile_logits(&d, "dtype \"f64\"");
}

/// Defect 15: prompts and id lists too long for one argument come from a file or standard input;
/// the results equal the inline forms.
#[test]
fn defect15_prompt_and_ids_from_files() {
    let m = base();
    let dir = scratch("inputs");
    let ids = dir.join("ids.txt");
    std::fs::write(&ids, "1, 2\n3").unwrap();
    let from_file = run_ok(&["logits", "--model", path_str(&m), "--ids-file", path_str(&ids)]);
    assert_eq!(from_file, run_ok(&["logits", "--model", path_str(&m), "--ids", "1,2,3"]));

    let prompt = dir.join("prompt.txt");
    std::fs::write(&prompt, "hello world").unwrap();
    let g = |extra: &[&str]| {
        let mut a = vec!["generate", "--model", path_str(&m), "--max-new-tokens", "4", "--json"];
        a.extend_from_slice(extra);
        run_ok(&a)
    };
    assert_eq!(g(&["--prompt-file", path_str(&prompt)]), g(&["--prompt", "hello world"]));

    // Standard input, and a list far longer than Linux's 128 KiB argument limit: a typed
    // context-length error, not an exec failure.
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_blockffn"))
        .args(["logits", "--model", path_str(&m), "--ids-file", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            let long: String = (0..100_000).map(|i| format!("{},", i % 300)).collect();
            c.stdin.take().unwrap().write_all(long.as_bytes())?;
            c.wait_with_output()
        })
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("exceed the model's context of 256 tokens"), "{err}");

    std::fs::write(&ids, "1,x,3").unwrap();
    run_hostile(&["logits", "--model", path_str(&m), "--ids-file", path_str(&ids)], "item 1 `x` is not a token id");
    run_hostile(&["eval", "--model", path_str(&m), "--text", "/dev/zero"], "not a regular file");
}

/// Defect 15: a failed write says "cannot write", not "cannot read".
#[test]
fn defect15_write_errors_say_write() {
    let full = std::fs::File::options().write(true).open("/dev/full").unwrap();
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_blockffn"))
        .args(["logits", "--model", path_str(&base()), "--ids", "1,2,3"])
        .stdout(full)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("cannot write <stdout>"), "{err}");
}
