//! Multi-head latent attention for one new token, with the up-projections absorbed:
//! score_h(t) = (W_kb,hᵀ q_nope,h) · c_t + q_pe,h · k_pe,t   and   o_h = W_vb,h (Σ_t p_t c_t).
//! This is algebraically the reference `softmax(QKᵀ/√d) V` with K/V expanded from the latent, but
//! it reads only the cached latent (kv_lora + rope floats per token).

use crate::config::MlaDims;
use crate::kernels::{axpy_rows, dot, matvec, rmsnorm, rope_rotate_half, softmax};
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

#[allow(clippy::too_many_arguments)]
pub(crate) fn forward(
    w: &MlaWeights,
    store: &WeightStore,
    d: &MlaDims,
    heads: usize,
    inv_freq: &[f32],
    pos: usize,
    x: &[f32],
    latent: &mut Vec<f32>,
    k_pe_cache: &mut Vec<f32>,
    out: &mut [f32],
) {
    let (nope, rope, vdim, r) = (d.qk_nope_head_dim, d.qk_rope_head_dim, d.v_head_dim, d.kv_lora_rank);
    let qhd = nope + rope;

    // Query.
    let mut q = vec![0.0; heads * qhd];
    match &w.q_a {
        Some((qa, qa_norm)) => {
            let mut cq = vec![0.0; qa.shape[0]];
            matvec(store.mat(qa), x, &mut cq);
            let mut cqn = vec![0.0; cq.len()];
            rmsnorm(&cq, store.f32s(qa_norm), MLA_NORM_EPS, &mut cqn);
            matvec(store.mat(&w.q_b), &cqn, &mut q);
        }
        None => matvec(store.mat(&w.q_b), x, &mut q),
    }

    // Latent KV and the shared rotary key of this token, appended to the cache.
    let mut ckv = vec![0.0; r + rope];
    matvec(store.mat(&w.kv_a), x, &mut ckv);
    let mut c = vec![0.0; r];
    rmsnorm(&ckv[..r], store.f32s(&w.kv_a_norm), MLA_NORM_EPS, &mut c);
    let k_pe = &mut ckv[r..];
    rope_rotate_half(k_pe, inv_freq, pos);
    latent.extend_from_slice(&c);
    k_pe_cache.extend_from_slice(k_pe);
    let t_len = pos + 1;

    let kv_b = store.mat(&w.kv_b);
    let scale = 1.0 / (qhd as f32).sqrt();
    let mut o = vec![0.0; heads * vdim];
    let mut q_abs = vec![0.0; r];
    let mut scores = vec![0.0; t_len];
    let mut cbar = vec![0.0; r];
    for h in 0..heads {
        let qh = &mut q[h * qhd..(h + 1) * qhd];
        rope_rotate_half(&mut qh[nope..], inv_freq, pos);
        let rows = h * (nope + vdim);
        // q_abs = W_kb,hᵀ q_nope,h
        q_abs.iter_mut().for_each(|v| *v = 0.0);
        axpy_rows(kv_b.row_range(rows, rows + nope), &qh[..nope], &mut q_abs);
        for (t, s) in scores.iter_mut().enumerate() {
            let ct = &latent[t * r..(t + 1) * r];
            let kt = &k_pe_cache[t * rope..(t + 1) * rope];
            *s = (dot(ct, &q_abs) + dot(kt, &qh[nope..])) * scale;
        }
        softmax(&mut scores);
        cbar.iter_mut().for_each(|v| *v = 0.0);
        for (t, &p) in scores.iter().enumerate() {
            for (acc, &cv) in cbar.iter_mut().zip(&latent[t * r..(t + 1) * r]) {
                *acc += p * cv;
            }
        }
        matvec(kv_b.row_range(rows + nope, rows + nope + vdim), &cbar, &mut o[h * vdim..(h + 1) * vdim]);
    }
    matvec(store.mat(&w.o), &o, out);
}
