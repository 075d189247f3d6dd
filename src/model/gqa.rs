//! Multi-head / grouped-query attention for one new token (the 2.8B model's attention).

use crate::kernels::{dot, matvec, rope_rotate_half, softmax};
use crate::weights::{TensorInfo, WeightStore};

pub(crate) struct GqaWeights {
    pub q: TensorInfo,
    pub k: TensorInfo,
    pub v: TensorInfo,
    pub o: TensorInfo,
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn forward(
    w: &GqaWeights,
    store: &WeightStore,
    heads: usize,
    kv_heads: usize,
    hd: usize,
    inv_freq: &[f32],
    pos: usize,
    x: &[f32],
    k_cache: &mut Vec<f32>,
    v_cache: &mut Vec<f32>,
    out: &mut [f32],
) {
    let mut q = vec![0.0; heads * hd];
    let mut k = vec![0.0; kv_heads * hd];
    let mut v = vec![0.0; kv_heads * hd];
    matvec(store.mat(&w.q), x, &mut q);
    matvec(store.mat(&w.k), x, &mut k);
    matvec(store.mat(&w.v), x, &mut v);
    for h in 0..heads {
        rope_rotate_half(&mut q[h * hd..(h + 1) * hd], inv_freq, pos);
    }
    for h in 0..kv_heads {
        rope_rotate_half(&mut k[h * hd..(h + 1) * hd], inv_freq, pos);
    }
    k_cache.extend_from_slice(&k);
    v_cache.extend_from_slice(&v);
    let t_len = pos + 1;
    let row = kv_heads * hd;
    let group = heads / kv_heads;
    let scale = 1.0 / (hd as f32).sqrt();
    let mut o = vec![0.0; heads * hd];
    let mut scores = vec![0.0; t_len];
    for h in 0..heads {
        let kvh = h / group;
        let qh = &q[h * hd..(h + 1) * hd];
        for (t, s) in scores.iter_mut().enumerate() {
            *s = dot(&k_cache[t * row + kvh * hd..t * row + (kvh + 1) * hd], qh) * scale;
        }
        softmax(&mut scores);
        let oh = &mut o[h * hd..(h + 1) * hd];
        for (t, &p) in scores.iter().enumerate() {
            for (acc, &vv) in oh.iter_mut().zip(&v_cache[t * row + kvh * hd..t * row + (kvh + 1) * hd]) {
                *acc += p * vv;
            }
        }
    }
    matvec(store.mat(&w.o), &o, out);
}
