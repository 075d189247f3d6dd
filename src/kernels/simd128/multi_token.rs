//! SIMD128 multi-token kernels: `matmul` (the prefill GEMM) and the chunk kernels `chunk_up` /
//! `chunk_down`, several tokens per weight load; numerics in the notes of `kernels::simd128`.

use core::arch::wasm32::*;

use half::{bf16, f16};

use super::activations::silu_scaled;
use super::rows::{axpy_group, axpy_group_q8, matvec, quantize_x, widen_row, QuantX};
use super::{check_len, hsum, ld, load_q16, madd, st, Wide};
use crate::kernels::scalar::{self, check_q8};
use crate::tensor::{Mat, Q8_BLOCK};

// ---------------------------------------------------------------------------------------------
// Chunk kernels (several tokens through the same row blocks; layouts in `kernels::scalar`'s
// multi_token.rs).

/// Each token's input quantized for the q8 kernels (empty for other types).
fn quantize_tokens(w: Mat, xs: &[f32], cols: usize) -> Vec<Option<QuantX>> {
    match w {
        Mat::Q8 { .. } => xs.chunks_exact(cols).map(quantize_x).collect(),
        _ => Vec::new(),
    }
}

/// Checks that the whole matrix is in bounds of its data (f32/f16/bf16 length, q8 scales).
fn check_mat(w: Mat) {
    let (rows, cols) = (w.rows(), w.cols());
    match w {
        Mat::F32 { data, .. } => check_len(data.len(), rows, cols),
        Mat::F16 { data, .. } => check_len(data.len(), rows, cols),
        Mat::BF16 { data, .. } => check_len(data.len(), rows, cols),
        Mat::Q8 { data, scales, .. } => check_q8(data, scales, rows, cols),
    }
}

// Several tokens per weight load. Per (row, token) these do exactly what `rows_dot` /
// `rows_dot_q8q8` / `axpy_group` / `axpy_group_q8` do for one token (same accumulators, same
// order), so they are bit-identical to the per-token kernels; what changes is that each weight
// vector is loaded, and f16/bf16/int8 widened, once for M tokens instead of once per token.

/// Rows per weight load in the multi-token dot kernels, and tokens per pass: 2 accumulators per
/// row and token must stay in registers (x86-64 has 16). One row × 4 tokens measured faster than
/// 2 × 2 and 2 × 3 under V8 (bench/run.mjs chunk rows); the kernels stay generic in N for retuning.
const DOT_ROWS: usize = 1;
const DOT_TOKENS: usize = 4;

/// `*outs[m].add(k) = W[r0 + k, :] · x_m` for N rows and M tokens (x_m at `xs[m]`, `cols` long).
///
/// # Safety
/// Rows `r0..r0+N` exist in the `[_, cols]` matrix `w`; every `xs[m]` points to `cols` readable
/// f32 and every `outs[m]` to N writable ones.
#[inline(always)]
unsafe fn rows_dot_tokens<T: Wide, const N: usize, const M: usize>(
    w: &[T],
    cols: usize,
    r0: usize,
    xs: [*const f32; M],
    outs: [*mut f32; M],
) {
    let rp: [*const T; N] = core::array::from_fn(|k| w.as_ptr().add((r0 + k) * cols));
    let z = f32x4_splat(0.0);
    let mut lo = [[z; M]; N];
    let mut hi = [[z; M]; N];
    let mut j = 0;
    while j + 8 <= cols {
        for k in 0..N {
            let (w0, w1) = T::load8(rp[k].add(j));
            for m in 0..M {
                lo[k][m] = madd(lo[k][m], w0, ld(xs[m].add(j)));
                hi[k][m] = madd(hi[k][m], w1, ld(xs[m].add(j + 4)));
            }
        }
        j += 8;
    }
    if j + 4 <= cols {
        for k in 0..N {
            let w0 = T::load4(rp[k].add(j));
            for m in 0..M {
                lo[k][m] = madd(lo[k][m], w0, ld(xs[m].add(j)));
            }
        }
        j += 4;
    }
    for k in 0..N {
        for m in 0..M {
            let mut s = hsum(f32x4_add(lo[k][m], hi[k][m]));
            for c in j..cols {
                s += (*rp[k].add(c)).f32() * *xs[m].add(c);
            }
            *outs[m].add(k) = s;
        }
    }
}

