//! x86-64 AVX2 + FMA (+ F16C) kernels: the same functions, signatures and semantics as
//! [`super::scalar`] / [`super::chunk`], eight f32 lanes at a time. Compiled only on x86-64; each
//! public function is a safe dispatcher that runs the AVX2 body when the CPU has AVX2, FMA and
//! F16C (detected once with `is_x86_feature_detected!`, cached in an atomic) and the scalar twin
//! otherwise. `BLOCKFFN_KERNELS=scalar` in the environment (read once, at the first kernel call)
//! forces the scalar twins, to compare both end to end. tests/avx2_kernels.rs checks every kernel
//! here against its scalar twin.
//!
//! Numerics, compared with the scalar twin:
//! - f16/bf16 → f32 widening is exact (F16C `vcvtph2ps`; bf16 is a 16-bit shift).
//! - `axpy_rows`, `axpy_rows_dense` (all dtypes, q8 included) and `chunk_down` do the scalar
//!   operations (`y + c·w`, resp. `y + (c·scale)·q`, a multiply then an add, rows in order) per
//!   output element: bit-identical to the scalar twin.
//! - `dot` and `matvec` sum with fused multiply-adds in two 8-lane accumulators (columns j..j+8 and
//!   j+8..j+16), then add the lanes: they differ from the sequential scalar sum by rounding only.
//! - q8 `matvec` quantizes x per block exactly as the scalar twin does and multiplies int8 × int8
//!   (`vpmaddubsw` on |w| and sign-adjusted x, then `vpmaddwd`: exact i32 lane sums per block),
//!   scaling each lane's block sum by `scale · sx` with a fused multiply-add: rounding differs from
//!   the scalar twin only. An input with a non-finite value takes the scalar exact path.
//! - `matmul` and `chunk_up` do, per (row, token), exactly the operations of this module's `matvec`
//!   (same accumulators, same order; one row × up to 4 tokens per weight load), so they are
//!   bit-identical to running the tokens one by one; `chunk_up` then applies the crate's
//!   `silu_scaled`, as the per-token path does.
//! - rmsnorm / softmax / silu stay scalar (not visible in a profile next to the matrix kernels).

use core::arch::x86_64::*;
use core::sync::atomic::{AtomicU8, Ordering};

use half::{bf16, f16};

use super::scalar::{self, check_q8, Elem};
use crate::weights::{quantize_q8, Mat, Q8_BLOCK};

// ---------------------------------------------------------------------------------------------
// Dispatch.

static STATE: AtomicU8 = AtomicU8::new(0); // 0 unknown, 1 AVX2 kernels, 2 scalar

/// Whether this CPU has what the AVX2 kernels need (AVX2, FMA, F16C).
pub fn available() -> bool {
    is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") && is_x86_feature_detected!("f16c")
}

/// Whether the AVX2 kernels run: the CPU has them and `BLOCKFFN_KERNELS` is not `scalar`.
#[inline]
pub fn enabled() -> bool {
    match STATE.load(Ordering::Relaxed) {
        1 => true,
        2 => false,
        _ => {
            let forced_scalar = std::env::var("BLOCKFFN_KERNELS").is_ok_and(|v| v.eq_ignore_ascii_case("scalar"));
            let on = !forced_scalar && available();
            STATE.store(if on { 1 } else { 2 }, Ordering::Relaxed);
            on
        }
    }
}

/// Σ w[j]·x[j] with f32 accumulation (lengths as the scalar twin: the shorter one counts).
#[inline]
pub fn dot<T: Elem>(w: &[T], x: &[f32]) -> f32 {
    debug_assert_eq!(w.len(), x.len());
    if !enabled() {
        return scalar::dot(w, x);
    }
    let n = w.len().min(x.len());
    // SAFETY: the CPU has the features (enabled); n ≤ both lengths.
    unsafe {
        match T::mat(w, 1, w.len()) {
            Mat::F32 { data, .. } => dot_avx2(data.as_ptr(), x.as_ptr(), n),
            Mat::F16 { data, .. } => dot_avx2(data.as_ptr(), x.as_ptr(), n),
            Mat::BF16 { data, .. } => dot_avx2(data.as_ptr(), x.as_ptr(), n),
            Mat::Q8 { .. } => unreachable!("i8 is not an Elem: q8 rows need their scales"),
        }
    }
}

