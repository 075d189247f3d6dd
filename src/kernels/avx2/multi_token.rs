//! AVX2 multi-token kernels: `matmul` (the prefill GEMM) and the chunk kernels `chunk_up` /
//! `chunk_down`, one row × up to 4 tokens per weight load; numerics in the notes of
//! `kernels::avx2`.

use core::arch::x86_64::*;

use half::{bf16, f16};

use super::rows::{axpy_ids, block_isum, matvec};
use super::{check_mat, enabled, hsum, Wide};
use crate::kernels::scalar;
use crate::tensor::{quantize_q8, Mat, Q8_BLOCK};

/// `ys[t] = W xs[t]` for k tokens (token-major): per token exactly this module's `matvec`.
pub fn matmul(w: Mat, xs: &[f32], ys: &mut [f32]) {
    if !enabled() {
        return scalar::matmul(w, xs, ys);
    }
    let k = scalar::check_matmul(w, xs, ys);
    if k == 0 {
        return;
    }
    if k == 1 {
        return matvec(w, xs, ys); // the same per-row operations, four rows per x load
    }
    check_mat(w);
    let (rows, cols) = (w.rows(), w.cols());
    let qxs = quantize_tokens(w, xs, cols);
    let (mut fast, mut slow) = (Vec::with_capacity(k), Vec::new());
    split_quantized(0..k, &qxs, matches!(w, Mat::Q8 { .. }), &mut fast, &mut slow);
    let out = ys.as_mut_ptr();
    // SAFETY: features present; every row r < rows exists (check_mat); x slices are cols long
    // (check_matmul); token t's output ys[t·rows + r] is in bounds.
    unsafe {
        for r in 0..rows {
            for toks in fast.chunks(TOKENS) {
                row_dot_tokens_avx2(w, r, xs, &qxs, toks, |t| out.add(t * rows + r));
            }
        }
    }
    for &t in &slow {
        matvec(w, &xs[t * cols..(t + 1) * cols], &mut ys[t * rows..(t + 1) * rows]);
    }
}

/// AVX2 twin of [`scalar::chunk_up`]: per token and block, the operations of this module's
/// `matvec` on the block's rows followed by the crate's `silu_scaled`.
pub fn chunk_up(up: Mat, block: usize, union: &[u16], xs: &[f32], scores: &[f32], ne: usize, u: &mut [f32]) {
    if !enabled() {
        return scalar::chunk_up(up, block, union, xs, scores, ne, u);
    }
    let (k, nu) = scalar::check_chunk(up, block, union, xs.len(), u.len(), "chunk_up");
    assert_eq!(scores.len(), k * ne, "chunk_up: scores length");
    assert!(union.iter().all(|&b| (b as usize) < ne), "chunk_up: block id beyond ne");
    check_mat(up);
    let cols = up.cols();
    u.iter_mut().for_each(|v| *v = 0.0);
    let qxs = quantize_tokens(up, xs, cols);
    let is_q8 = matches!(up, Mat::Q8 { .. });
    let (mut fast, mut slow) = (Vec::with_capacity(k), Vec::new());
    for (j, &b) in union.iter().enumerate() {
        let b = b as usize;
        split_quantized((0..k).filter(|&t| scores[t * ne + b] != 0.0), &qxs, is_q8, &mut fast, &mut slow);
        if fast.is_empty() && slow.is_empty() {
            continue;
        }
        let out = u.as_mut_ptr();
        for r in 0..block {
            let wr = b * block + r;
            // SAFETY: row wr lies in block b, inside the matrix (check_chunk, check_mat); each
            // output (t·nu + j)·block + r < k·nu·block = u.len(); q8 fast tokens are quantized.
            unsafe {
                for toks in fast.chunks(TOKENS) {
                    row_dot_tokens_avx2(up, wr, xs, &qxs, toks, |t| out.add((t * nu + j) * block + r));
                }
            }
        }
        for &t in &slow {
            let i = (t * nu + j) * block;
            matvec(up.row_range(b * block, (b + 1) * block), &xs[t * cols..(t + 1) * cols], &mut u[i..i + block]);
        }
        for &t in fast.iter().chain(&slow) {
            let i = (t * nu + j) * block;
            crate::kernels::silu_scaled(&mut u[i..i + block], scores[t * ne + b]);
        }
    }
}

