//! Speculative decoding (src/spec/) against plain decoding: with greedy decoding the output is
//! token for token the plain output — demo model over 60 prompts (continuations, and copy-heavy
//! prompts where prompt lookup drafts well), sparse and dense, adaptive and fixed draft lengths,
//! with and without a repetition penalty — and on every golden fixture; after a speculative run
//! the compacted KV cache equals a full recompute of the accepted path; with sampling the
//! speculative rule keeps the next-token distribution (chi-square against plain sampling).
#![cfg(not(target_arch = "wasm32"))]

mod common;

use blockffn::backend::Backend;
use blockffn::generate::{generate, GenerateOptions, Stepper};
use blockffn::model::{FfnMode, Logits, Model};
use blockffn::package::load_dir;
use blockffn::sampling::{Sampler, SamplingParams};
use blockffn::spec::{DraftLen, SpecTotals, Speculative};
use common::*;

fn demo() -> (Model, Vec<u32>) {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models/demo");
    let pkg = load_dir(&root).expect("demo model");
    let tok = blockffn::tokenizer::Tokenizer::from_bytes(pkg.tokenizer_json.as_deref().expect("tokenizer"), pkg.model.config().bos_token_id)
        .expect("tokenizer");
    let text = std::fs::read_to_string(root.join("validation.txt")).expect("validation text");
    let ids = tok.encode_plain(&text).expect("encode");
    (pkg.model, ids)
}

/// 40 continuation prompts (windows of the validation text, 6 to 60 tokens) and 20 copy-heavy ones
/// (a passage, then its start again: the continuation repeats it, as in a rewrite or a quote).
fn prompts(ids: &[u32]) -> Vec<Vec<u32>> {
    let mut out = Vec::new();
    for i in 0..40 {
        let len = 6 + (i * 7) % 55;
        let start = (i * 997) % (ids.len() - 200);
        out.push([&[1u32][..], &ids[start..start + len]].concat());
    }
    for i in 0..20 {
        let start = (i * 1531 + 50) % (ids.len() - 200);
        let passage = &ids[start..start + 40];
        out.push([&[1u32][..], passage, &passage[..8 + i % 5]].concat());
    }
    out
}

fn opts(n: usize, mode: FfnMode, speculative: Speculative) -> GenerateOptions {
    GenerateOptions { max_new_tokens: n, mode, stop_at_eos: false, speculative, ..Default::default() }
}

fn sampler(penalty: Option<f32>) -> Sampler {
    Sampler::new(SamplingParams { repetition_penalty: penalty, ..Default::default() }).unwrap()
}

fn run<B: Backend>(m: &Model<B>, prompt: &[u32], n: usize, mode: FfnMode, spec: Speculative, penalty: Option<f32>) -> (Vec<u32>, Option<SpecTotals>) {
    run_tree(m, prompt, n, mode, spec, penalty, 0)
}

/// [`run`] with draft trees of `width` alternatives beside each draft token.
fn run_tree<B: Backend>(
    m: &Model<B>,
    prompt: &[u32],
    n: usize,
    mode: FfnMode,
    spec: Speculative,
    penalty: Option<f32>,
    width: usize,
) -> (Vec<u32>, Option<SpecTotals>) {
    let o = GenerateOptions { draft_tree_width: width, ..opts(n, mode, spec) };
    let (ids, _, _, totals) = generate(m, None, prompt, sampler(penalty), &o, |_| true).unwrap();
    (ids, totals)
}

