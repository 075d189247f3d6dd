//! The BlockFFN layer for one token: router `RMSNorm(ReLU(W_r x))`, then non-gated experts
//! `W_down,i · (SiLU(W_up,i x) · score_i)` summed over experts.
//!
//! An expert is active iff its ReLU output is > 0 (never decided from the sign of the normalised
//! score: router-norm weights may be negative). Skipping inactive experts is exact, so the sparse
//! path is the default; the dense path computes every expert and is kept for comparison.

use crate::config::{Router, RouterNorm};
use crate::kernels::{axpy_rows, axpy_rows_dense, chunk_down, chunk_up, matmul, matvec, silu_scaled};
use crate::weights::{TensorInfo, WeightStore};

pub(crate) struct BlockFfnWeights {
    pub router: TensorInfo,
    pub router_norm: Option<TensorInfo>,
    /// `[Ne·de, H]`, expert i in rows i·de..(i+1)·de.
    pub up: TensorInfo,
    /// `[Ne·de, H]` (runtime layout: transposed down projection, expert-major rows).
    pub down_t: TensorInfo,
}

pub(crate) struct BlockFfnParams {
    pub experts: usize,
    pub expert_size: usize,
    pub router: Router,
    pub norm_scale: f32,
    pub eps: f32,
}

/// Router scores for one token. Returns the scores (0 for inactive experts) and sets in `mask`
/// (the token's bitmask for this layer, cleared first) the experts whose ReLU output is > 0.
pub(crate) fn route(
    w: &BlockFfnWeights,
    store: &WeightStore,
    p: &BlockFfnParams,
    x: &[f32],
    mask: &mut [u32],
) -> Vec<f32> {
    let mut a = vec![0.0; p.experts];
    matvec(store.mat(&w.router), x, &mut a);
    mask.iter_mut().for_each(|m| *m = 0);
    let norm = match p.router {
        Router::TopK { k } => {
            top_k_softmax(&mut a, k, mask);
            return a;
        }
        Router::Relu(norm) => norm,
    };
    for (e, v) in a.iter_mut().enumerate() {
        if *v > 0.0 {
            mask[e / 32] |= 1 << (e % 32);
        } else {
            *v = 0.0;
        }
    }
    match norm {
        RouterNorm::Rms => {
            let g = store.f32s(w.router_norm.as_ref().expect("rms router has a norm weight"));
            // RMS over all Ne entries, zeros included.
            let ms = a.iter().map(|v| v * v).sum::<f32>() / p.experts as f32;
            let inv = 1.0 / (ms + p.eps).sqrt();
            for (v, &gw) in a.iter_mut().zip(g) {
                *v = *v * inv * gw;
            }
        }
        RouterNorm::Sum => {
            let s: f32 = a.iter().sum();
            let d = s * p.norm_scale + 1e-5;
            a.iter_mut().for_each(|v| *v /= d);
        }
        RouterNorm::None => {}
    }
    a
}

/// TopK baseline: softmax over all logits, keep the k largest (lower id wins ties), zero the rest.
fn top_k_softmax(a: &mut [f32], k: usize, mask: &mut [u32]) {
    crate::kernels::softmax(a);
    let mut order: Vec<u16> = (0..a.len() as u16).collect();
    order.sort_by(|&x, &y| a[y as usize].total_cmp(&a[x as usize]).then(x.cmp(&y)));
    for &e in &order[..k] {
        mask[e as usize / 32] |= 1 << (e % 32);
    }
    for (e, v) in a.iter_mut().enumerate() {
        if mask[e / 32] & (1 << (e % 32)) == 0 {
            *v = 0.0;
        }
    }
}

/// Sparse FFN: only the active experts' up rows and down rows are read.
pub(crate) fn forward_sparse(
    w: &BlockFfnWeights,
    store: &WeightStore,
    p: &BlockFfnParams,
    x: &[f32],
    scores: &[f32],
    active: &[u16],
    out: &mut [f32],
) {
    let de = p.expert_size;
    let (up, down) = (store.mat(&w.up), store.mat(&w.down_t));
    out.iter_mut().for_each(|v| *v = 0.0);
    let mut u = vec![0.0; de];
    for &e in active {
        let (r0, r1) = (e as usize * de, (e as usize + 1) * de);
        matvec(up.row_range(r0, r1), x, &mut u);
        silu_scaled(&mut u, scores[e as usize]);
        axpy_rows(down.row_range(r0, r1), &u, out);
    }
}

/// Dense FFN for the k tokens of `xs` (`[k, H]`, `scores` `[k, Ne]`): every expert is computed
/// and multiplied by its (possibly zero) score; the up projection is one product for all tokens.
pub(crate) fn forward_dense(
    w: &BlockFfnWeights,
    store: &WeightStore,
    p: &BlockFfnParams,
    xs: &[f32],
    scores: &[f32],
    out: &mut [f32],
) {
    let (de, n) = (p.expert_size, p.experts * p.expert_size);
    let k = scores.len() / p.experts;
    let mut u = vec![0.0; k * n];
    matmul(store.mat(&w.up), xs, &mut u);
    out.iter_mut().for_each(|v| *v = 0.0);
    let (down, hsz) = (store.mat(&w.down_t), out.len() / k.max(1));
    for ((ut, sc), y) in u.chunks_exact_mut(n).zip(scores.chunks_exact(p.experts)).zip(out.chunks_exact_mut(hsz)) {
        for (e, block) in ut.chunks_mut(de).enumerate() {
            silu_scaled(block, sc[e]);
        }
        axpy_rows_dense(down, ut, y);
    }
}

/// Chunk FFN for k tokens: `xs` is `k × H`, `scores` `k × Ne` (each token's router output, 0 for
/// inactive experts), `union` the sorted union of their active sets. Every expert of the union has
/// its up rows and down rows read once for all k tokens; a token only gets the experts it
/// selected. Same result as [`forward_sparse`] per token (bit-identical with the same kernels).
pub(crate) fn forward_chunk(
    w: &BlockFfnWeights,
    store: &WeightStore,
    p: &BlockFfnParams,
    xs: &[f32],
    scores: &[f32],
    union: &[u16],
    ys: &mut [f32],
) {
    let de = p.expert_size;
    let k = scores.len() / p.experts;
    let mut u = vec![0.0; k * union.len() * de];
    chunk_up(store.mat(&w.up), de, union, xs, scores, p.experts, &mut u);
    ys.iter_mut().for_each(|v| *v = 0.0);
    chunk_down(store.mat(&w.down_t), de, union, &u, ys);
}