/// y = W x for a row-major W `[rows, cols]`.
pub fn matvec(w: Mat, x: &[f32], y: &mut [f32]) {
    if !enabled() {
        return scalar::matvec(w, x, y);
    }
    assert_eq!(x.len(), w.cols(), "matvec: input length");
    assert_eq!(y.len(), w.rows(), "matvec: output length");
    check_mat(w);
    if let Mat::Q8 { .. } = w {
        match quantize_q8(x) {
            // SAFETY: features present; shapes checked above.
            Some((qx, sx)) => unsafe { matvec_q8_avx2(w, &qx, &sx, y) },
            None => scalar::matvec(w, x, y),
        }
        return;
    }
    // SAFETY: features present; the matrix is in bounds (check_mat), x is cols long, y rows long.
    unsafe { matvec_avx2(w, x, y) }
}

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

/// y += Σ_r coeff[r] · W[r, :] (i.e. y += Wᵀ c), skipping zero coefficients.
pub fn axpy_rows(w: Mat, coeff: &[f32], y: &mut [f32]) {
    if !enabled() {
        return scalar::axpy_rows(w, coeff, y);
    }
    assert_eq!(coeff.len(), w.rows(), "axpy_rows: coefficient count");
    assert_eq!(y.len(), w.cols(), "axpy_rows: output length");
    check_mat(w);
    // SAFETY: features present; shapes checked.
    unsafe { axpy_rows_avx2(w, coeff, y, true) }
}

/// Dense twin of [`axpy_rows`]: every row is accumulated, zero coefficients included.
pub fn axpy_rows_dense(w: Mat, coeff: &[f32], y: &mut [f32]) {
    if !enabled() {
        return scalar::axpy_rows_dense(w, coeff, y);
    }
    assert_eq!(coeff.len(), w.rows(), "axpy_rows_dense: coefficient count");
    assert_eq!(y.len(), w.cols(), "axpy_rows_dense: output length");
    check_mat(w);
    // SAFETY: features present; shapes checked.
    unsafe { axpy_rows_avx2(w, coeff, y, false) }
}

/// AVX2 twin of [`super::chunk::chunk_up`]: per token and block, the operations of this module's
/// `matvec` on the block's rows followed by the crate's `silu_scaled`.
pub fn chunk_up(up: Mat, block: usize, union: &[u16], xs: &[f32], scores: &[f32], ne: usize, u: &mut [f32]) {
    if !enabled() {
        return super::chunk::chunk_up(up, block, union, xs, scores, ne, u);
    }
    let (k, nu) = super::chunk::check_chunk(up, block, union, xs.len(), u.len(), "chunk_up");
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
            super::silu_scaled(&mut u[i..i + block], scores[t * ne + b]);
        }
    }
}

/// AVX2 twin of [`super::chunk::chunk_down`]: bit-identical to it (and to `axpy_rows` per token).
pub fn chunk_down(down: Mat, block: usize, union: &[u16], u: &[f32], ys: &mut [f32]) {
    if !enabled() {
        return super::chunk::chunk_down(down, block, union, u, ys);
    }
    let (k, nu) = super::chunk::check_chunk(down, block, union, ys.len(), u.len(), "chunk_down");
    check_mat(down);
    // SAFETY: features present; shapes checked.
    unsafe { chunk_down_avx2(down, block, union, u, ys, k, nu) }
}

// ---------------------------------------------------------------------------------------------
// Shared helpers (scalar code).