/// int8 × int8 twin of [`rows_dot_tokens`] (the operations of
/// [`rows_dot_q8q8`](super::rows::rows_dot_q8q8)); `qx[m]` and `sx[m]` are token m's quantized
/// input and block scales.
///
/// # Safety
/// `check_q8(q, scales, r0 + N, cols)` holds; every `qx[m]` points to `cols` i16, every `sx[m]`
/// to `cols / 32` f32 and every `outs[m]` to N writable f32.
#[inline(always)]
unsafe fn rows_dot_q8_tokens<const N: usize, const M: usize>(
    q: &[i8],
    scales: &[f32],
    cols: usize,
    r0: usize,
    qx: [*const i16; M],
    sx: [*const f32; M],
    outs: [*mut f32; M],
) {
    let nb = cols / Q8_BLOCK;
    let rp: [*const i8; N] = core::array::from_fn(|k| q.as_ptr().add((r0 + k) * cols));
    let sp: [*const f32; N] = core::array::from_fn(|k| scales.as_ptr().add((r0 + k) * nb));
    let mut acc = [[f32x4_splat(0.0); M]; N];
    for b in 0..nb {
        let j = b * Q8_BLOCK;
        for k in 0..N {
            let (lo, hi) = (v128_load(rp[k].add(j) as *const v128), v128_load(rp[k].add(j + 16) as *const v128));
            let w = [
                i16x8_extend_low_i8x16(lo),
                i16x8_extend_high_i8x16(lo),
                i16x8_extend_low_i8x16(hi),
                i16x8_extend_high_i8x16(hi),
            ];
            let s = *sp[k].add(b);
            for m in 0..M {
                let xp = qx[m].add(j) as *const v128;
                let d01 = i32x4_add(i32x4_dot_i16x8(w[0], v128_load(xp)), i32x4_dot_i16x8(w[1], v128_load(xp.add(1))));
                let d23 =
                    i32x4_add(i32x4_dot_i16x8(w[2], v128_load(xp.add(2))), i32x4_dot_i16x8(w[3], v128_load(xp.add(3))));
                let st = f32x4_splat(s * *sx[m].add(b));
                acc[k][m] = madd(acc[k][m], st, f32x4_convert_i32x4(i32x4_add(d01, d23)));
            }
        }
    }
    for (k, row) in acc.iter().enumerate() {
        for (m, a) in row.iter().enumerate() {
            *outs[m].add(k) = hsum(*a);
        }
    }
}

/// N rows from `r0` against M tokens with any stored type (q8: every token quantized).
///
/// # Safety
/// As [`rows_dot_tokens`] / [`rows_dot_q8_tokens`]; for q8, `qxs[t]` is `Some` for every token
/// in `toks`. `toks[m]` indexes `xs` (token-major, `cols` each) and `outs[m]` is its output.
#[inline(always)]
unsafe fn rows_dot_tokens_any<const N: usize, const M: usize>(
    w: Mat,
    r0: usize,
    xs: &[f32],
    qxs: &[Option<QuantX>],
    toks: &[usize],
    outs: [*mut f32; M],
) {
    let cols = w.cols();
    let x: [*const f32; M] = core::array::from_fn(|m| xs.as_ptr().add(toks[m] * cols));
    match w {
        Mat::F32 { data, .. } => rows_dot_tokens::<f32, N, M>(data, cols, r0, x, outs),
        Mat::F16 { data, .. } => rows_dot_tokens::<f16, N, M>(data, cols, r0, x, outs),
        Mat::BF16 { data, .. } => rows_dot_tokens::<bf16, N, M>(data, cols, r0, x, outs),
        Mat::Q8 { data, scales, .. } => {
            let quant = |m: usize| qxs[toks[m]].as_ref().expect("caller: q8 tokens are quantized");
            let qx: [*const i16; M] = core::array::from_fn(|m| quant(m).0.as_ptr());
            let sx: [*const f32; M] = core::array::from_fn(|m| quant(m).1.as_ptr());
            rows_dot_q8_tokens::<N, M>(data, scales, cols, r0, qx, sx, outs)
        }
    }
}