/// AVX2 twin of [`scalar::chunk_down`]: bit-identical to it (and to `axpy_rows` per token).
pub fn chunk_down(down: Mat, block: usize, union: &[u16], u: &[f32], ys: &mut [f32]) {
    if !enabled() {
        return scalar::chunk_down(down, block, union, u, ys);
    }
    let (k, nu) = scalar::check_chunk(down, block, union, ys.len(), u.len(), "chunk_down");
    check_mat(down);
    // SAFETY: features present; shapes checked.
    unsafe { chunk_down_avx2(down, block, union, u, ys, k, nu) }
}

type QuantX = (Vec<i8>, Vec<f32>);

/// Each token's input quantized for the q8 kernels (empty for other types).
fn quantize_tokens(w: Mat, xs: &[f32], cols: usize) -> Vec<Option<QuantX>> {
    match w {
        Mat::Q8 { .. } => xs.chunks_exact(cols).map(quantize_q8).collect(),
        _ => Vec::new(),
    }
}

/// q8 tokens with a non-finite input go one by one (through `matvec`'s exact scalar path).
fn split_quantized(
    toks: impl Iterator<Item = usize>,
    qxs: &[Option<QuantX>],
    is_q8: bool,
    fast: &mut Vec<usize>,
    slow: &mut Vec<usize>,
) {
    fast.clear();
    slow.clear();
    for t in toks {
        if is_q8 && qxs[t].is_none() {
            slow.push(t);
        } else {
            fast.push(t);
        }
    }
}

/// Tokens per weight load in the multi-token kernels (one row × 4 tokens × 2 accumulators = 8 of
/// the 16 ymm registers).
const TOKENS: usize = 4;

/// One row against M tokens: per token exactly the operations of
/// [`rows_dot`](super::rows::rows_dot) for that row.
#[inline(always)]
unsafe fn row_dot_tokens<T: Wide, const M: usize>(rp: *const T, cols: usize, xs: [*const f32; M], out: [*mut f32; M]) {
    let z = _mm256_setzero_ps();
    let mut a0 = [z; M];
    let mut a1 = [z; M];
    let mut j = 0;
    while j + 16 <= cols {
        let (w0, w1) = (T::load8(rp.add(j)), T::load8(rp.add(j + 8)));
        for m in 0..M {
            a0[m] = _mm256_fmadd_ps(w0, _mm256_loadu_ps(xs[m].add(j)), a0[m]);
            a1[m] = _mm256_fmadd_ps(w1, _mm256_loadu_ps(xs[m].add(j + 8)), a1[m]);
        }
        j += 16;
    }
    if j + 8 <= cols {
        let w0 = T::load8(rp.add(j));
        for m in 0..M {
            a0[m] = _mm256_fmadd_ps(w0, _mm256_loadu_ps(xs[m].add(j)), a0[m]);
        }
        j += 8;
    }
    for m in 0..M {
        let mut s = hsum(_mm256_add_ps(a0[m], a1[m]));
        for c in j..cols {
            s += (*rp.add(c)).f32() * *xs[m].add(c);
        }
        *out[m] = s;
    }
}

/// One q8 row against M quantized tokens: per token exactly
/// [`rows_dot_q8`](super::rows::rows_dot_q8)'s operations.
#[inline(always)]
unsafe fn row_dot_q8_tokens<const M: usize>(
    rp: *const i8,
    sp: *const f32,
    nb: usize,
    qx: [*const i8; M],
    sx: [*const f32; M],
    out: [*mut f32; M],
) {
    let mut acc = [_mm256_setzero_ps(); M];
    for b in 0..nb {
        let w = _mm256_loadu_si256(rp.add(b * Q8_BLOCK) as *const __m256i);
        let aw = _mm256_abs_epi8(w);
        let s = *sp.add(b);
        for m in 0..M {
            let x = _mm256_loadu_si256(qx[m].add(b * Q8_BLOCK) as *const __m256i);
            let st = _mm256_set1_ps(s * *sx[m].add(b));
            acc[m] = _mm256_fmadd_ps(st, block_isum(aw, w, x), acc[m]);
        }
    }
    for m in 0..M {
        *out[m] = hsum(acc[m]);
    }
}

