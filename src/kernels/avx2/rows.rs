//! AVX2 row kernels: `dot`, `matvec`, `axpy_rows`, `axpy_rows_dense` (every dtype, q8 included);
//! numerics in the notes of `kernels::avx2`.

use core::arch::x86_64::*;

use half::{bf16, f16};

use super::{check_mat, enabled, hsum, Wide};
use crate::kernels::scalar::{self, Elem};
use crate::tensor::{quantize_q8, Mat, Q8_BLOCK};

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
pub(super) unsafe fn rows_dot<T: Wide, const N: usize>(
    rp: [*const T; N],
    cols: usize,
    xp: *const f32,
    out: [*mut f32; N],
) {
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

#[inline(always)]
unsafe fn matvec_t<T: Wide>(w: &[T], rows: usize, cols: usize, x: &[f32], y: &mut [f32]) {
    let (wp, xp, yp) = (w.as_ptr(), x.as_ptr(), y.as_mut_ptr());
    let row = |r: usize| wp.add(r * cols);
    let mut r = 0;
    while r + 4 <= rows {
        rows_dot::<T, 4>(
            [row(r), row(r + 1), row(r + 2), row(r + 3)],
            cols,
            xp,
            core::array::from_fn(|k| yp.add(r + k)),
        );
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
pub(super) unsafe fn block_isum(aw: __m256i, w: __m256i, x: __m256i) -> __m256 {
    let p16 = _mm256_maddubs_epi16(aw, _mm256_sign_epi8(x, w));
    _mm256_cvtepi32_ps(_mm256_madd_epi16(p16, _mm256_set1_epi16(1)))
}

#[inline(always)]
pub(super) unsafe fn rows_dot_q8<const N: usize>(
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
pub(super) unsafe fn axpy_ids<const M: usize>(
    w: Mat,
    ids: &[usize; 4],
    n: usize,
    cs: [[f32; 4]; M],
    ys: [*mut f32; M],
) {
    let cols = w.cols();
    macro_rules! go {
        ($n:literal) => {{
            let c: [[f32; $n]; M] = core::array::from_fn(|m| core::array::from_fn(|i| cs[m][i]));
            match w {
                Mat::F32 { data, .. } => axpy_rows_tokens::<f32, $n, M>(
                    core::array::from_fn(|i| data.as_ptr().add(ids[i] * cols)),
                    cols,
                    c,
                    ys,
                ),
                Mat::F16 { data, .. } => axpy_rows_tokens::<f16, $n, M>(
                    core::array::from_fn(|i| data.as_ptr().add(ids[i] * cols)),
                    cols,
                    c,
                    ys,
                ),
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
