//! The embedded demo model (models/demo) against the PyTorch reference run on its training export
//! (`train/make_demo_golden.py` wrote tests/fixtures/demo/expected.json): logits, active expert
//! sets, greedy text from a real prompt and the sparsity metrics on real English.
#![cfg(not(target_arch = "wasm32"))]

mod common;

use common::*;
use serde_json::Value;

fn demo() -> String {
    root().join("models/demo").to_str().unwrap().to_string()
}

/// The model (what loads without its optional draft head) within 24 MB, the draft head within 2 MB.
#[test]
fn demo_model_fits_its_budget() {
    let dir = root().join("models/demo");
    let head = [blockffn::spec::eagle::EAGLE_CONFIG, blockffn::spec::eagle::EAGLE_WEIGHTS];
    let (mut total, mut head_bytes) = (0u64, 0u64);
    for e in std::fs::read_dir(&dir).unwrap() {
        let e = e.unwrap();
        let len = e.metadata().unwrap().len();
        if head.contains(&e.file_name().to_str().unwrap()) {
            head_bytes += len;
        } else {
            total += len;
        }
    }
    let val = std::fs::metadata(dir.join("validation.txt")).unwrap().len();
    println!("models/demo: {total} bytes on disk without the draft head ({head_bytes} bytes), validation.txt {val} bytes");
    assert!(total <= 24_000_000, "models/demo is {total} bytes without its draft head (budget 24 MB)");
    assert!(head_bytes <= 2_000_000, "the draft head is {head_bytes} bytes (budget 2 MB)");
    assert!(val <= 2_000_000, "validation.txt is {val} bytes (budget 2 MB)");
}

#[test]
fn demo_model_matches_reference() {
    let exp = expected("demo");
    let ids = ids_arg(&exp["ids"]);
    for extra in [&[][..], &["--dense"][..]] {
        let got = logits_of(&demo(), &ids, extra);
        let last = got["logits"].as_array().unwrap().last().unwrap().clone();
        let err =
            max_abs_diff(&floats(&Value::Array(vec![last])), &floats(&Value::Array(vec![exp["last_logits"].clone()])));
        println!("demo {extra:?}: max |logit - reference| at the last position = {err:.3e}");
        assert!(err < 1e-4, "demo {extra:?}: logits differ from the reference by {err}");
        if extra.is_empty() {
            assert_eq!(got["active_experts"], exp["active_experts"], "demo: active expert sets differ");
        }
    }
}

#[test]
fn demo_model_greedy_text_matches_reference() {
    let exp = expected("demo");
    let prompt = exp["prompt"].as_str().unwrap();
    let n = exp["greedy"]["new_ids"].as_array().unwrap().len().to_string();
    for extra in [&[][..], &["--dense"][..]] {
        let model = demo();
        let mut args = vec!["generate", "--model", &model, "--prompt", prompt];
        args.extend_from_slice(&["--max-new-tokens", &n, "--json", "--ignore-eos"]);
        args.extend_from_slice(extra);
        let got: Value = serde_json::from_str(&run_ok(&args)).unwrap();
        assert_eq!(got["ids"], exp["greedy"]["new_ids"], "demo {extra:?}: greedy continuation differs");
        println!("demo {extra:?}: {prompt}{}", got["text"].as_str().unwrap());
    }
}

#[test]
fn demo_model_eval_matches_reference() {
    let exp = &expected("demo")["eval"];
    let text = fixture("demo").join("eval.txt");
    let got: Value =
        serde_json::from_str(&run_ok(&["eval", "--model", &demo(), "--text", path_str(&text), "--json"])).unwrap();
    assert_eval_matches(&got, exp, "demo");
    let p = got["ppl"].as_f64().unwrap();
    // the trained sparsity, on this slice too: the targets are TLS >= 0.80, CLS_8 >= 0.70
    assert!(got["tls"].as_f64().unwrap() > 0.8 && got["cls"]["8"].as_f64().unwrap() > 0.7);
    println!("demo: ppl {p:.3} TLS {} CLS_8 {}", got["tls"], got["cls"]["8"]);
}

#[test]
fn demo_model_reencodes_to_f32_and_q8() {
    // A runtime package is a valid `convert` source: f16 → f32 is exact (same logits bit for bit),
    // f16 → q8 stays close; a q8 package is refused as a source with a clear error.
    let exp = expected("demo");
    let ids = ids_arg(&exp["ids"]);
    let base = logits_of(&demo(), &ids, &[]);
    let f32_dir = scratch("demo-f32");
    run_ok(&["convert", &demo(), path_str(&f32_dir), "--dtype", "f32"]);
    let got = logits_of(path_str(&f32_dir), &ids, &[]);
    assert_eq!(got["logits"], base["logits"], "f16 → f32 re-encoding changed the logits");
    assert_eq!(got["active_experts"], base["active_experts"]);
    let q8_dir = scratch("demo-q8");
    run_ok(&["convert", &demo(), path_str(&q8_dir), "--dtype", "q8"]);
    let q = logits_of(path_str(&q8_dir), &ids, &[]);
    let err = max_abs_diff(&floats(&q["logits"]), &floats(&base["logits"]));
    println!("demo q8 (re-encoded from f16): max |logit - f16| = {err:.3e}");
    // Trained logits span ±20; int8 weights and activations move them by a few tenths at most, and
    // the perplexity and sparsity on real text barely at all.
    assert!(err < 0.5, "q8 demo logits differ by {err}");
    let text = fixture("demo").join("eval.txt");
    let ev = |d: &str| -> Value {
        serde_json::from_str(&run_ok(&["eval", "--model", d, "--text", path_str(&text), "--json"])).unwrap()
    };
    let (a, b) = (ev(&demo()), ev(path_str(&q8_dir)));
    let (pa, pb) = (a["ppl"].as_f64().unwrap(), b["ppl"].as_f64().unwrap());
    let (ta, tb) = (a["tls"].as_f64().unwrap(), b["tls"].as_f64().unwrap());
    println!("demo q8: ppl {pb:.4} vs f16 {pa:.4}; TLS {tb:.4} vs {ta:.4}");
    assert!((pa - pb).abs() / pa < 0.01 && (ta - tb).abs() < 0.005);
    run_err(
        &["convert", path_str(&q8_dir), path_str(&scratch("demo-back")), "--dtype", "f16"],
        "only F32, F16 and BF16",
    );
}
