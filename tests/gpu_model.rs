//! The GPU backend against the CPU engine (which the PyTorch reference pins, tests/golden.rs): on
//! every golden fixture in every dtype and on the demo model, logits within 1e-3 of the CPU's
//! (relative to the row's largest |logit|), identical active expert sets, identical greedy
//! continuations; on the GPU alone sparse = dense, KV-cache decoding = a full recompute, a chunk
//! = token-by-token decoding, and a truncated cache = a fresh one.
//!
//! Needs a GPU adapter (Mesa lavapipe is enough) and the CLI (`--features gpu,cli`). Without an
//! adapter the tests print why and pass, unless BLOCKFFN_REQUIRE_GPU=1 (scripts/test.sh sets it).
#![cfg(all(feature = "gpu", feature = "cli"))]

mod common;

use std::path::Path;

use blockffn::backend::{Backend, SeqCache};
use blockffn::gpu::{Gpu, GpuBackend};
use blockffn::model::{FfnMode, Logits, Model};
use blockffn::package::load_dir;
use blockffn::sampling::Sampler;
use common::*;

/// GPU vs CPU, relative to the row's largest |logit| (f32 sums in another order).
const TOL: f32 = 1e-3;
/// The same for q8 packages: activations are quantized to int8 before every q8 product, and a
/// one-ulp difference in an input (sums in another order) can round one entry to the next int8
/// step — 1/127 of its block's largest value — on one backend and not the other.
const TOL_Q8: f32 = 3e-2;

fn gpu() -> Option<Gpu> {
    match Gpu::new_blocking() {
        Ok(g) => Some(g),
        Err(e) if std::env::var("BLOCKFFN_REQUIRE_GPU").as_deref() != Ok("1") => {
            eprintln!("skipped: {e}");
            None
        }
        Err(e) => panic!("BLOCKFFN_REQUIRE_GPU=1 but {e}"),
    }
}

/// The package at `dir` on the CPU and, loaded again, on the GPU.
fn both(dir: &Path) -> Option<(Model, Model<GpuBackend>)> {
    let g = gpu()?;
    let cpu = load_dir(dir).expect("load").model;
    let (config, store) = load_dir(dir).expect("load").model.into_parts();
    Some((cpu, Model::with_backend(GpuBackend::new(g, config, store).expect("upload"))))
}

fn assert_rows_close(what: &str, got: &[Vec<f32>], want: &[Vec<f32>]) -> f32 {
    assert_rows_within(what, got, want, TOL)
}

fn assert_rows_within(what: &str, got: &[Vec<f32>], want: &[Vec<f32>], tol: f32) -> f32 {
    assert_eq!(got.len(), want.len(), "{what}: row count");
    let mut worst = 0.0f32;
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let scale = w.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1e-6);
        let d = g.iter().zip(w).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max) / scale;
        assert!(d <= tol, "{what}: row {i} differs by {d:.2e} of its largest logit (tolerance {tol:e})");
        worst = worst.max(d);
    }
    worst
}

/// Active sets must be identical; a difference is reported token by token and layer by layer.
fn assert_same_sets(what: &str, got: &[Vec<Vec<u16>>], want: &[Vec<Vec<u16>>]) {
    for (t, (g, w)) in got.iter().zip(want).enumerate() {
        for (l, (gs, ws)) in g.iter().zip(w).enumerate() {
            assert_eq!(gs, ws, "{what}: token {t} layer {l}: GPU experts {gs:?} vs CPU {ws:?}");
        }
    }
    assert_eq!(got.len(), want.len());
}

fn run_all<B: Backend>(m: &Model<B>, ids: &[u32], mode: FfnMode) -> blockffn::model::ForwardOut {
    let mut c = m.new_cache().expect("cache");
    m.forward(&mut c, ids, mode, Logits::All).expect("forward")
}

fn greedy<B: Backend>(m: &Model<B>, prompt: &[u32], n: usize, mode: FfnMode) -> Vec<u32> {
    let opts = blockffn::generate::GenerateOptions {
        max_new_tokens: n,
        mode,
        stop_at_eos: false,
        ..Default::default()
    };
    let sampler = Sampler::new(Default::default()).expect("greedy");
    blockffn::generate::generate(m, None, prompt, sampler, &opts, |_| true).expect("generate").0
}

