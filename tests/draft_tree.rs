//! Draft-tree verification (Model::forward_tree_async, SeqCache::keep_path): every node's logits
//! and active experts equal those of its path run alone after the same cache — bit for bit on the
//! demo model (MLA) and every golden fixture (MLA and GQA attention, every FFN type) — and after
//! keeping one path the cache equals a recompute of it. Malformed trees are typed errors.
#![cfg(not(target_arch = "wasm32"))]

mod common;

use blockffn::backend::{Backend, SeqCache};
use blockffn::model::{FfnMode, Logits, Model};
use blockffn::package::load_dir;
use blockffn::ready::ready;
use common::*;

/// A tree of 12 nodes (root 0): a main chain 0-1-2-3-4-5, siblings 6 (of 1), 7 (of 2), 8 (of 3),
/// a branch 9-10 under 6, and 11 under 0.
const PARENTS: [usize; 12] = [0, 0, 1, 2, 3, 4, 0, 1, 2, 6, 9, 0];

fn masks(parents: &[usize]) -> Vec<u32> {
    let mut m = vec![1u32];
    for i in 1..parents.len() {
        m.push(m[parents[i]] | 1 << i);
    }
    m
}

fn path(parents: &[usize], mut i: usize) -> Vec<usize> {
    let mut p = vec![i];
    while i != 0 {
        i = parents[i];
        p.push(i);
    }
    p.reverse();
    p
}

fn check_model<B: Backend>(m: &Model<B>, prompt: &[u32], label: &str) {
    let v = m.config().vocab_size as u32;
    let ids: Vec<u32> = (0..PARENTS.len() as u32).map(|i| (i * 37 + 11) % v).collect();
    let tree = masks(&PARENTS);
    let mut cache = m.new_cache().unwrap();
    m.forward(&mut cache, prompt, FfnMode::Sparse, Logits::None).unwrap();
    let out = ready(m.forward_tree_async(&mut cache, &ids, &tree, FfnMode::Sparse, false)).unwrap();
    assert_eq!(cache.len(), prompt.len() + ids.len());
    for node in 0..ids.len() {
        let p = path(&PARENTS, node);
        let path_ids: Vec<u32> = p.iter().map(|&j| ids[j]).collect();
        let mut c = m.new_cache().unwrap();
        m.forward(&mut c, prompt, FfnMode::Sparse, Logits::None).unwrap();
        let alone = m.forward(&mut c, &path_ids, FfnMode::Sparse, Logits::All).unwrap();
        assert_eq!(out.logits[node], *alone.logits.last().unwrap(), "{label}: node {node} (path {p:?}) logits");
        assert_eq!(out.experts.token(node), alone.experts.token(p.len() - 1), "{label}: node {node} experts");
    }
    // Keep the path to node 10 (0-1... no: 0-6-9-10), then one more token: a recompute's logits.
    let keep = path(&PARENTS, 10);
    assert!(cache.keep_path(prompt.len(), &keep));
    assert_eq!(cache.len(), prompt.len() + keep.len());
    let next = m.forward(&mut cache, &[7], FfnMode::Sparse, Logits::Last).unwrap();
    let mut fresh = m.new_cache().unwrap();
    let all: Vec<u32> = prompt.iter().copied().chain(keep.iter().map(|&j| ids[j])).chain([7]).collect();
    let full = m.forward(&mut fresh, &all, FfnMode::Sparse, Logits::Last).unwrap();
    assert_eq!(next.logits[0], full.logits[0], "{label}: cache after keep_path vs recompute");
}

#[test]
fn tree_nodes_equal_their_paths_run_alone() {
    let demo = load_dir(&root().join("models/demo")).unwrap();
    check_model(&demo.model, &[1, 5, 9, 200, 17, 300], "demo");
    for name in FIXTURES.iter().copied().chain(["mla_topk"]) {
        let pkg = load_dir(&convert(name, "f32")).unwrap();
        check_model(&pkg.model, &[1, 5, 9, 14], name);
    }
}

#[test]
fn malformed_trees_are_typed_errors() {
    let demo = load_dir(&root().join("models/demo")).unwrap();
    let m = &demo.model;
    let bad: [&[u32]; 4] = [&[1, 0b11, 0b101, 0b1000], &[0b11, 0b11], &[1, 0b10], &[1, 0b11, 0b110]];
    for tree in bad.iter().copied().chain([&[1u32, 0b11][..]]) {
        let ids = vec![5u32; if tree.len() == 2 && tree[1] == 0b11 { 3 } else { tree.len() }];
        let mut cache = m.new_cache().unwrap();
        let r = ready(m.forward_tree_async(&mut cache, &ids, tree, FfnMode::Sparse, false));
        assert!(matches!(r, Err(blockffn::Error::InvalidInput(_))), "{tree:?}: {:?}", r.map(|o| o.logits.len()));
        assert_eq!(cache.len(), 0, "a refused tree leaves the cache alone");
    }
}
