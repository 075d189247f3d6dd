//! The one generation loop (`generate::Stepper`): advancing it by verified spans (what speculative
//! decoding will do) gives exactly the tokens of plain stepping; `KvCache::truncate` rolls a
//! cache back to a state equal to never having run the cut tokens; stop strings cut the text.
#![cfg(not(target_arch = "wasm32"))]

mod common;

use blockffn::generate::{generate, FinishReason, GenerateOptions, Stepper};
use blockffn::model::{FfnMode, Logits};
use blockffn::package::load_dir;
use blockffn::sampling::{Sampler, SamplingParams};
use blockffn::tokenizer::Tokenizer;
use common::*;

fn greedy() -> Sampler {
    Sampler::new(SamplingParams::default()).unwrap()
}

fn opts(n: usize, mode: FfnMode) -> GenerateOptions {
    GenerateOptions { max_new_tokens: n, mode, stop_at_eos: false, ..Default::default() }
}

#[test]
fn verified_spans_equal_plain_stepping() {
    for name in FIXTURES {
        let pkg = load_dir(&convert(name, "f32")).unwrap();
        let m = &pkg.model;
        let prompt = [1u32, 5, 9, 14];
        for mode in [FfnMode::Sparse, FfnMode::Dense] {
            let (plain, _, _, _) = generate(m, None, &prompt, greedy(), &opts(24, mode), |_| true).unwrap();
            assert_eq!(plain.len(), 24);

            // An oracle drafter: propose the next k true tokens plus one wrong one, verify them in
            // one span, accept the matching prefix, roll the cache back past the rest.
            let mut st = Stepper::new(m, &prompt, greedy(), &opts(24, mode)).unwrap();
            let first = st.step(m, None).unwrap().unwrap();
            assert_eq!(first, plain[0]);
            let mut k = 1;
            while st.ids().len() < 24 && st.finish_reason().is_none() {
                let done = st.ids().len();
                let mut draft: Vec<u32> = plain[done..(done + k).min(plain.len())].to_vec();
                let wrong = (plain.get(done + draft.len()).copied().unwrap_or(0) + 1) % m.config().vocab_size as u32;
                draft.push(wrong);
                let pos = st.position();
                assert_eq!(pos, st.cache_mut().len());
                let out = m.forward_chunk(st.cache_mut(), &draft, Logits::All).unwrap();
                // Accept while the model's own greedy choice after each token is the next draft token
                // (the draft's first token is checked against the pending logits).
                let argmax = |l: &[f32]| blockffn::sampling::argmax(l) as u32;
                let mut n = 0;
                let mut prev = st.next_logits().unwrap().to_vec();
                while n < draft.len() && argmax(&prev) == draft[n] {
                    prev = out.logits[n].clone();
                    n += 1;
                }
                assert!(n < draft.len(), "the wrong token must be rejected");
                st.cache_mut().truncate(pos + n);
                let mut kept = out.experts.clone();
                kept.truncate(n);
                let taken = st.advance_verified(&draft[..n], &kept, prev, None).unwrap();
                assert_eq!(taken, n.min(24 - done));
                if taken < n {
                    break;
                }
                let p = st.position();
                assert_eq!(st.cache_mut().len(), p, "the cache holds the accepted tokens, the last pending");
                k = k % 5 + 1;
            }
            assert_eq!(st.ids(), &plain[..st.ids().len()], "{name} {mode:?}: spans vs plain");
            assert!(st.ids().len() >= 20, "{name}: {} ids", st.ids().len());
        }
    }
}

#[test]
fn truncated_cache_equals_a_fresh_run() {
    for name in FIXTURES {
        let pkg = load_dir(&convert(name, "f32")).unwrap();
        let m = &pkg.model;
        let ids = [1u32, 7, 3, 22, 9, 4, 11, 2, 8];
        let mut cache = m.new_cache().unwrap();
        m.forward(&mut cache, &ids, FfnMode::Sparse, Logits::None).unwrap();
        cache.truncate(4);
        assert_eq!(cache.len(), 4);
        let again = m.forward(&mut cache, &[30, 31], FfnMode::Sparse, Logits::All).unwrap();
        let mut fresh = m.new_cache().unwrap();
        let want = m.forward(&mut fresh, &[1, 7, 3, 22, 30, 31], FfnMode::Sparse, Logits::All).unwrap();
        assert_eq!(again.logits[..], want.logits[4..], "{name}: truncate then run vs fresh");
        assert_eq!(again.active()[..], want.active()[4..]);
    }
}

#[test]
fn stop_strings_cut_the_text_before_them() {
    let pkg = load_dir(&root().join("models/demo")).unwrap();
    let tok = Tokenizer::from_bytes(pkg.tokenizer_json.as_ref().unwrap(), pkg.model.config().bos_token_id).unwrap();
    let prompt = tok.encode("The history of the").unwrap();
    let (_, r, full, _) = generate(&pkg.model, Some(&tok), &prompt, greedy(), &opts(40, FfnMode::Sparse), |_| true).unwrap();
    assert_eq!(r, FinishReason::Length);
    // A stop string taken from the middle of the plain continuation.
    let at = full.char_indices().nth(full.chars().count() / 2).unwrap().0;
    let stop: String = full[at..].chars().take(3).collect();
    let cut = full.find(&stop).unwrap();
    let o = GenerateOptions { stop_strings: vec![stop.clone()], ..opts(40, FfnMode::Sparse) };
    let mut streamed = String::new();
    let (ids, r, text, _) = generate(&pkg.model, Some(&tok), &prompt, greedy(), &o, |ev| {
        streamed.push_str(ev.text);
        true
    })
    .unwrap();
    assert_eq!(r, FinishReason::Stop);
    assert_eq!(text, &full[..cut], "stop {stop:?}");
    assert!(text.starts_with(&streamed), "streamed text is a prefix of the result");
    assert!(ids.len() < 40);
}
