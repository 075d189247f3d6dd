//! The chunk FFN path (`Model::forward_chunk`: layer by layer over a span, each block-FFN layer
//! over the union of the span's active experts) against the per-token sparse forward and the
//! PyTorch reference, for every fixture with a block FFN, in every weight dtype.
#![cfg(not(target_arch = "wasm32"))]

mod common;

use blockffn::model::{FfnMode, Logits, Model};
use blockffn::package::load_dir;
use common::*;

fn ids_of(name: &str) -> Vec<u32> {
    expected(name)["ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect()
}

fn max_diff(a: &[Vec<f32>], b: &[Vec<f32>]) -> f32 {
    assert_eq!(a.len(), b.len(), "row count");
    a.iter().zip(b).flat_map(|(x, y)| x.iter().zip(y).map(|(p, q)| (p - q).abs())).fold(0.0, f32::max)
}

/// Runs `ids` through `forward_chunk` in spans of `size` on one cache; all logits and active sets.
fn chunked(m: &Model, ids: &[u32], size: usize) -> (Vec<Vec<f32>>, Vec<Vec<Vec<u16>>>) {
    let mut cache = m.new_cache().unwrap();
    let (mut logits, mut active) = (Vec::new(), Vec::new());
    for span in ids.chunks(size) {
        let out = m.forward_chunk(&mut cache, span, Logits::All).unwrap();
        assert_eq!(out.logits.len(), span.len());
        assert_eq!(out.active().len(), span.len());
        active.extend(out.active());
        logits.extend(out.logits);
    }
    assert_eq!(cache.len(), ids.len());
    (logits, active)
}

fn block_fixtures() -> impl Iterator<Item = &'static str> {
    FIXTURES.into_iter().filter(|n| !expected(n)["active_experts"].as_array().unwrap().is_empty())
}

#[test]
fn chunked_forward_equals_per_token_sparse_and_reference() {
    let mut n = 0;
    for name in block_fixtures() {
        n += 1;
        let exp = expected(name);
        let ids = ids_of(name);
        let pkg = load_dir(&convert(name, "f32")).unwrap();
        let m = &pkg.model;
        let mut cache = m.new_cache().unwrap();
        let sparse = m.forward(&mut cache, &ids, FfnMode::Sparse, Logits::All).unwrap();
        let reference: Vec<Vec<f32>> =
            floats(&exp["logits"]).iter().map(|r| r.iter().map(|&v| v as f32).collect()).collect();
        for size in [1, 3, 8, ids.len()] {
            let (logits, active) = chunked(m, &ids, size);
            let d = max_diff(&logits, &sparse.logits);
            let r = max_diff(&logits, &reference);
            println!("{name} chunks of {size}: max |chunk - sparse| = {d:.3e}, |chunk - reference| = {r:.3e}");
            assert!(d <= 1e-5, "{name} chunks of {size}: differs from sparse by {d}");
            assert!(r < 1e-4, "{name} chunks of {size}: differs from the reference by {r}");
            assert_eq!(active, sparse.active(), "{name} chunks of {size}: active sets");
        }
        // Active sets in the CLI's JSON shape: [layer][position] in expected.json.
        let layers = exp["active_experts"].as_array().unwrap();
        let (_, active) = chunked(m, &ids, ids.len());
        for (l, layer) in layers.iter().enumerate() {
            for (t, set) in layer.as_array().unwrap().iter().enumerate() {
                let want: Vec<u16> = set.as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u16).collect();
                assert_eq!(active[t][l], want, "{name}: layer {l} position {t} active set vs reference");
            }
        }
    }
    assert!(n >= 4, "expected at least four block-FFN fixtures, got {n}");
}

#[test]
fn cache_continues_after_a_chunked_span() {
    for name in block_fixtures() {
        let ids = ids_of(name);
        let pkg = load_dir(&convert(name, "f32")).unwrap();
        let m = &pkg.model;
        let split = ids.len() - 2;
        // Chunk prefix, then per-token sparse for the rest, vs per-token throughout.
        let mut a = m.new_cache().unwrap();
        m.forward_chunk(&mut a, &ids[..split], Logits::None).unwrap();
        let next = m.forward(&mut a, &ids[split..], FfnMode::Sparse, Logits::All).unwrap().logits;
        let mut b = m.new_cache().unwrap();
        let want = m.forward(&mut b, &ids, FfnMode::Sparse, Logits::All).unwrap().logits;
        let d = max_diff(&next, &want[split..]);
        println!("{name}: next-token logits after a chunked prefix differ by {d:.3e}");
        assert!(d <= 1e-5, "{name}: continuation after a chunked span differs by {d}");
        // Logits::Last returns exactly the last position.
        let mut c = m.new_cache().unwrap();
        let last = m.forward_chunk(&mut c, &ids, Logits::Last).unwrap().logits;
        assert_eq!(last.len(), 1);
        assert!(max_diff(&last, &want[ids.len() - 1..]) <= 1e-5);
    }
}

#[test]
fn chunked_equals_sparse_in_every_dtype() {
    for name in block_fixtures() {
        let ids = ids_of(name);
        for dtype in ["bf16", "f16", "q8"] {
            let pkg = load_dir(&convert(name, dtype)).unwrap();
            let m = &pkg.model;
            let mut cache = m.new_cache().unwrap();
            let sparse = m.forward(&mut cache, &ids, FfnMode::Sparse, Logits::All).unwrap();
            for size in [3, ids.len()] {
                let (logits, active) = chunked(m, &ids, size);
                let d = max_diff(&logits, &sparse.logits);
                println!("{name} {dtype} chunks of {size}: max |chunk - sparse| = {d:.3e}");
                assert!(d <= 1e-5, "{name} {dtype} chunks of {size}: differs from sparse by {d}");
                assert_eq!(active, sparse.active());
            }
        }
    }
}

#[test]
fn bad_ids_are_rejected_before_the_cache_changes() {
    let pkg = load_dir(&convert("mla_block_linear", "f32")).unwrap();
    let m = &pkg.model;
    let mut cache = m.new_cache().unwrap();
    let v = m.config().vocab_size as u32;
    assert!(m.forward_chunk(&mut cache, &[], Logits::All).is_err());
    assert!(m.forward_chunk(&mut cache, &[1, v], Logits::All).is_err());
    let too_long = vec![1u32; m.config().max_position_embeddings + 1];
    assert!(m.forward_chunk(&mut cache, &too_long, Logits::None).is_err());
    assert_eq!(cache.len(), 0);
}