#[test]
fn greedy_speculative_equals_greedy_plain_on_the_demo_model() {
    let (m, ids) = demo();
    let ps = prompts(&ids);
    assert!(ps.len() >= 50);
    let mut all = SpecTotals::default();
    let mut tree_accepted = 0;
    for (i, p) in ps.iter().enumerate() {
        // Sparse for every prompt, both draft-length policies; dense and the penalty on a share.
        let penalty = (i % 4 == 3).then_some(1.15);
        let (plain, _) = run(&m, p, 32, FfnMode::Sparse, Speculative::Off, penalty);
        for len in [DraftLen::Auto, DraftLen::Fixed(5)] {
            let (spec, t) = run(&m, p, 32, FfnMode::Sparse, Speculative::Ngram(len), penalty);
            assert_eq!(spec, plain, "prompt {i} ({len:?}, penalty {penalty:?})");
            let t = t.expect("speculation totals");
            all.verifies += t.verifies;
            all.drafted += t.drafted;
            all.accepted += t.accepted;
        }
        // Draft trees (prompt lookup merges the latest occurrences), adaptive and fixed depth.
        for (len, width) in [(DraftLen::Auto, 2), (DraftLen::Fixed(6), 1)] {
            let (tree, t) = run_tree(&m, p, 32, FfnMode::Sparse, Speculative::Ngram(len), penalty, width);
            assert_eq!(tree, plain, "prompt {i} tree {len:?} width {width} (penalty {penalty:?})");
            tree_accepted += t.expect("totals").accepted;
        }
        if i % 5 == 0 {
            let (dense_plain, _) = run(&m, p, 32, FfnMode::Dense, Speculative::Off, penalty);
            let (dense_spec, _) = run(&m, p, 32, FfnMode::Dense, Speculative::Ngram(DraftLen::Fixed(4)), penalty);
            assert_eq!(dense_spec, dense_plain, "prompt {i} dense");
            assert_eq!(dense_plain, plain, "prompt {i}: dense = sparse");
        }
    }
    // Not vacuous: drafts were verified, and many accepted (the copy-heavy prompts).
    eprintln!("{} verifications, {} drafted, {} accepted; trees: {tree_accepted} accepted", all.verifies, all.drafted, all.accepted);
    assert!(all.verifies > 100 && all.accepted > 200, "{all:?}");
    assert!(tree_accepted > 200, "trees accepted {tree_accepted}");
}

#[test]
fn greedy_speculative_equals_greedy_plain_on_every_fixture() {
    for name in FIXTURES.iter().copied().chain(["mla_topk"]) {
        let pkg = load_dir(&convert(name, "f32")).unwrap();
        let m = &pkg.model;
        // A prompt that repeats, so lookup drafts; and one that does not.
        for prompt in [vec![1u32, 5, 9, 14, 5, 9], vec![1, 20, 3, 77]] {
            for mode in [FfnMode::Sparse, FfnMode::Dense] {
                let (plain, _) = run(m, &prompt, 24, mode, Speculative::Off, None);
                let (spec, _) = run(m, &prompt, 24, mode, Speculative::Ngram(DraftLen::Fixed(6)), None);
                assert_eq!(spec, plain, "{name} {mode:?} {prompt:?}");
                let (tree, _) = run_tree(m, &prompt, 24, mode, Speculative::Ngram(DraftLen::Fixed(6)), None, 2);
                assert_eq!(tree, plain, "{name} {mode:?} {prompt:?} tree");
            }
        }
    }
}

#[test]
fn the_compacted_cache_equals_a_recompute_of_the_accepted_path() {
    let (m, ids) = demo();
    let p = &prompts(&ids)[45]; // copy-heavy: drafts accepted and rejected
    for width in [0, 2] {
        check_compacted_cache(&m, p, width);
    }
}

/// After a speculative run with chains (`width` 0) or trees, the cache is a recompute's.
fn check_compacted_cache(m: &Model, p: &[u32], width: usize) {
    let o = GenerateOptions { draft_tree_width: width, ..opts(40, FfnMode::Sparse, Speculative::Ngram(DraftLen::Fixed(6))) };
    let mut st = Stepper::new(m, p, sampler(None), &o).unwrap();
    while st.step(m, None).unwrap().is_some() {}
    let t = st.spec_totals().unwrap().clone();
    assert!(t.accepted > 0 && t.accepted < t.drafted, "needs accepted and rejected drafts: {t:?}");
    // The cache holds every emitted token (rejected drafts cut off): one more token on it gives
    // the logits of a fresh run over the whole context.
    let ctx = st.context().to_vec();
    assert_eq!(blockffn::backend::SeqCache::len(st.cache_mut()), ctx.len());
    let spec_next = m.forward(st.cache_mut(), &[5], FfnMode::Sparse, Logits::Last).unwrap().logits;
    let mut fresh = m.new_cache().unwrap();
    let full = m.forward(&mut fresh, &[&ctx[..], &[5]].concat(), FfnMode::Sparse, Logits::Last).unwrap().logits;
    let worst = spec_next[0].iter().zip(&full[0]).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    assert!(worst < 1e-4, "cache after speculation (tree width {width}) vs recompute: {worst}");
}