/// Checks that the whole matrix is in bounds of its data (f32/f16/bf16 length, q8 scales).
fn check_mat(w: Mat) {
    let (rows, cols) = (w.rows(), w.cols());
    let len_ok = |len: usize| rows.checked_mul(cols).is_some_and(|n| n <= len);
    match w {
        Mat::F32 { data, .. } => assert!(len_ok(data.len()), "matrix data shorter than rows × cols"),
        Mat::F16 { data, .. } => assert!(len_ok(data.len()), "matrix data shorter than rows × cols"),
        Mat::BF16 { data, .. } => assert!(len_ok(data.len()), "matrix data shorter than rows × cols"),
        Mat::Q8 { data, scales, .. } => check_q8(data, scales, rows, cols),
    }
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

// ---------------------------------------------------------------------------------------------
// Loading and widening.

trait Wide: Elem {
    /// `p[0..8]` as f32.
    ///
    /// # Safety
    /// `p..p+8` in bounds; AVX2/F16C available.
    unsafe fn load8(p: *const Self) -> __m256;
}

impl Wide for f32 {
    #[inline(always)]
    unsafe fn load8(p: *const f32) -> __m256 {
        _mm256_loadu_ps(p)
    }
}

impl Wide for f16 {
    #[inline(always)]
    unsafe fn load8(p: *const f16) -> __m256 {
        _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i))
    }
}

impl Wide for bf16 {
    #[inline(always)]
    unsafe fn load8(p: *const bf16) -> __m256 {
        let h = _mm_loadu_si128(p as *const __m128i);
        _mm256_castsi256_ps(_mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(h)))
    }
}

/// Sum of the eight lanes, always in the same order: (lo + hi) then pairs.
#[inline(always)]
unsafe fn hsum(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_shuffle_ps::<0b01>(s, s));
    _mm_cvtss_f32(s)
}

// ---------------------------------------------------------------------------------------------
// dot / matvec (f32, f16, bf16). Per row: two accumulators over 16 columns, one more 8-column
// step into the first, then the lanes summed and the tail added sequentially.

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_avx2<T: Wide>(w: *const T, x: *const f32, n: usize) -> f32 {
    let mut out = 0.0f32;
    rows_dot::<T, 1>([w], n, x, [&mut out as *mut f32]);
    out
}

/// `*out[k] = row_k · x` for N rows (x loaded once for all N).
#[inline(always)]
unsafe fn rows_dot<T: Wide, const N: usize>(rp: [*const T; N], cols: usize, xp: *const f32, out: [*mut f32; N]) {
    let z = _mm256_setzero_ps();
    let mut a0 = [z; N];
    let mut a1 = [z; N];
    let mut j = 0;
    while j + 16 <= cols {
        let (x0, x1) = (_mm256_loadu_ps(xp.add(j)), _mm256_loadu_ps(xp.add(j + 8)));
        for k in 0..N {
            a0[k] = _mm256_fmadd_ps(T::load8(rp[k].add(j)), x0, a0[k]);
            a1[k] = _mm256_fmadd_ps(T::load8(rp[k].add(j + 8)), x1, a1[k]);
        }
        j += 16;
    }
    if j + 8 <= cols {
        let x0 = _mm256_loadu_ps(xp.add(j));
        for k in 0..N {
            a0[k] = _mm256_fmadd_ps(T::load8(rp[k].add(j)), x0, a0[k]);
        }
        j += 8;
    }
    for k in 0..N {
        let mut s = hsum(_mm256_add_ps(a0[k], a1[k]));
        for c in j..cols {
            s += (*rp[k].add(c)).f32() * *xp.add(c);
        }
        *out[k] = s;
    }
}

/// One row against M tokens: per token exactly the operations of [`rows_dot`] for that row.
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

