//! Multi-head / grouped-query attention for new tokens (the 2.8B model's attention).

use crate::kernels::{dot, matmul, rope_rotate_half};
use crate::weights::{TensorInfo, WeightStore};

pub(crate) struct GqaWeights {
    pub q: TensorInfo,
    pub k: TensorInfo,
    pub v: TensorInfo,
    pub o: TensorInfo,
}

/// Attention for the k tokens of `xs` at positions `pos0..pos0 + k`, appending their K/V to the
/// cache: projections for all tokens at once (`matmul`), attention token by token (each sees the
/// cache up to itself), so the result equals k single-token calls; with `tree`, each token sees
/// the cache before the span and its ancestors only (see [`super::mla::forward_span`]).
#[allow(clippy::too_many_arguments)]
pub(crate) fn forward_span(
    w: &GqaWeights,
    store: &WeightStore,
    heads: usize,
    kv_heads: usize,
    hd: usize,
    inv_freq: &[f32],
    pos0: usize,
    xs: &[f32],
    k_cache: &mut Vec<f32>,
    v_cache: &mut Vec<f32>,
    tree: Option<&[u32]>,
    out: &mut [f32],
) {
    let n = out.len() / w.o.shape[0];
    let (qw, kw) = (heads * hd, kv_heads * hd);
    let mut q = vec![0.0; n * qw];
    let mut k = vec![0.0; n * kw];
    let mut v = vec![0.0; n * kw];
    matmul(store.mat(&w.q), xs, &mut q);
    matmul(store.mat(&w.k), xs, &mut k);
    matmul(store.mat(&w.v), xs, &mut v);
    let group = heads / kv_heads;
    let scale = 1.0 / (hd as f32).sqrt();
    let mut o = vec![0.0; n * qw];
    let mut visible = Vec::new();
    for i in 0..n {
        let pos = pos0 + tree.map_or(i, |t| super::tree_depth(t, i));
        let qi = &mut q[i * qw..(i + 1) * qw];
        for h in 0..heads {
            rope_rotate_half(&mut qi[h * hd..(h + 1) * hd], inv_freq, pos);
        }
        let ki = &mut k[i * kw..(i + 1) * kw];
        for h in 0..kv_heads {
            rope_rotate_half(&mut ki[h * hd..(h + 1) * hd], inv_freq, pos);
        }
        k_cache.extend_from_slice(ki);
        v_cache.extend_from_slice(&v[i * kw..(i + 1) * kw]);
        let mut scores = vec![0.0; pos0 + i + 1];
        for h in 0..heads {
            let kvh = h / group;
            let qh = &qi[h * hd..(h + 1) * hd];
            for (t, s) in scores.iter_mut().enumerate() {
                *s = dot(&k_cache[t * kw + kvh * hd..t * kw + (kvh + 1) * hd], qh) * scale;
            }
            super::softmax_visible(&mut scores, pos0, i, tree, &mut visible);
            let oh = &mut o[i * qw + h * hd..i * qw + (h + 1) * hd];
            for (t, &p) in scores.iter().enumerate() {
                for (acc, &vv) in oh.iter_mut().zip(&v_cache[t * kw + kvh * hd..t * kw + (kvh + 1) * hd]) {
                    *acc += p * vv;
                }
            }
        }
    }
    matmul(store.mat(&w.o), &o, out);
}
