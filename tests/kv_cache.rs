//! Incremental decoding with the KV cache equals recomputing every prefix from scratch.
#![cfg(not(target_arch = "wasm32"))]

mod common;

use blockffn::model::{FfnMode, Logits};
use blockffn::package::load_dir;
use common::*;

#[test]
fn incremental_decoding_equals_full_recompute() {
    for name in FIXTURES {
        let exp = expected(name);
        let ids: Vec<u32> = exp["ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
        let pkg = load_dir(&convert(name, "f32")).unwrap();
        let m = &pkg.model;

        // Incremental: prompt in one call, then one token per call on the same cache.
        let split = 5;
        let mut cache = m.new_cache().unwrap();
        let mut inc = m.forward(&mut cache, &ids[..split], FfnMode::Sparse, Logits::All).unwrap().logits;
        for &id in &ids[split..] {
            inc.extend(m.forward(&mut cache, &[id], FfnMode::Sparse, Logits::All).unwrap().logits);
        }
        assert_eq!(cache.len(), ids.len());

        // Full recompute: a fresh cache for every prefix, last position only.
        let mut worst = 0.0f32;
        for t in 1..=ids.len() {
            let mut fresh = m.new_cache().unwrap();
            let full = m.forward(&mut fresh, &ids[..t], FfnMode::Sparse, Logits::Last).unwrap().logits;
            for (a, b) in full[0].iter().zip(&inc[t - 1]) {
                worst = worst.max((a - b).abs());
            }
        }
        println!("{name}: max |incremental - recompute| = {worst:.3e}");
        assert!(worst < 1e-5, "{name}: KV-cache decoding differs from recompute by {worst}");

        // A cleared cache behaves like a new one.
        cache.clear();
        let again = m.forward(&mut cache, &ids, FfnMode::Sparse, Logits::All).unwrap().logits;
        assert_eq!(again, inc);
    }
}

#[test]
fn rejected_request_leaves_cache_untouched() {
    let pkg = load_dir(&convert("mla_block_linear", "f32")).unwrap();
    let m = &pkg.model;
    let mut cache = m.new_cache().unwrap();
    m.forward(&mut cache, &[1, 5, 9], FfnMode::Sparse, Logits::None).unwrap();
    let err = m.forward(&mut cache, &[7, 100_000], FfnMode::Sparse, Logits::Last).unwrap_err();
    assert_eq!(err.code(), "InvalidInput");
    assert_eq!(cache.len(), 3, "a bad request must not half-fill the cache");
}