/// `n ≤ DOT_ROWS` rows from `r0` against the tokens `toks` (at most [`DOT_TOKENS`]); token m's n
/// results go to `out(toks[m])`.
///
/// # Safety
/// As [`rows_dot_tokens_any`]; `out(t)` points to n writable f32 for each token.
#[inline(always)]
unsafe fn dot_rows_for_tokens(
    w: Mat,
    r0: usize,
    n: usize,
    xs: &[f32],
    qxs: &[Option<QuantX>],
    toks: &[usize],
    out: impl Fn(usize) -> *mut f32,
) {
    macro_rules! go {
        ($n:literal, $m:literal) => {
            rows_dot_tokens_any::<$n, $m>(w, r0, xs, qxs, toks, core::array::from_fn(|m| out(toks[m])))
        };
    }
    debug_assert_eq!(n, DOT_ROWS);
    match toks.len() {
        4 => go!(1, 4),
        3 => go!(1, 3),
        2 => go!(1, 2),
        _ => go!(1, 1),
    }
}

/// f16/bf16 rows `r0..r0+n` widened once into `scratch` (exactly, so the f32 kernels on them give
/// the same bits as the f16/bf16 ones) when `users ≥ 2` tokens will read them: returned as an f32
/// matrix whose row 0 is row r0. Otherwise the matrix itself and `r0`. Widening f16 costs more
/// than a token's multiply-adds, so doing it once per group matters.
fn widened_rows<'a>(w: Mat<'a>, r0: usize, n: usize, users: usize, scratch: &'a mut [f32]) -> (Mat<'a>, usize) {
    let cols = w.cols();
    if users < 2 {
        return (w, r0);
    }
    match w {
        Mat::F16 { data, .. } => {
            for i in 0..n {
                widen_row(&data[(r0 + i) * cols..(r0 + i + 1) * cols], &mut scratch[i * cols..(i + 1) * cols]);
            }
        }
        Mat::BF16 { data, .. } => {
            for i in 0..n {
                widen_row(&data[(r0 + i) * cols..(r0 + i + 1) * cols], &mut scratch[i * cols..(i + 1) * cols]);
            }
        }
        _ => return (w, r0),
    }
    (Mat::F32 { data: &scratch[..n * cols], rows: n, cols }, 0)
}

/// Splits `toks` into those the multi-token kernels take and those that go one by one: q8 tokens
/// with a non-finite input take `matvec`'s exact f32 path.
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

/// SIMD twin of [`scalar::matmul`] (k tokens through one matrix, the prefill GEMM): rows
/// [`DOT_ROWS`] at a time against [`DOT_TOKENS`] tokens per weight load, every token of the block
/// while the rows are in L1. Per token the numerics are exactly this module's `matvec`.
pub fn matmul(w: Mat, xs: &[f32], ys: &mut [f32]) {
    let k = scalar::check_matmul(w, xs, ys);
    check_mat(w);
    let (rows, cols) = (w.rows(), w.cols());
    let qxs = quantize_tokens(w, xs, cols);
    let (mut fast, mut slow) = (Vec::with_capacity(k), Vec::new());
    split_quantized(0..k, &qxs, matches!(w, Mat::Q8 { .. }), &mut fast, &mut slow);
    let mut scratch = vec![0.0f32; DOT_ROWS * cols];
    let mut r = 0;
    while r < rows {
        let n = (rows - r).min(DOT_ROWS);
        let out = ys.as_mut_ptr();
        let (src, r0) = widened_rows(w, r, n, fast.len(), &mut scratch);
        // SAFETY: rows r0..r0+n exist in `src` (the checked matrix, or the n widened rows); x
        // slices are cols long (check_matmul); token t's n outputs are ys[t·rows + r ..][..n],
        // inside ys and disjoint per token.
        unsafe {
            for toks in fast.chunks(DOT_TOKENS) {
                dot_rows_for_tokens(src, r0, n, xs, &qxs, toks, |t| out.add(t * rows + r));
            }
        }
        for &t in &slow {
            matvec(w.row_range(r, r + n), &xs[t * cols..(t + 1) * cols], &mut ys[t * rows + r..t * rows + r + n]);
        }
        r += n;
    }
}

