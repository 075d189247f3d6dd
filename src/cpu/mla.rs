//! Multi-head latent attention for new tokens, with the up-projections absorbed:
//! score_h(t) = (W_kb,hᵀ q_nope,h) · c_t + q_pe,h · k_pe,t   and   o_h = W_vb,h (Σ_t p_t c_t).
//! This is algebraically the reference `softmax(QKᵀ/√d) V` with K/V expanded from the latent, but
//! it reads only the cached latent (kv_lora + rope floats per token).

use crate::config::MlaDims;
use crate::kernels::{axpy_rows, axpy_rows_dense, matmul, matvec, rmsnorm, rope_rotate_half};
use crate::tensor::Mat;
use crate::weights::{TensorInfo, WeightStore};

/// eps of q_a_layernorm / kv_a_layernorm (fixed in the reference code, not from the config).
const MLA_NORM_EPS: f32 = 1e-6;

pub(crate) struct MlaWeights {
    /// `(q_a_proj, q_a_layernorm)` when the query uses the low-rank path.
    pub q_a: Option<(TensorInfo, TensorInfo)>,
    /// `q_b_proj` (low-rank) or `q_proj` (direct).
    pub q_b: TensorInfo,
    pub kv_a: TensorInfo,
    pub kv_a_norm: TensorInfo,
    pub kv_b: TensorInfo,
    pub o: TensorInfo,
}

/// Attention for the k tokens of `xs` (`[k, hidden]`) at positions `pos0..pos0 + k`, appending
/// their latents to the cache. The projections run for all k tokens at once (`matmul`, one read
/// of each weight); the attention itself goes token by token, each seeing the cache up to itself,
/// so the result is the same as k single-token calls. With `tree` (a draft tree, see
/// [`super::tree_visible`]) each token sees the cache before the span and its own ancestors only,
/// at the position of its depth: the same numbers as running its path alone.
#[allow(clippy::too_many_arguments)]
pub(crate) fn forward_span(
    w: &MlaWeights,
    store: &WeightStore,
    d: &MlaDims,
    heads: usize,
    inv_freq: &[f32],
    pos0: usize,
    xs: &[f32],
    latent: &mut Vec<f32>,
    k_pe_cache: &mut Vec<f32>,
    tree: Option<&[u32]>,
    out: &mut [f32],
) {
    let (nope, rope, vdim, r) = (d.qk_nope_head_dim, d.qk_rope_head_dim, d.v_head_dim, d.kv_lora_rank);
    let qhd = nope + rope;
    let k = out.len() / w.o.shape[0];

    // Queries of all k tokens.
    let mut q = vec![0.0; k * heads * qhd];
    match &w.q_a {
        Some((qa, qa_norm)) => {
            let qr = qa.shape[0];
            let mut cq = vec![0.0; k * qr];
            matmul(store.mat(qa), xs, &mut cq);
            let mut cqn = vec![0.0; k * qr];
            for (c, n) in cq.chunks_exact(qr).zip(cqn.chunks_exact_mut(qr)) {
                rmsnorm(c, store.f32s(qa_norm), MLA_NORM_EPS, n);
            }
            matmul(store.mat(&w.q_b), &cqn, &mut q);
        }
        None => matmul(store.mat(&w.q_b), xs, &mut q),
    }
    // Latent KV and the shared rotary key of each token.
    let mut ckv = vec![0.0; k * (r + rope)];
    matmul(store.mat(&w.kv_a), xs, &mut ckv);

    let kv_b = store.mat(&w.kv_b);
    let scale = 1.0 / (qhd as f32).sqrt();
    let mut o = vec![0.0; k * heads * vdim];
    let mut q_abs = vec![0.0; r];
    let mut cbar = vec![0.0; r];
    let mut c = vec![0.0; r];
    let mut visible = Vec::new();
    for i in 0..k {
        let pos = pos0 + tree.map_or(i, |t| super::tree_depth(t, i));
        let ckv_i = &mut ckv[i * (r + rope)..(i + 1) * (r + rope)];
        rmsnorm(&ckv_i[..r], store.f32s(&w.kv_a_norm), MLA_NORM_EPS, &mut c);
        let k_pe = &mut ckv_i[r..];
        rope_rotate_half(k_pe, inv_freq, pos);
        latent.extend_from_slice(&c);
        k_pe_cache.extend_from_slice(k_pe);
        let t_len = pos0 + i + 1;
        let mut scores = vec![0.0; t_len];
        let mut pe_scores = vec![0.0; t_len];
        for h in 0..heads {
            let qh = &mut q[(i * heads + h) * qhd..(i * heads + h + 1) * qhd];
            rope_rotate_half(&mut qh[nope..], inv_freq, pos);
            let rows = h * (nope + vdim);
            // q_abs = W_kb,hᵀ q_nope,h
            q_abs.iter_mut().for_each(|v| *v = 0.0);
            axpy_rows(kv_b.row_range(rows, rows + nope), &qh[..nope], &mut q_abs);
            // Scores against every cached latent and rotary key (two GEMVs over the cache), then
            // the probability-weighted latent sum (an axpy over the cached rows).
            let (cache_c, cache_pe) = (&latent[..t_len * r], &k_pe_cache[..t_len * rope]);
            matvec(Mat::F32 { data: cache_c, rows: t_len, cols: r }, &q_abs, &mut scores);
            matvec(Mat::F32 { data: cache_pe, rows: t_len, cols: rope }, &qh[nope..], &mut pe_scores);
            scores.iter_mut().zip(&pe_scores).for_each(|(s, p)| *s = (*s + p) * scale);
            super::softmax_visible(&mut scores, pos0, i, tree, &mut visible);
            cbar.iter_mut().for_each(|v| *v = 0.0);
            axpy_rows_dense(Mat::F32 { data: cache_c, rows: t_len, cols: r }, &scores, &mut cbar);
            let oh = &mut o[(i * heads + h) * vdim..(i * heads + h + 1) * vdim];
            matvec(kv_b.row_range(rows + nope, rows + nope + vdim), &cbar, oh);
        }
    }
    matmul(store.mat(&w.o), &o, out);
}