fn compare(name: &str, dir: &Path, ids: &[u32], tol: f32) {
    let Some((cpu, gpu)) = both(dir) else { return };
    for mode in [FfnMode::Sparse, FfnMode::Dense] {
        let (c, g) = (run_all(&cpu, ids, mode), run_all(&gpu, ids, mode));
        let worst = assert_rows_within(&format!("{name} {mode:?}"), &g.logits, &c.logits, tol);
        assert_same_sets(&format!("{name} {mode:?}"), &g.active(), &c.active());
        eprintln!("{name} {mode:?}: {} positions, worst |GPU − CPU| / max|logit| = {worst:.2e}", ids.len());
    }
}

#[test]
fn fixtures_match_cpu_in_every_dtype() {
    for name in FIXTURES.iter().copied().chain(["mla_topk"]) {
        let exp = expected(name);
        let ids: Vec<u32> = serde_json::from_value(exp["ids"].clone()).expect("ids");
        let prompt: Vec<u32> = serde_json::from_value(exp["greedy"]["prompt_ids"].clone()).expect("prompt");
        for dtype in ["f32", "f16", "bf16", "q8"] {
            let dir = convert(name, dtype);
            compare(&format!("{name} {dtype}"), &dir, &ids, if dtype == "q8" { TOL_Q8 } else { TOL });
            if let Some((cpu, gpu)) = both(&dir) {
                let n = exp["greedy"]["ids"].as_array().map_or(16, Vec::len);
                assert_eq!(greedy(&gpu, &prompt, n, FfnMode::Sparse), greedy(&cpu, &prompt, n, FfnMode::Sparse), "{name} {dtype}: greedy");
            }
        }
    }
}

#[test]
fn cli_logits_backend_gpu_matches_cpu() {
    if gpu().is_none() {
        return;
    }
    for name in FIXTURES {
        let exp = expected(name);
        let dir = convert(name, "f32");
        let ids = ids_arg(&exp["ids"]);
        let c = logits_of(path_str(&dir), &ids, &[]);
        let g = logits_of(path_str(&dir), &ids, &["--backend", "gpu"]);
        let err = max_abs_diff(&floats(&g["logits"]), &floats(&c["logits"]));
        eprintln!("{name}: CLI --backend gpu max |Δlogit| = {err:.2e}");
        assert!(err < 1e-3, "{name}: --backend gpu differs by {err}");
        assert_eq!(g["active_experts"], c["active_experts"], "{name}: active sets");
        let ref_err = max_abs_diff(&floats(&g["logits"]), &floats(&exp["logits"]));
        assert!(ref_err < 1e-3, "{name}: --backend gpu differs from the PyTorch reference by {ref_err}");
    }
}

fn demo() -> std::path::PathBuf {
    root().join("models/demo")
}

fn demo_prompt(n: usize) -> Vec<u32> {
    let pkg = load_dir(&demo()).expect("demo");
    let tok = blockffn::tokenizer::Tokenizer::from_bytes(pkg.tokenizer_json.as_ref().expect("tokenizer"), pkg.model.config().bos_token_id).expect("tok");
    let text = std::fs::read_to_string(demo().join("validation.txt")).expect("validation text");
    let mut ids = tok.encode(&text).expect("encode");
    ids.truncate(n);
    ids
}

#[test]
fn demo_model_matches_cpu_and_greedy_text_is_identical() {
    // 80 positions: three prefill blocks, the last one partial.
    let ids = demo_prompt(80);
    compare("demo", &demo(), &ids, TOL);
    let Some((cpu, gpu)) = both(&demo()) else { return };
    for mode in [FfnMode::Sparse, FfnMode::Dense] {
        let want = greedy(&cpu, &ids[..12], 64, mode);
        assert_eq!(greedy(&gpu, &ids[..12], 64, mode), want, "demo {mode:?}: 64-token greedy continuation");
    }
}