/// SIMD twin of [`scalar::chunk_up`]: for each block of the union, its rows are read
/// [`DOT_ROWS`] at a time and applied to the tokens that use the block, [`DOT_TOKENS`] per pass.
/// Per token and block: the operations of `matvec` and `silu_scaled`, so bit-identical to running
/// this module's kernels token by token.
pub fn chunk_up(up: Mat, block: usize, union: &[u16], xs: &[f32], scores: &[f32], ne: usize, u: &mut [f32]) {
    let (k, nu) = scalar::check_chunk(up, block, union, xs.len(), u.len(), "chunk_up");
    assert_eq!(scores.len(), k * ne, "chunk_up: scores length");
    assert!(union.iter().all(|&b| (b as usize) < ne), "chunk_up: block id beyond ne");
    check_mat(up);
    let cols = up.cols();
    u.iter_mut().for_each(|v| *v = 0.0);
    let qxs = quantize_tokens(up, xs, cols);
    let is_q8 = matches!(up, Mat::Q8 { .. });
    let (mut fast, mut slow) = (Vec::with_capacity(k), Vec::new());
    let mut scratch = vec![0.0f32; DOT_ROWS * cols];
    for (j, &b) in union.iter().enumerate() {
        let b = b as usize;
        split_quantized((0..k).filter(|&t| scores[t * ne + b] != 0.0), &qxs, is_q8, &mut fast, &mut slow);
        if fast.is_empty() && slow.is_empty() {
            continue;
        }
        let mut r = 0;
        while r < block {
            let n = (block - r).min(DOT_ROWS);
            let r0 = b * block + r;
            let at = |t: usize| (t * nu + j) * block + r;
            let out = u.as_mut_ptr();
            let (src, s0) = widened_rows(up, r0, n, fast.len(), &mut scratch);
            // SAFETY: rows r0..r0+n lie in block b, inside the matrix (check_chunk, check_mat),
            // or are the n widened rows; every x slice is cols long; each output pointer
            // addresses n elements of u at `at(t)` < k·nu·block = u.len(), disjoint per token;
            // q8 fast tokens are quantized.
            unsafe {
                for toks in fast.chunks(DOT_TOKENS) {
                    dot_rows_for_tokens(src, s0, n, xs, &qxs, toks, |t| out.add(at(t)));
                }
            }
            for &t in &slow {
                let i = at(t);
                matvec(up.row_range(r0, r0 + n), &xs[t * cols..(t + 1) * cols], &mut u[i..i + n]);
            }
            r += n;
        }
        for &t in fast.iter().chain(&slow) {
            let i = (t * nu + j) * block;
            silu_scaled(&mut u[i..i + block], scores[t * ne + b]);
        }
    }
}