/// Upper 0.1% point of chi-square with `df` degrees of freedom (Wilson–Hilferty).
fn chi2_crit_001(df: f64) -> f64 {
    let z = 3.090;
    df * (1.0 - 2.0 / (9.0 * df) + z * (2.0 / (9.0 * df)).sqrt()).powi(3)
}

/// Two-sample chi-square statistic of counts `a` and `b` (same total), categories with fewer than
/// 10 pooled observations merged; returns (statistic, degrees of freedom).
fn chi2_two_sample(a: &std::collections::BTreeMap<u32, f64>, b: &std::collections::BTreeMap<u32, f64>) -> (f64, f64) {
    let keys: std::collections::BTreeSet<u32> = a.keys().chain(b.keys()).copied().collect();
    let (mut cells, mut rest) = (Vec::new(), (0.0, 0.0));
    for k in keys {
        let (x, y) = (a.get(&k).copied().unwrap_or(0.0), b.get(&k).copied().unwrap_or(0.0));
        if x + y < 10.0 {
            rest = (rest.0 + x, rest.1 + y);
        } else {
            cells.push((x, y));
        }
    }
    if rest.0 + rest.1 > 0.0 {
        cells.push(rest);
    }
    let stat = cells.iter().map(|&(x, y)| (x - y).powi(2) / (x + y)).sum();
    (stat, cells.len() as f64 - 1.0)
}

#[test]
fn speculative_sampling_keeps_the_next_token_distribution() {
    let (m, ids) = demo();
    // A repeating prompt: prompt lookup drafts its continuation, which the model sometimes takes.
    let phrase = &ids[100..112];
    let prompt = [&[1u32][..], phrase, phrase, &phrase[..6]].concat();
    let params = |seed| SamplingParams { temperature: Some(0.6), top_k: Some(20), seed, ..Default::default() };
    let n = 1500u64;
    let gen = |spec: Speculative, seed: u64| {
        let s = Sampler::new(params(seed)).unwrap();
        let (out, _, _, t) = generate(&m, None, &prompt, s, &opts(3, FfnMode::Sparse, spec), |_| true).unwrap();
        (out, t)
    };
    let mut plain = vec![std::collections::BTreeMap::new(); 3];
    let mut spec = vec![std::collections::BTreeMap::new(); 3];
    let (mut accepted, mut drafted) = (0, 0);
    for seed in 0..n {
        let (p, _) = gen(Speculative::Off, seed);
        // Other seeds for the speculative runs: the two samples are independent.
        let (s, t) = gen(Speculative::Ngram(DraftLen::Fixed(3)), seed + 1_000_000);
        let t = t.unwrap();
        accepted += t.accepted;
        drafted += t.drafted;
        for i in 0..3 {
            *plain[i].entry(p[i]).or_insert(0.0) += 1.0;
            *spec[i].entry(s[i]).or_insert(0.0) += 1.0;
        }
    }
    // The test has power: the drafted token is neither certain nor impossible under plain sampling
    // (a rule that always accepted, or never, would move its frequency far).
    let draft1 = phrase[7];
    let f = plain[1].get(&draft1).copied().unwrap_or(0.0) / n as f64;
    eprintln!("drafted {drafted}, accepted {accepted}; plain P(token 2 = draft) = {f:.3}");
    assert!(accepted > 100 && accepted < drafted, "accepted {accepted} of {drafted}");
    for i in 0..3 {
        let (stat, df) = chi2_two_sample(&plain[i], &spec[i]);
        let crit = chi2_crit_001(df.max(1.0));
        eprintln!("token {}: chi2 {stat:.1} on {df} df (0.1% point {crit:.1})", i + 1);
        assert!(stat < crit, "token {}: chi2 {stat} >= {crit} on {df} df", i + 1);
    }
}