#[test]
fn gpu_sparse_equals_dense_and_cache_equals_recompute() {
    let Some((_, gpu)) = both(&demo()) else { return };
    let ids = demo_prompt(40);
    let (s, d) = (run_all(&gpu, &ids, FfnMode::Sparse), run_all(&gpu, &ids, FfnMode::Dense));
    let worst = assert_rows_close("GPU sparse vs dense", &s.logits, &d.logits);
    assert_eq!(s.active(), d.active());
    eprintln!("GPU sparse vs dense: {worst:.2e}");

    // Token by token through the cache vs one recompute of the whole prefix.
    let mut cache = gpu.new_cache().unwrap();
    let mut stepped = Vec::new();
    for &id in &ids {
        stepped.extend(gpu.forward(&mut cache, &[id], FfnMode::Sparse, Logits::Last).unwrap().logits);
    }
    let worst = assert_rows_close("GPU KV cache vs recompute", &stepped, &s.logits);
    eprintln!("GPU KV-cache decoding vs recompute: {worst:.2e}");

    // A draft-sized chunk over the span's union = those tokens one at a time.
    let mut cache = gpu.new_cache().unwrap();
    gpu.forward(&mut cache, &ids[..30], FfnMode::Sparse, Logits::None).unwrap();
    let chunk = gpu.forward_chunk(&mut cache, &ids[30..37], Logits::All).unwrap();
    assert_rows_close("GPU chunk vs per-token", &chunk.logits, &s.logits[30..37]);
    assert_eq!(chunk.active(), s.active()[30..37].to_vec());

    // Rolling back rejected tokens and running others = a cache that never saw them.
    cache.truncate(32);
    let again = gpu.forward(&mut cache, &ids[32..40], FfnMode::Sparse, Logits::All).unwrap();
    assert_rows_close("GPU truncated cache", &again.logits, &s.logits[32..40]);
}

#[test]
fn gpu_rejects_oversized_spans_with_a_typed_error() {
    let Some((_, gpu)) = both(&demo()) else { return };
    let mut cache = gpu.new_cache().unwrap();
    let ids = demo_prompt(40);
    let e = gpu.forward_chunk(&mut cache, &ids, Logits::Last).unwrap_err();
    assert!(e.to_string().contains("spans of 1 to 32"), "{e}");
    // The backend is still usable after the error.
    assert_eq!(gpu.forward(&mut cache, &ids[..3], FfnMode::Sparse, Logits::Last).unwrap().logits.len(), 1);
}

#[test]
fn a_lost_device_is_a_typed_error_and_a_new_load_works() {
    let Some((_, gpu)) = both(&fixture("mla_block_linear").join("runtime")) else { return };
    let ids = [1u32, 5, 9];
    let mut cache = gpu.new_cache().unwrap();
    let want = gpu.forward(&mut cache, &ids, FfnMode::Sparse, Logits::Last).unwrap().logits;
    gpu.backend().gpu().device.destroy();
    let mut cache = gpu.new_cache().unwrap();
    let e = gpu.forward(&mut cache, &ids, FfnMode::Sparse, Logits::Last).unwrap_err();
    assert_eq!(e.code(), "DeviceLost", "{e}");
    assert!(e.to_string().contains("load the model again"), "{e}");
    // Loading again (a fresh device) gives the same logits.
    let Some((_, again)) = both(&fixture("mla_block_linear").join("runtime")) else { return };
    let mut cache = again.new_cache().unwrap();
    assert_eq!(again.forward(&mut cache, &ids, FfnMode::Sparse, Logits::Last).unwrap().logits, want);
}

#[test]
fn speculative_greedy_on_the_gpu_equals_plain_greedy() {
    use blockffn::spec::{DraftLen, Speculative};
    let Some((cpu, gpu)) = both(&demo()) else { return };
    let text = demo_prompt(200);
    // A continuation, and a copy-heavy prompt (a passage, then its start again) where drafts are accepted.
    let copy = [&text[..1], &text[20..60], &text[20..28]].concat();
    let mut accepted = 0;
    for prompt in [text[..10].to_vec(), copy] {
        let plain = greedy(&cpu, &prompt, 32, FfnMode::Sparse);
        for len in [DraftLen::Auto, DraftLen::Fixed(6)] {
            let opts = blockffn::generate::GenerateOptions {
                max_new_tokens: 32,
                mode: FfnMode::Sparse,
                stop_at_eos: false,
                speculative: Speculative::Ngram(len),
                ..Default::default()
            };
            let sampler = Sampler::new(Default::default()).expect("greedy");
            let (ids, _, _, totals) = blockffn::generate::generate(&gpu, None, &prompt, sampler, &opts, |_| true).expect("generate");
            assert_eq!(ids, plain, "GPU speculative ({len:?}) vs CPU plain greedy");
            accepted += totals.expect("speculation totals").accepted;
        }
    }
    assert!(accepted > 0, "drafts were verified and accepted on the GPU");
}