/// `y_m += c[m][0]·W[r0, :] + … + c[m][N−1]·W[r0+N−1, :]` for M tokens, rows in order: each
/// weight vector loaded (widened) once for all M tokens; per token and element the additions of
/// [`axpy_group`], so bit-identical to it.
///
/// # Safety
/// Rows `r0..r0+N` exist in the `[_, cols]` matrix `w`; every `ys[m]` points to `cols` writable
/// f32, the M outputs disjoint.
#[inline(always)]
unsafe fn axpy_rows_tokens<T: Wide, const N: usize, const M: usize>(
    w: &[T],
    cols: usize,
    r0: usize,
    c: [[f32; N]; M],
    ys: [*mut f32; M],
) {
    let rp: [*const T; N] = core::array::from_fn(|k| w.as_ptr().add((r0 + k) * cols));
    let cv: [[v128; N]; M] = core::array::from_fn(|m| core::array::from_fn(|k| f32x4_splat(c[m][k])));
    let mut j = 0;
    while j + 8 <= cols {
        let wv: [(v128, v128); N] = core::array::from_fn(|k| T::load8(rp[k].add(j)));
        for m in 0..M {
            let (mut y0, mut y1) = (ld(ys[m].add(j)), ld(ys[m].add(j + 4)));
            for k in 0..N {
                y0 = madd(y0, cv[m][k], wv[k].0);
                y1 = madd(y1, cv[m][k], wv[k].1);
            }
            st(ys[m].add(j), y0);
            st(ys[m].add(j + 4), y1);
        }
        j += 8;
    }
    if j + 4 <= cols {
        let wv: [v128; N] = core::array::from_fn(|k| T::load4(rp[k].add(j)));
        for m in 0..M {
            let mut y0 = ld(ys[m].add(j));
            for k in 0..N {
                y0 = madd(y0, cv[m][k], wv[k]);
            }
            st(ys[m].add(j), y0);
        }
        j += 4;
    }
    for col in j..cols {
        for m in 0..M {
            let mut v = *ys[m].add(col);
            for k in 0..N {
                v += c[m][k] * (*rp[k].add(col)).f32();
            }
            *ys[m].add(col) = v;
        }
    }
}

/// q8 twin of [`axpy_rows_tokens`] (the operations of [`axpy_group_q8`]).
///
/// # Safety
/// `check_q8` holds for rows `r0..r0+N`; every `ys[m]` points to `cols` writable f32, disjoint.
#[inline(always)]
unsafe fn axpy_rows_q8_tokens<const N: usize, const M: usize>(
    q: &[i8],
    scales: &[f32],
    cols: usize,
    r0: usize,
    c: [[f32; N]; M],
    ys: [*mut f32; M],
) {
    let nb = cols / Q8_BLOCK;
    let rp: [*const i8; N] = core::array::from_fn(|k| q.as_ptr().add((r0 + k) * cols));
    let sp: [*const f32; N] = core::array::from_fn(|k| scales.as_ptr().add((r0 + k) * nb));
    for b in 0..nb {
        let cs: [[v128; N]; M] =
            core::array::from_fn(|m| core::array::from_fn(|k| f32x4_splat(c[m][k] * *sp[k].add(b))));
        for j in [b * Q8_BLOCK, b * Q8_BLOCK + 16] {
            let wv: [[v128; 4]; N] = core::array::from_fn(|k| load_q16(rp[k].add(j)));
            for m in 0..M {
                let yp = ys[m];
                let mut y = [ld(yp.add(j)), ld(yp.add(j + 4)), ld(yp.add(j + 8)), ld(yp.add(j + 12))];
                for k in 0..N {
                    for i in 0..4 {
                        y[i] = madd(y[i], cs[m][k], wv[k][i]);
                    }
                }
                for (i, v) in y.into_iter().enumerate() {
                    st(yp.add(j + 4 * i), v);
                }
            }
        }
    }
}

/// Rows per weight load in the multi-token down kernel (a group of the per-token kernel's size),
/// and tokens per pass.
const AXPY_ROWS: usize = 4;
const AXPY_TOKENS: usize = 4;

/// `N = AXPY_ROWS` rows from `r0` into the tokens `toks` (at most [`AXPY_TOKENS`]), token m with
/// coefficients `coeff(toks[m])` (all nonzero) into `y(toks[m])`.
///
/// # Safety
/// As [`axpy_rows_tokens`] / [`axpy_rows_q8_tokens`].
#[inline(always)]
unsafe fn axpy_rows_for_tokens(
    w: Mat,
    r0: usize,
    toks: &[usize],
    coeff: impl Fn(usize) -> [f32; AXPY_ROWS],
    y: impl Fn(usize) -> *mut f32,
) {
    let cols = w.cols();
    macro_rules! go {
        ($m:literal) => {{
            let c: [[f32; AXPY_ROWS]; $m] = core::array::from_fn(|m| coeff(toks[m]));
            let ys: [*mut f32; $m] = core::array::from_fn(|m| y(toks[m]));
            match w {
                Mat::F32 { data, .. } => axpy_rows_tokens::<f32, AXPY_ROWS, $m>(data, cols, r0, c, ys),
                Mat::F16 { data, .. } => axpy_rows_tokens::<f16, AXPY_ROWS, $m>(data, cols, r0, c, ys),
                Mat::BF16 { data, .. } => axpy_rows_tokens::<bf16, AXPY_ROWS, $m>(data, cols, r0, c, ys),
                Mat::Q8 { data, scales, .. } => axpy_rows_q8_tokens::<AXPY_ROWS, $m>(data, scales, cols, r0, c, ys),
            }
        }};
    }
    match toks.len() {
        4 => go!(4),
        3 => go!(3),
        2 => go!(2),
        _ => go!(1),
    }
}

