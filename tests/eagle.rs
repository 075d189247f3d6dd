//! The EAGLE draft head (src/spec/eagle.rs): the demo package's trained head against the PyTorch
//! reference (tests/fixtures/eagle, written by train/train_eagle.py); greedy speculative decoding
//! with it equals plain greedy decoding over 60 prompts (sparse and dense, adaptive and fixed draft
//! lengths) and accepts drafts; its incremental cache drafts what a fresh head fed everything at
//! once drafts; a package without the head loads and refuses `Eagle` with a typed error; a head
//! that does not fit its model, or a manifest listing half of it, is refused.
#![cfg(not(target_arch = "wasm32"))]

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use blockffn::backend::Backend;
use blockffn::generate::{generate, GenerateOptions};
use blockffn::model::{FfnMode, Logits, Model};
use blockffn::package::load_dir;
use blockffn::sampling::{Sampler, SamplingParams};
use blockffn::spec::eagle::{HeadCache, EAGLE_CONFIG, EAGLE_WEIGHTS};
use blockffn::spec::{DraftLen, Drafter, Eagle, EagleHead, SpecTotals, Speculative};
use blockffn::weights::AlignedBuf;
use blockffn::Error;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

fn demo() -> (Model, Vec<u32>) {
    let dir = root().join("models/demo");
    let pkg = load_dir(&dir).expect("demo model");
    let tok = blockffn::tokenizer::Tokenizer::from_bytes(pkg.tokenizer_json.as_deref().expect("tokenizer"), pkg.model.config().bos_token_id)
        .expect("tokenizer");
    let text = std::fs::read_to_string(dir.join("validation.txt")).expect("validation text");
    (pkg.model, tok.encode_plain(&text).expect("encode"))
}

/// 60 prompts from the held-out end of the validation text (the head trained on the first 85%).
fn prompts(ids: &[u32]) -> Vec<Vec<u32>> {
    let held_out = ids.len() * 85 / 100;
    let span = ids.len() - held_out - 100;
    (0..60)
        .map(|i| {
            let len = 6 + (i * 7) % 55;
            let start = held_out + (i * 997) % span;
            [&[1u32][..], &ids[start..start + len]].concat()
        })
        .collect()
}

fn run(m: &Model, prompt: &[u32], n: usize, mode: FfnMode, spec: Speculative) -> (Vec<u32>, Option<SpecTotals>) {
    let sampler = Sampler::new(SamplingParams::default()).unwrap();
    let opts = GenerateOptions { max_new_tokens: n, mode, stop_at_eos: false, speculative: spec, ..Default::default() };
    let (ids, _, _, totals) = generate(m, None, prompt, sampler, &opts, |_| true).unwrap();
    (ids, totals)
}

fn read_json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))).unwrap()
}

fn floats(v: &serde_json::Value) -> Vec<f32> {
    v.as_array().expect("array").iter().map(|x| x.as_f64().expect("number") as f32).collect()
}

/// The target's features of every position of `ids` (a fresh cache).
fn features(m: &Model, ids: &[u32]) -> Vec<f32> {
    let mut cache = m.new_cache().unwrap();
    blockffn::ready::ready(m.forward_features_async(&mut cache, ids, FfnMode::Sparse, Logits::None)).unwrap().features
}

