//! Helpers shared by the integration tests: run the real `blockffn` binary, read golden fixtures.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::Value;

pub const FIXTURES: [&str; 6] =
    ["mla_block_linear", "gqa_tied_block_linear", "mla_block3d", "gqa_sum_norm", "mla_noqlora_none_norm", "gqa_dense"];

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn fixture(name: &str) -> PathBuf {
    root().join("tests/fixtures").join(name)
}

pub fn expected(name: &str) -> Value {
    let text = std::fs::read_to_string(fixture(name).join("expected.json")).expect("expected.json");
    serde_json::from_str(&text).expect("valid JSON")
}

/// A fresh scratch directory under target/ (removed first if it exists).
pub fn scratch(tag: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let d = root().join("target/test-scratch").join(format!(
        "{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

pub fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_blockffn")).args(args).output().expect("blockffn runs")
}

/// Runs the CLI and returns stdout, panicking with stderr on failure.
pub fn run_ok(args: &[&str]) -> String {
    let o = run(args);
    assert!(o.status.success(), "blockffn {args:?} failed: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout).unwrap()
}

/// Runs the CLI expecting a clean failure: non-zero exit, a message containing `needle`, no panic.
pub fn run_err(args: &[&str], needle: &str) -> String {
    let o = run(args);
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(!o.status.success(), "blockffn {args:?} should fail");
    assert!(!err.contains("panicked"), "blockffn {args:?} panicked: {err}");
    assert!(err.contains(needle), "blockffn {args:?}: expected `{needle}` in: {err}");
    err
}

/// Converts a fixture's HF checkpoint with the CLI into a scratch runtime package.
pub fn convert(name: &str, dtype: &str) -> PathBuf {
    let out = scratch(&format!("{name}-{dtype}"));
    let hf = fixture(name).join("hf");
    run_ok(&["convert", hf.to_str().unwrap(), out.to_str().unwrap(), "--dtype", dtype]);
    out
}

/// `blockffn logits --experts` as JSON (`extra` adds flags such as `--dense`).
pub fn logits_of(model: &str, ids: &str, extra: &[&str]) -> Value {
    let mut args = vec!["logits", "--model", model, "--ids", ids, "--experts"];
    args.extend_from_slice(extra);
    serde_json::from_str(&run_ok(&args)).unwrap()
}

/// `blockffn eval --json` of a converted model on the fixture's eval.txt.
pub fn eval_json(model: &Path, name: &str) -> Value {
    let text = fixture(name).join("eval.txt");
    serde_json::from_str(&run_ok(&["eval", "--model", path_str(model), "--text", path_str(&text), "--json"])).unwrap()
}

pub fn ids_arg(v: &Value) -> String {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap().to_string()).collect::<Vec<_>>().join(",")
}

pub fn floats(v: &Value) -> Vec<Vec<f64>> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|row| row.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect())
        .collect()
}

pub fn max_abs_diff(a: &[Vec<f64>], b: &[Vec<f64>]) -> f64 {
    assert_eq!(a.len(), b.len(), "row count");
    let mut m = 0.0f64;
    for (x, y) in a.iter().zip(b) {
        assert_eq!(x.len(), y.len(), "row length");
        for (p, q) in x.iter().zip(y) {
            m = m.max((p - q).abs());
        }
    }
    m
}

pub fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Asserts a `blockffn eval --json` result against a reference `eval` object: same token count,
/// perplexity within 1e-4 relative, TLS / reuse / every CLS_L within 1e-9 (dense models: no TLS).
pub fn assert_eval_matches(got: &Value, exp: &Value, name: &str) {
    assert_eq!(got["tokens"], exp["tokens"], "{name}: token count");
    let (p, q) = (got["ppl"].as_f64().unwrap(), exp["ppl"].as_f64().unwrap());
    assert!((p - q).abs() / q < 1e-4, "{name}: ppl {p} vs reference {q}");
    if exp["tls"].is_null() {
        assert!(got["tls"].is_null(), "{name}: dense model reports no TLS");
        return;
    }
    let close = |a: &Value, b: &Value, what: &str| {
        let (a, b) = (a.as_f64().unwrap(), b.as_f64().unwrap());
        assert!((a - b).abs() < 1e-9, "{name}: {what} {a} vs reference {b}");
    };
    close(&got["tls"], &exp["tls"], "TLS");
    close(&got["reuse"], &exp["reuse"], "reuse");
    for l in ["1", "2", "4", "8", "16", "32", "64"] {
        close(&got["cls"][l], &exp["cls"][l], &format!("CLS_{l}"));
    }
}