/// `y += c·rows` for up to four rows (the nonzero ones of a group), in row order.
///
/// # Safety
/// Every row id is a row of `w` (bounds checked by the caller) and `y.len() == cols`.
#[inline(always)]
unsafe fn chunk_axpy(w: Mat, cols: usize, ids: &[usize; 4], cs: &[f32; 4], n: usize, y: &mut [f32]) {
    macro_rules! go {
        ($n:literal) => {{
            let rows: [usize; $n] = core::array::from_fn(|i| ids[i]);
            let c: [f32; $n] = core::array::from_fn(|i| cs[i]);
            match w {
                Mat::F32 { data, .. } => axpy_group::<f32, $n>(data, cols, rows, c, y),
                Mat::F16 { data, .. } => axpy_group::<f16, $n>(data, cols, rows, c, y),
                Mat::BF16 { data, .. } => axpy_group::<bf16, $n>(data, cols, rows, c, y),
                Mat::Q8 { data, scales, .. } => axpy_group_q8::<$n>(data, scales, cols, rows, c, y),
            }
        }};
    }
    match n {
        4 => go!(4),
        3 => go!(3),
        2 => go!(2),
        1 => go!(1),
        _ => {}
    }
}

/// SIMD twin of [`scalar::chunk_down`]: rows in groups of [`AXPY_ROWS`]; the tokens whose
/// coefficients for a group are all nonzero (the usual case: a token that selected an expert)
/// get it [`AXPY_TOKENS`] per weight load, the others one by one with their nonzero rows only. Per
/// output element the additions are the scalar ones in the scalar order: bit-identical to it.
pub fn chunk_down(down: Mat, block: usize, union: &[u16], u: &[f32], ys: &mut [f32]) {
    let (k, nu) = scalar::check_chunk(down, block, union, ys.len(), u.len(), "chunk_down");
    check_mat(down);
    let cols = down.cols();
    let mut full: Vec<usize> = Vec::with_capacity(k);
    let mut scratch = vec![0.0f32; AXPY_ROWS * cols];
    for (j, &b) in union.iter().enumerate() {
        let b = b as usize;
        let mut r = 0;
        while r < block {
            let n = (block - r).min(AXPY_ROWS);
            let cu = |t: usize| &u[(t * nu + j) * block + r..][..n];
            full.clear();
            for t in 0..k {
                let c = cu(t);
                if n == AXPY_ROWS && c.iter().all(|&v| v != 0.0) {
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
                // SAFETY: rows < (b + 1)·block ≤ rows (check_chunk); bounds checked above; the
                // y slice is cols long.
                unsafe { chunk_axpy(down, cols, &ids, &cs, m, &mut ys[t * cols..(t + 1) * cols]) };
            }
            let y_ptr = ys.as_mut_ptr();
            let (src, s0) = widened_rows(down, b * block + r, n, full.len(), &mut scratch);
            // SAFETY: rows b·block + r .. + AXPY_ROWS lie in the matrix (check_chunk, check_mat),
            // or are the widened rows; each token's output is its own cols-long slice of ys
            // (k·cols = ys.len()).
            unsafe {
                for toks in full.chunks(AXPY_TOKENS) {
                    axpy_rows_for_tokens(
                        src,
                        s0,
                        toks,
                        |t| core::array::from_fn(|i| cu(t)[i]),
                        |t| y_ptr.add(t * cols),
                    );
                }
            }
            r += n;
        }
    }
}