#[inline(always)]
unsafe fn matvec_t<T: Wide>(w: &[T], rows: usize, cols: usize, x: &[f32], y: &mut [f32]) {
    let (wp, xp, yp) = (w.as_ptr(), x.as_ptr(), y.as_mut_ptr());
    let row = |r: usize| wp.add(r * cols);
    let mut r = 0;
    while r + 4 <= rows {
        rows_dot::<T, 4>([row(r), row(r + 1), row(r + 2), row(r + 3)], cols, xp, core::array::from_fn(|k| yp.add(r + k)));
        r += 4;
    }
    while r < rows {
        rows_dot::<T, 1>([row(r)], cols, xp, [yp.add(r)]);
        r += 1;
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn matvec_avx2(w: Mat, x: &[f32], y: &mut [f32]) {
    match w {
        Mat::F32 { data, rows, cols } => matvec_t(data, rows, cols, x, y),
        Mat::F16 { data, rows, cols } => matvec_t(data, rows, cols, x, y),
        Mat::BF16 { data, rows, cols } => matvec_t(data, rows, cols, x, y),
        Mat::Q8 { .. } => unreachable!("q8 goes through matvec_q8_avx2"),
    }
}

// ---------------------------------------------------------------------------------------------
// q8 int8 × int8. Per row: one 8-lane accumulator; per block of 32 the exact i32 lane sums
// (4 products each) times `scale_b · sx_b`, fused-added.

/// The eight exact i32 sums of products of 32 int8 weights (`|w|` and `w`'s signs) with 32 int8
/// inputs: lane i holds Σ of products 4i..4i+4. |w| ≤ 128, |x| ≤ 127: the i16 pairs of
/// `vpmaddubsw` cannot saturate (2 · 128 · 127 < 32767).
#[inline(always)]
unsafe fn block_isum(aw: __m256i, w: __m256i, x: __m256i) -> __m256 {
    let p16 = _mm256_maddubs_epi16(aw, _mm256_sign_epi8(x, w));
    _mm256_cvtepi32_ps(_mm256_madd_epi16(p16, _mm256_set1_epi16(1)))
}

#[inline(always)]
unsafe fn rows_dot_q8<const N: usize>(
    rp: [*const i8; N],
    sp: [*const f32; N],
    nb: usize,
    qx: *const i8,
    sx: *const f32,
    out: [*mut f32; N],
) {
    let mut acc = [_mm256_setzero_ps(); N];
    for b in 0..nb {
        let x = _mm256_loadu_si256(qx.add(b * Q8_BLOCK) as *const __m256i);
        let t = *sx.add(b);
        for k in 0..N {
            let w = _mm256_loadu_si256(rp[k].add(b * Q8_BLOCK) as *const __m256i);
            let st = _mm256_set1_ps(*sp[k].add(b) * t);
            acc[k] = _mm256_fmadd_ps(st, block_isum(_mm256_abs_epi8(w), w, x), acc[k]);
        }
    }
    for k in 0..N {
        *out[k] = hsum(acc[k]);
    }
}

/// One q8 row against M quantized tokens: per token exactly [`rows_dot_q8`]'s operations.
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

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn matvec_q8_avx2(w: Mat, qx: &[i8], sx: &[f32], y: &mut [f32]) {
    let Mat::Q8 { data, scales, rows, cols } = w else { unreachable!() };
    let nb = cols / Q8_BLOCK;
    let (qp, sp, yp) = (data.as_ptr(), scales.as_ptr(), y.as_mut_ptr());
    let (row, srow) = (|r: usize| qp.add(r * cols), |r: usize| sp.add(r * nb));
    let mut r = 0;
    while r + 4 <= rows {
        rows_dot_q8::<4>(
            [row(r), row(r + 1), row(r + 2), row(r + 3)],
            [srow(r), srow(r + 1), srow(r + 2), srow(r + 3)],
            nb,
            qx.as_ptr(),
            sx.as_ptr(),
            core::array::from_fn(|k| yp.add(r + k)),
        );
        r += 4;
    }
    while r < rows {
        rows_dot_q8::<1>([row(r)], [srow(r)], nb, qx.as_ptr(), sx.as_ptr(), [yp.add(r)]);
        r += 1;
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

// ---------------------------------------------------------------------------------------------
// Row accumulation: y += c·W[r, :], a multiply then an add per element, rows in order (the scalar
// operations exactly). Groups of up to 4 rows per pass over y.

/// `y_m += c[m][0]·row_0 + … + c[m][N−1]·row_{N−1}` (left to right) for M outputs; each weight
/// vector loaded once for all M.
#[inline(always)]
unsafe fn axpy_rows_tokens<T: Wide, const N: usize, const M: usize>(
    rp: [*const T; N],
    cols: usize,
    c: [[f32; N]; M],
    ys: [*mut f32; M],
) {
    let cv: [[__m256; N]; M] = core::array::from_fn(|m| core::array::from_fn(|k| _mm256_set1_ps(c[m][k])));
    let mut j = 0;
    while j + 8 <= cols {
        let wv: [__m256; N] = core::array::from_fn(|k| T::load8(rp[k].add(j)));
        for m in 0..M {
            let mut y = _mm256_loadu_ps(ys[m].add(j));
            for k in 0..N {
                y = _mm256_add_ps(y, _mm256_mul_ps(cv[m][k], wv[k]));
            }
            _mm256_storeu_ps(ys[m].add(j), y);
        }
        j += 8;
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

/// Eight int8 values as f32 (exact).
#[inline(always)]
unsafe fn load_q8x8(p: *const i8) -> __m256 {
    _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(p as *const __m128i)))
}

/// q8 twin of [`axpy_rows_tokens`]: `y_m += (c[m][k] · scale_k,b) · q_k` per block, rows in order.
#[inline(always)]
unsafe fn axpy_rows_q8_tokens<const N: usize, const M: usize>(
    rp: [*const i8; N],
    sp: [*const f32; N],
    nb: usize,
    c: [[f32; N]; M],
    ys: [*mut f32; M],
) {
    for b in 0..nb {
        let cs: [[__m256; N]; M] =
            core::array::from_fn(|m| core::array::from_fn(|k| _mm256_set1_ps(c[m][k] * *sp[k].add(b))));
        for j in (b * Q8_BLOCK..(b + 1) * Q8_BLOCK).step_by(8) {
            let wv: [__m256; N] = core::array::from_fn(|k| load_q8x8(rp[k].add(j)));
            for m in 0..M {
                let mut y = _mm256_loadu_ps(ys[m].add(j));
                for k in 0..N {
                    y = _mm256_add_ps(y, _mm256_mul_ps(cs[m][k], wv[k]));
                }
                _mm256_storeu_ps(ys[m].add(j), y);
            }
        }
    }
}

/// Rows `ids[..n]` (n ≤ 4) with coefficients `cs[m]` into the M outputs `ys`.
#[inline(always)]
unsafe fn axpy_ids<const M: usize>(w: Mat, ids: &[usize; 4], n: usize, cs: [[f32; 4]; M], ys: [*mut f32; M]) {
    let cols = w.cols();
    macro_rules! go {
        ($n:literal) => {{
            let c: [[f32; $n]; M] = core::array::from_fn(|m| core::array::from_fn(|i| cs[m][i]));
            match w {
                Mat::F32 { data, .. } => {
                    axpy_rows_tokens::<f32, $n, M>(core::array::from_fn(|i| data.as_ptr().add(ids[i] * cols)), cols, c, ys)
                }
                Mat::F16 { data, .. } => {
                    axpy_rows_tokens::<f16, $n, M>(core::array::from_fn(|i| data.as_ptr().add(ids[i] * cols)), cols, c, ys)
                }
                Mat::BF16 { data, .. } => axpy_rows_tokens::<bf16, $n, M>(
                    core::array::from_fn(|i| data.as_ptr().add(ids[i] * cols)),
                    cols,
                    c,
                    ys,
                ),
                Mat::Q8 { data, scales, .. } => {
                    let nb = cols / Q8_BLOCK;
                    axpy_rows_q8_tokens::<$n, M>(
                        core::array::from_fn(|i| data.as_ptr().add(ids[i] * cols)),
                        core::array::from_fn(|i| scales.as_ptr().add(ids[i] * nb)),
                        nb,
                        c,
                        ys,
                    )
                }
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

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn axpy_rows_avx2(w: Mat, coeff: &[f32], y: &mut [f32], skip_zero: bool) {
    let yp = y.as_mut_ptr();
    let mut ids = [0usize; 4];
    let mut cs = [0.0f32; 4];
    let mut n = 0;
    for (r, &c) in coeff.iter().enumerate() {
        if skip_zero && c == 0.0 {
            continue;
        }
        ids[n] = r;
        cs[n] = c;
        n += 1;
        if n == 4 {
            axpy_ids::<1>(w, &ids, 4, [cs], [yp]);
            n = 0;
        }
    }
    axpy_ids::<1>(w, &ids, n, [cs], [yp]);
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