/// Row `r` of `w` against the tokens `toks` (at most [`TOKENS`]; for q8 all quantized); token
/// t's result goes to `out(t)`.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn row_dot_tokens_avx2(
    w: Mat,
    r: usize,
    xs: &[f32],
    qxs: &[Option<QuantX>],
    toks: &[usize],
    out: impl Fn(usize) -> *mut f32,
) {
    let cols = w.cols();
    macro_rules! go {
        ($m:literal) => {{
            let o: [*mut f32; $m] = core::array::from_fn(|m| out(toks[m]));
            let x: [*const f32; $m] = core::array::from_fn(|m| xs.as_ptr().add(toks[m] * cols));
            match w {
                Mat::F32 { data, .. } => row_dot_tokens::<f32, $m>(data.as_ptr().add(r * cols), cols, x, o),
                Mat::F16 { data, .. } => row_dot_tokens::<f16, $m>(data.as_ptr().add(r * cols), cols, x, o),
                Mat::BF16 { data, .. } => row_dot_tokens::<bf16, $m>(data.as_ptr().add(r * cols), cols, x, o),
                Mat::Q8 { data, scales, .. } => {
                    let nb = cols / Q8_BLOCK;
                    let quant = |m: usize| qxs[toks[m]].as_ref().expect("caller: q8 tokens are quantized");
                    let qx: [*const i8; $m] = core::array::from_fn(|m| quant(m).0.as_ptr());
                    let sx: [*const f32; $m] = core::array::from_fn(|m| quant(m).1.as_ptr());
                    row_dot_q8_tokens::<$m>(data.as_ptr().add(r * cols), scales.as_ptr().add(r * nb), nb, qx, sx, o)
                }
            }
        }};
    }
    match toks.len() {
        4 => go!(4),
        3 => go!(3),
        2 => go!(2),
        1 => go!(1),
        _ => {}
    }
}

/// Per output element the scalar `chunk_down`'s additions in its order: rows in groups of 4;
/// tokens whose 4 coefficients are all nonzero share each weight load, 4 tokens at a time; the
/// others get their nonzero rows alone.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn chunk_down_avx2(down: Mat, block: usize, union: &[u16], u: &[f32], ys: &mut [f32], k: usize, nu: usize) {
    let cols = down.cols();
    let yp = ys.as_mut_ptr();
    let mut full: Vec<usize> = Vec::with_capacity(k);
    for (j, &b) in union.iter().enumerate() {
        let b = b as usize;
        let mut r = 0;
        while r < block {
            let n = (block - r).min(4);
            let cu = |t: usize| &u[(t * nu + j) * block + r..][..n];
            let base: [usize; 4] = core::array::from_fn(|i| b * block + r + i.min(n - 1));
            full.clear();
            for t in 0..k {
                let c = cu(t);
                if n == 4 && c.iter().all(|&v| v != 0.0) {
                    full.push(t);
                    continue;
                }
                let mut ids = [0usize; 4];
                let mut cs = [0.0f32; 4];
                let mut m = 0;
                for (i, &v) in c.iter().enumerate() {
                    if v != 0.0 {
                        ids[m] = b * block + r + i;
                        cs[m] = v;
                        m += 1;
                    }
                }
                axpy_ids::<1>(down, &ids, m, [cs], [yp.add(t * cols)]);
            }
            let coeffs = |t: usize| -> [f32; 4] { core::array::from_fn(|i| cu(t)[i]) };
            for toks in full.chunks(TOKENS) {
                macro_rules! go {
                    ($m:literal) => {
                        axpy_ids::<$m>(
                            down,
                            &base,
                            4,
                            core::array::from_fn(|m| coeffs(toks[m])),
                            core::array::from_fn(|m| yp.add(toks[m] * cols)),
                        )
                    };
                }
                match toks.len() {
                    4 => go!(4),
                    3 => go!(3),
                    2 => go!(2),
                    _ => go!(1),
                }
            }
            r += n;
        }
    }
}
