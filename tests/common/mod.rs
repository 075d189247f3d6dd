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

/// Address-space cap of the hostile-input runs (RELIABILITY: a memory bomb must end in a typed
/// error, not an allocation abort).
pub const HOSTILE_AS_LIMIT_KIB: u64 = 1536 * 1024;
/// Wall-clock limit of the hostile-input runs.
pub const HOSTILE_TIME_LIMIT: std::time::Duration = std::time::Duration::from_secs(20);

/// Runs the CLI under a 1.5 GiB address-space cap (`ulimit -v`) and a 20 s deadline, as the
/// reliability reproductions do. Returns the output and the wall time; a run past the deadline is
/// killed and reported as a failure of the test.
pub fn run_capped(args: &[&str]) -> (Output, std::time::Duration) {
    run_sh(&format!("ulimit -v {HOSTILE_AS_LIMIT_KIB}"), args)
}

/// Runs the CLI as `sh -c "<prefix>; exec blockffn args…"` (a limit of the test's choosing) with
/// the hostile-run deadline.
pub fn run_sh(prefix: &str, args: &[&str]) -> (Output, std::time::Duration) {
    use std::process::Stdio;
    let start = std::time::Instant::now();
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(format!("{prefix} && exec \"$0\" \"$@\""))
        .arg(env!("CARGO_BIN_EXE_blockffn"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("sh runs");
    // Drain the pipes on threads so a chatty child cannot block on a full pipe.
    let mut so = child.stdout.take().unwrap();
    let mut se = child.stderr.take().unwrap();
    let t_out = std::thread::spawn(move || {
        let mut b = Vec::new();
        std::io::Read::read_to_end(&mut so, &mut b).ok();
        b
    });
    let t_err = std::thread::spawn(move || {
        let mut b = Vec::new();
        std::io::Read::read_to_end(&mut se, &mut b).ok();
        b
    });
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if start.elapsed() > HOSTILE_TIME_LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("blockffn {args:?} ran past {HOSTILE_TIME_LIMIT:?} (hang)");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let out = Output { status, stdout: t_out.join().unwrap(), stderr: t_err.join().unwrap() };
    (out, start.elapsed())
}

/// A hostile input must end in a clean, typed error: exit code 1 or 2, no panic, no abort (a
/// signal), within the deadline and the address-space cap, with `needle` in the message.
pub fn run_hostile(args: &[&str], needle: &str) -> String {
    let (o, took) = run_capped(args);
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    let code = o.status.code();
    assert!(!err.contains("panicked"), "blockffn {args:?} panicked: {err}");
    assert!(matches!(code, Some(1) | Some(2)), "blockffn {args:?}: exit {:?} (want 1 or 2; a signal means an abort): {err}", o.status);
    assert!(err.contains(needle), "blockffn {args:?}: expected `{needle}` in: {err}");
    assert!(took < HOSTILE_TIME_LIMIT, "blockffn {args:?} took {took:?}");
    err
}

/// Re-hashes every file a package's manifest lists, as an attacker who can change the weights
/// can also change the manifest (the manifest is integrity, not authenticity).
pub fn forge_manifest(dir: &Path) {
    let p = dir.join("manifest.json");
    let mut m: Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    let names: Vec<String> = m["files"].as_object().unwrap().keys().cloned().collect();
    for n in names {
        let b = std::fs::read(dir.join(&n)).unwrap();
        m["files"][&n] = serde_json::json!({ "size": b.len(), "sha256": blockffn::package::sha256_hex(&b) });
    }
    std::fs::write(&p, serde_json::to_string(&m).unwrap()).unwrap();
}

/// A scratch copy of a runtime package directory (files only).
pub fn package_copy(src: &Path, tag: &str) -> PathBuf {
    let dst = scratch(tag);
    for e in std::fs::read_dir(src).unwrap() {
        let p = e.unwrap().path();
        if p.is_file() {
            std::fs::copy(&p, dst.join(p.file_name().unwrap())).unwrap();
        }
    }
    dst
}