#[test]
fn the_head_matches_the_pytorch_reference() {
    let (m, _) = demo();
    let head = Arc::clone(m.draft_head().expect("models/demo ships a draft head"));
    let exp = read_json(&root().join("tests/fixtures/eagle/expected.json"));
    let ids: Vec<u32> = exp["ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
    let n = ids.len() - 1;
    let h = m.config().hidden_size;
    let f = features(&m, &ids[..n]);
    let want_f = floats(&exp["features_last"]);
    let got_f = &f[(n - 1) * h..];
    let err = got_f.iter().zip(&want_f).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    assert!(err < 2e-3, "target feature f_(n-1): max abs error {err}");

    let target = m.backend().draft_target().unwrap();
    let mut cache = HeadCache::default();
    let g = head.forward(target, &mut cache, &ids[1..], &f);
    let g_last = &g[(n - 1) * h..];
    let want_g = floats(&exp["head_last_feature"]);
    let err = g_last.iter().zip(&want_g).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    assert!(err < 2e-3, "head feature g_(n-1): max abs error {err}");
    let mut logits = vec![0.0; m.config().vocab_size];
    target.lm_head(g_last, &mut logits);
    let want = floats(&exp["head_last_logits"]);
    let scale = want.iter().map(|v| v.abs()).fold(0.0f32, f32::max);
    let err = logits.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    assert!(err <= 1e-3 * scale.max(1.0), "head logits: max abs error {err} (scale {scale})");

    // The chained drafts, where the reference's top-1 margin is clear of float rounding.
    let mut eagle = Eagle::with_catch_up(head, usize::MAX);
    eagle.observe(0, &f);
    let drafts = eagle.draft(&ids, 8, Some(target));
    let want: Vec<u32> = exp["drafts"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
    let margins = floats(&exp["draft_margins"]);
    for (i, (d, w)) in drafts.iter().zip(&want).enumerate() {
        if margins[i] < 1e-3 {
            break; // a near tie: later drafts may differ legitimately
        }
        assert_eq!(d, w, "draft {i} (margin {})", margins[i]);
    }
    assert_eq!(drafts.len(), 8);
}

#[test]
fn greedy_eagle_equals_greedy_plain_and_accepts_drafts() {
    let (m, ids) = demo();
    let ps = prompts(&ids);
    let mut all = SpecTotals::default();
    for (i, p) in ps.iter().enumerate() {
        let (plain, _) = run(&m, p, 32, FfnMode::Sparse, Speculative::Off);
        let lens: &[DraftLen] = if i % 3 == 0 { &[DraftLen::Auto, DraftLen::Fixed(4)] } else { &[DraftLen::Auto] };
        for &len in lens {
            let (spec, t) = run(&m, p, 32, FfnMode::Sparse, Speculative::Eagle(len));
            assert_eq!(spec, plain, "prompt {i} ({len:?})");
            let t = t.expect("totals");
            all.verifies += t.verifies;
            all.drafted += t.drafted;
            all.accepted += t.accepted;
        }
        if i % 6 == 0 {
            let (dense_plain, _) = run(&m, p, 32, FfnMode::Dense, Speculative::Off);
            let (dense_spec, _) = run(&m, p, 32, FfnMode::Dense, Speculative::Eagle(DraftLen::Fixed(3)));
            assert_eq!(dense_spec, dense_plain, "prompt {i} dense");
        }
    }
    // A trained head agrees with the model often; a broken one (or broken features) would not.
    let rate = all.accepted as f64 / all.drafted.max(1) as f64;
    eprintln!("eagle over {} prompts: {} verifies, {} drafted, {} accepted ({:.2})", ps.len(), all.verifies, all.drafted, all.accepted, rate);
    assert!(rate > 0.3, "acceptance {rate:.2}");
}

#[test]
fn auto_takes_the_head_and_equals_plain() {
    let (m, ids) = demo();
    let p = &prompts(&ids)[7];
    let (plain, _) = run(&m, p, 40, FfnMode::Sparse, Speculative::Off);
    let (auto, t) = run(&m, p, 40, FfnMode::Sparse, Speculative::Auto(DraftLen::Fixed(4)));
    let (eagle, te) = run(&m, p, 40, FfnMode::Sparse, Speculative::Eagle(DraftLen::Fixed(4)));
    assert_eq!(auto, plain);
    assert_eq!(eagle, plain);
    assert_eq!(t.unwrap(), te.unwrap(), "auto is the draft head here");
}

/// The drafter's cache after many verify steps (truncations included) drafts what a fresh drafter
/// fed the same accepted features at once drafts (both catching up on every position); a drafter
/// that restarts from the latest positions after a long gap still drafts.
#[test]
fn the_head_cache_after_steps_equals_a_fresh_head() {
    let (m, ids) = demo();
    let head = Arc::clone(m.draft_head().expect("draft head"));
    let target = m.backend().draft_target().unwrap();
    let p = &prompts(&ids)[3];
    let (plain, _) = run(&m, p, 48, FfnMode::Sparse, Speculative::Off);
    let all = [&p[..], &plain[..]].concat();
    let f = features(&m, &all);
    let h = m.config().hidden_size;
    let mut live = Eagle::with_catch_up(Arc::clone(&head), usize::MAX);
    let mut n = p.len();
    live.observe(0, &f[..n * h]);
    let mut step = 0;
    while n + 6 < all.len() {
        // Draft, then "verify": keep 1 + a few positions (as a rejection would), some features
        // re-observed from an earlier position, as the stepper does after a truncation.
        let d = live.draft(&all[..=n], 4, Some(target));
        assert_eq!(d.len(), 4);
        let keep = 1 + step % 4;
        live.observe(n, &f[n * h..(n + keep) * h]);
        n += keep;
        let mut fresh = Eagle::with_catch_up(Arc::clone(&head), usize::MAX);
        fresh.observe(0, &f[..n * h]);
        let a = live.draft(&all[..=n], 5, Some(target));
        let b = fresh.draft(&all[..=n], 5, Some(target));
        assert_eq!(a, b, "step {step}, position {n}");
        step += 1;
    }
    assert!(step > 8);
    let mut windowed = Eagle::new(Arc::clone(&head));
    windowed.observe(0, &f[..n * h]);
    assert_eq!(windowed.draft(&all[..=n], 5, Some(target)).len(), 5);
}

#[test]
fn a_package_without_the_head_loads_and_refuses_eagle() {
    let dir = common::scratch("no-head");
    copy_package(&root().join("models/demo"), &dir, false);
    let pkg = load_dir(&dir).expect("the package loads without its draft head");
    assert!(pkg.model.draft_head().is_none());
    let sampler = Sampler::new(SamplingParams::default()).unwrap();
    let opts = GenerateOptions { max_new_tokens: 4, speculative: Speculative::Eagle(DraftLen::Auto), ..Default::default() };
    match generate(&pkg.model, None, &[1, 5, 9], sampler, &opts, |_| true) {
        Err(Error::Unsupported(m)) => assert!(m.contains("no draft head"), "{m}"),
        other => panic!("expected Unsupported, got {:?}", other.map(|r| r.0)),
    }
    // Auto falls back to prompt lookup and equals plain.
    let (plain, _) = run(&pkg.model, &[1, 5, 9, 200], 16, FfnMode::Sparse, Speculative::Off);
    let (auto, _) = run(&pkg.model, &[1, 5, 9, 200], 16, FfnMode::Sparse, Speculative::Auto(DraftLen::Auto));
    assert_eq!(auto, plain);
}

#[test]
fn half_a_head_or_a_head_for_another_model_is_refused() {
    // The manifest lists eagle.json only.
    let dir = common::scratch("half-head");
    copy_package(&root().join("models/demo"), &dir, true);
    let mpath = dir.join("manifest.json");
    let mut manifest: serde_json::Value = read_json(&mpath);
    manifest["files"].as_object_mut().unwrap().remove(EAGLE_WEIGHTS);
    std::fs::write(&mpath, serde_json::to_string(&manifest).unwrap()).unwrap();
    match load_dir(&dir) {
        Err(Error::InvalidCheckpoint(m)) => assert!(m.contains("needs both files"), "{m}"),
        other => panic!("expected InvalidCheckpoint, got ok={}", other.is_ok()),
    }

    // A head whose hidden size is not the model's.
    let (m, _) = demo();
    let json = std::fs::read_to_string(root().join("models/demo").join(EAGLE_CONFIG)).unwrap();
    let mut cfg: serde_json::Value = serde_json::from_str(&json).unwrap();
    cfg["hidden_size"] = 128.into();
    let bytes = std::fs::read(root().join("models/demo").join(EAGLE_WEIGHTS)).unwrap();
    let buf = aligned(&bytes);
    match EagleHead::new(&cfg.to_string(), buf, m.config()) {
        Err(Error::InvalidCheckpoint(msg)) => assert!(msg.contains("another model"), "{msg}"),
        other => panic!("expected InvalidCheckpoint, got ok={}", other.is_ok()),
    }
    // A tensor with the wrong shape (the config claims a wider MLP).
    cfg["hidden_size"] = 256.into();
    cfg["intermediate_size"] = 1024.into();
    match EagleHead::new(&cfg.to_string(), aligned(&bytes), m.config()) {
        Err(Error::InvalidCheckpoint(msg)) => assert!(msg.contains("mlp.gate_proj.weight"), "{msg}"),
        other => panic!("expected InvalidCheckpoint, got ok={}", other.is_ok()),
    }
    // Not JSON.
    assert!(matches!(EagleHead::new("{", aligned(&bytes), m.config()), Err(Error::InvalidCheckpoint(_))));
}

fn aligned(bytes: &[u8]) -> AlignedBuf {
    let mut buf = AlignedBuf::zeroed(bytes.len()).unwrap();
    buf.as_bytes_mut().copy_from_slice(bytes);
    buf
}

/// Copies a package; without the head, its files and manifest entries are left out.
fn copy_package(src: &Path, dst: &Path, with_head: bool) {
    for e in std::fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().into_string().unwrap();
        if !with_head && (name == EAGLE_CONFIG || name == EAGLE_WEIGHTS) {
            continue;
        }
        std::fs::copy(e.path(), dst.join(&name)).unwrap();
    }
    if !with_head {
        let mpath = dst.join("manifest.json");
        let mut manifest = read_json(&mpath);
        let files = manifest["files"].as_object_mut().unwrap();
        files.remove(EAGLE_CONFIG);
        files.remove(EAGLE_WEIGHTS);
        std::fs::write(&mpath, serde_json::to_string(&manifest).unwrap()).unwrap();
    }
}
