//! SIMD128 row kernels: `dot`, `matvec`, `axpy_rows`, `axpy_rows_dense`, `row_to_f32` (every
//! dtype, q8 included); numerics in the notes of `kernels::simd128`.

use core::arch::wasm32::*;

use super::{check_len, hsum, ld, load_q16, madd, st, Wide};
use crate::kernels::scalar::{check_q8, Elem};
use crate::tensor::{quantize_q8, Mat, Q8_BLOCK};

// ---------------------------------------------------------------------------------------------
// dot and matvec.

fn dot_t<T: Wide>(w: &[T], x: &[f32]) -> f32 {
    let n = w.len().min(x.len());
    let (wp, xp) = (w.as_ptr(), x.as_ptr());
    let z = f32x4_splat(0.0);
    let (mut a0, mut a1, mut a2, mut a3) = (z, z, z, z);
    let mut i = 0;
    // SAFETY: every access below is at indices < n ≤ both lengths.
    unsafe {
        while i + 16 <= n {
            let (w0, w1) = T::load8(wp.add(i));
            let (w2, w3) = T::load8(wp.add(i + 8));
            a0 = madd(a0, w0, ld(xp.add(i)));
            a1 = madd(a1, w1, ld(xp.add(i + 4)));
            a2 = madd(a2, w2, ld(xp.add(i + 8)));
            a3 = madd(a3, w3, ld(xp.add(i + 12)));
            i += 16;
        }
        if i + 8 <= n {
            let (w0, w1) = T::load8(wp.add(i));
            a0 = madd(a0, w0, ld(xp.add(i)));
            a1 = madd(a1, w1, ld(xp.add(i + 4)));
            i += 8;
        }
        if i + 4 <= n {
            a2 = madd(a2, T::load4(wp.add(i)), ld(xp.add(i)));
            i += 4;
        }
    }
    let mut s = hsum(f32x4_add(f32x4_add(a0, a1), f32x4_add(a2, a3)));
    for j in i..n {
        s += w[j].f32() * x[j];
    }
    s
}

/// Σ w[j]·x[j] with f32 accumulation (lengths as the scalar twin: the shorter one counts).
#[inline]
pub fn dot<T: Elem>(w: &[T], x: &[f32]) -> f32 {
    debug_assert_eq!(w.len(), x.len());
    match T::mat(w, 1, w.len()) {
        Mat::F32 { data, .. } => dot_t(data, x),
        Mat::F16 { data, .. } => dot_t(data, x),
        Mat::BF16 { data, .. } => dot_t(data, x),
        Mat::Q8 { .. } => unreachable!("i8 is not an Elem: q8 rows need their scales"),
    }
}

/// `out[r] = W[r0 + r, :] · x` for N consecutive rows, reading x once for all N rows; two
/// accumulators per row (columns j..j+4 and j+4..j+8).
///
/// # Safety
/// `w` must hold at least `(r0 + N) · cols` elements and `x` `cols`.
#[inline(always)]
pub(super) unsafe fn rows_dot<T: Wide, const N: usize>(w: &[T], cols: usize, r0: usize, x: &[f32], out: &mut [f32]) {
    let xp = x.as_ptr();
    let rp: [*const T; N] = core::array::from_fn(|k| w.as_ptr().add((r0 + k) * cols));
    let mut lo = [f32x4_splat(0.0); N];
    let mut hi = [f32x4_splat(0.0); N];
    let mut j = 0;
    while j + 8 <= cols {
        let (x0, x1) = (ld(xp.add(j)), ld(xp.add(j + 4)));
        for k in 0..N {
            let (w0, w1) = T::load8(rp[k].add(j));
            lo[k] = madd(lo[k], w0, x0);
            hi[k] = madd(hi[k], w1, x1);
        }
        j += 8;
    }
    if j + 4 <= cols {
        let x0 = ld(xp.add(j));
        for k in 0..N {
            lo[k] = madd(lo[k], T::load4(rp[k].add(j)), x0);
        }
        j += 4;
    }
    for k in 0..N {
        let mut s = hsum(f32x4_add(lo[k], hi[k]));
        for c in j..cols {
            s += (*rp[k].add(c)).f32() * *xp.add(c);
        }
        out[k] = s;
    }
}

fn matvec_t<T: Wide>(w: &[T], rows: usize, cols: usize, x: &[f32], y: &mut [f32]) {
    check_len(w.len(), rows, cols);
    let mut r = 0;
    // SAFETY: rows·cols ≤ w.len() (checked above); x.len() == cols and y.len() == rows (caller).
    unsafe {
        while r + 4 <= rows {
            rows_dot::<T, 4>(w, cols, r, x, &mut y[r..r + 4]);
            r += 4;
        }
        match rows - r {
            3 => rows_dot::<T, 3>(w, cols, r, x, &mut y[r..]),
            2 => rows_dot::<T, 2>(w, cols, r, x, &mut y[r..]),
            1 => rows_dot::<T, 1>(w, cols, r, x, &mut y[r..]),
            _ => {}
        }
    }
}
/// q8 twin of [`rows_dot`]: for each block, the 32 products of each of N rows are summed in one
/// four-lane block accumulator (x read once for all N rows), which is then scaled and added to
/// the row's accumulator; lanes are summed at the end.
///
/// # Safety
/// `check_q8(q, scales, r0 + N, cols)` must hold and `x.len() == cols`.
#[inline(always)]
unsafe fn rows_dot_q8<const N: usize>(q: &[i8], scales: &[f32], cols: usize, r0: usize, x: &[f32], out: &mut [f32]) {
    let nb = cols / Q8_BLOCK;
    let xp = x.as_ptr();
    let rp: [*const i8; N] = core::array::from_fn(|k| q.as_ptr().add((r0 + k) * cols));
    let sp: [*const f32; N] = core::array::from_fn(|k| scales.as_ptr().add((r0 + k) * nb));
    let mut acc = [f32x4_splat(0.0); N];
    for b in 0..nb {
        let j = b * Q8_BLOCK;
        let mut bacc = [f32x4_splat(0.0); N];
        for half in [j, j + 16] {
            let xs = [ld(xp.add(half)), ld(xp.add(half + 4)), ld(xp.add(half + 8)), ld(xp.add(half + 12))];
            for k in 0..N {
                let w = load_q16(rp[k].add(half));
                let p01 = f32x4_add(f32x4_mul(w[0], xs[0]), f32x4_mul(w[1], xs[1]));
                let p23 = f32x4_add(f32x4_mul(w[2], xs[2]), f32x4_mul(w[3], xs[3]));
                bacc[k] = f32x4_add(bacc[k], f32x4_add(p01, p23));
            }
        }
        for k in 0..N {
            acc[k] = madd(acc[k], f32x4_splat(*sp[k].add(b)), bacc[k]);
        }
    }
    for k in 0..N {
        out[k] = hsum(acc[k]);
    }
}

/// An input vector quantized like the weights (per block of 32, [`crate::tensor::quantize_q8`]),
/// widened to i16 for `i32x4.dot_i16x8_s`: `(qx, sx)`. `None` when x has a non-finite value.
pub(crate) type QuantX = (Vec<i16>, Vec<f32>);

pub(super) fn quantize_x(x: &[f32]) -> Option<QuantX> {
    let (q, s) = quantize_q8(x)?;
    Some((q.into_iter().map(i16::from).collect(), s))
}

/// int8 × int8 twin of [`rows_dot_q8`] (see `kernels::scalar`'s notes): per block, each lane sums
/// eight products exactly in i32 (`dot_i16x8`), converted (exactly) to f32 and scaled by
/// `scale_b · sx_b` into the row's accumulator; lanes are summed at the end. Differs from the
/// scalar twin (which adds whole-block sums in order) by f32 rounding only.
///
/// # Safety
/// `check_q8(q, scales, r0 + N, cols)` must hold, `qx.len() == cols`, `sx.len() == cols / 32`.
#[inline(always)]
pub(super) unsafe fn rows_dot_q8q8<const N: usize>(
    q: &[i8],
    scales: &[f32],
    cols: usize,
    r0: usize,
    qx: &[i16],
    sx: &[f32],
    out: &mut [f32],
) {
    let nb = cols / Q8_BLOCK;
    let xp = qx.as_ptr() as *const v128;
    let rp: [*const i8; N] = core::array::from_fn(|k| q.as_ptr().add((r0 + k) * cols));
    let sp: [*const f32; N] = core::array::from_fn(|k| scales.as_ptr().add((r0 + k) * nb));
    let mut acc = [f32x4_splat(0.0); N];
    for b in 0..nb {
        let j = b * Q8_BLOCK;
        let xs = [
            v128_load(xp.add(j / 8)),
            v128_load(xp.add(j / 8 + 1)),
            v128_load(xp.add(j / 8 + 2)),
            v128_load(xp.add(j / 8 + 3)),
        ];
        let t = *sx.get_unchecked(b);
        for k in 0..N {
            let (lo, hi) = (v128_load(rp[k].add(j) as *const v128), v128_load(rp[k].add(j + 16) as *const v128));
            let d01 = i32x4_add(
                i32x4_dot_i16x8(i16x8_extend_low_i8x16(lo), xs[0]),
                i32x4_dot_i16x8(i16x8_extend_high_i8x16(lo), xs[1]),
            );
            let d23 = i32x4_add(
                i32x4_dot_i16x8(i16x8_extend_low_i8x16(hi), xs[2]),
                i32x4_dot_i16x8(i16x8_extend_high_i8x16(hi), xs[3]),
            );
            let st = f32x4_splat(*sp[k].add(b) * t);
            acc[k] = madd(acc[k], st, f32x4_convert_i32x4(i32x4_add(d01, d23)));
        }
    }
    for k in 0..N {
        out[k] = hsum(acc[k]);
    }
}

/// q8 rows `r0..r0+N` against x: int8 × int8 when x was quantized, else the exact f32 path.
///
/// # Safety
/// As [`rows_dot_q8`]; `qx`, when given, is x quantized by [`quantize_x`].
#[inline(always)]
unsafe fn rows_dot_q8x<const N: usize>(
    q: &[i8],
    scales: &[f32],
    cols: usize,
    r0: usize,
    x: &[f32],
    qx: Option<&QuantX>,
    out: &mut [f32],
) {
    match qx {
        Some((xq, sx)) => rows_dot_q8q8::<N>(q, scales, cols, r0, xq, sx, out),
        None => rows_dot_q8::<N>(q, scales, cols, r0, x, out),
    }
}

fn matvec_q8(q: &[i8], scales: &[f32], rows: usize, cols: usize, x: &[f32], y: &mut [f32]) {
    check_q8(q, scales, rows, cols);
    let qx = quantize_x(x);
    let qx = qx.as_ref();
    let mut r = 0;
    // SAFETY: check_q8 holds for all `rows`; x.len() == cols and y.len() == rows (caller).
    unsafe {
        while r + 4 <= rows {
            rows_dot_q8x::<4>(q, scales, cols, r, x, qx, &mut y[r..r + 4]);
            r += 4;
        }
        match rows - r {
            3 => rows_dot_q8x::<3>(q, scales, cols, r, x, qx, &mut y[r..]),
            2 => rows_dot_q8x::<2>(q, scales, cols, r, x, qx, &mut y[r..]),
            1 => rows_dot_q8x::<1>(q, scales, cols, r, x, qx, &mut y[r..]),
            _ => {}
        }
    }
}

/// y = W x for a row-major W `[rows, cols]`.
pub fn matvec(w: Mat, x: &[f32], y: &mut [f32]) {
    assert_eq!(x.len(), w.cols(), "matvec: input length");
    assert_eq!(y.len(), w.rows(), "matvec: output length");
    match w {
        Mat::F32 { data, rows, cols } => matvec_t(data, rows, cols, x, y),
        Mat::F16 { data, rows, cols } => matvec_t(data, rows, cols, x, y),
        Mat::BF16 { data, rows, cols } => matvec_t(data, rows, cols, x, y),
        Mat::Q8 { data, scales, rows, cols } => matvec_q8(data, scales, rows, cols, x, y),
    }
}

// ---------------------------------------------------------------------------------------------
// Row accumulation (y += Wᵀ c).

/// `y += c[0]·W[rows[0], :]`, then `+= c[1]·W[rows[1], :]`, … for N rows in one pass over y.
/// Per element the additions happen in the scalar order, so the result is bit-identical to it.
///
/// # Safety
/// Every `rows[k]` must be a row of the `[_, cols]` matrix `w`, and `y.len() == cols`.
#[inline(always)]
pub(super) unsafe fn axpy_group<T: Wide, const N: usize>(
    w: &[T],
    cols: usize,
    rows: [usize; N],
    c: [f32; N],
    y: &mut [f32],
) {
    let rp: [*const T; N] = core::array::from_fn(|k| w.as_ptr().add(rows[k] * cols));
    let cv: [v128; N] = core::array::from_fn(|k| f32x4_splat(c[k]));
    let yp = y.as_mut_ptr();
    let mut j = 0;
    while j + 8 <= cols {
        let (mut y0, mut y1) = (ld(yp.add(j)), ld(yp.add(j + 4)));
        for k in 0..N {
            let (w0, w1) = T::load8(rp[k].add(j));
            y0 = madd(y0, cv[k], w0);
            y1 = madd(y1, cv[k], w1);
        }
        st(yp.add(j), y0);
        st(yp.add(j + 4), y1);
        j += 8;
    }
    if j + 4 <= cols {
        let mut y0 = ld(yp.add(j));
        for k in 0..N {
            y0 = madd(y0, cv[k], T::load4(rp[k].add(j)));
        }
        st(yp.add(j), y0);
        j += 4;
    }
    for col in j..cols {
        let mut v = *yp.add(col);
        for k in 0..N {
            v += c[k] * (*rp[k].add(col)).f32();
        }
        *yp.add(col) = v;
    }
}

/// Calls `f` with the rows of `coeff` to accumulate, in order, in groups of at most 4 (zero
/// coefficients left out when `skip_zero`), so each pass over y applies several rows.
#[inline(always)]
fn for_row_groups(coeff: &[f32], skip_zero: bool, mut f: impl FnMut(&[usize], &[f32])) {
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
            f(&ids, &cs);
            n = 0;
        }
    }
    if n > 0 {
        f(&ids[..n], &cs[..n]);
    }
}

fn axpy_rows_t<T: Wide>(w: &[T], rows: usize, cols: usize, coeff: &[f32], y: &mut [f32], skip_zero: bool) {
    check_len(w.len(), rows, cols);
    // SAFETY: every id is < rows = coeff.len(), rows·cols ≤ w.len(), and y.len() == cols (caller).
    for_row_groups(coeff, skip_zero, |ids, cs| unsafe {
        match ids.len() {
            4 => axpy_group::<T, 4>(w, cols, [ids[0], ids[1], ids[2], ids[3]], [cs[0], cs[1], cs[2], cs[3]], y),
            3 => axpy_group::<T, 3>(w, cols, [ids[0], ids[1], ids[2]], [cs[0], cs[1], cs[2]], y),
            2 => axpy_group::<T, 2>(w, cols, [ids[0], ids[1]], [cs[0], cs[1]], y),
            _ => axpy_group::<T, 1>(w, cols, [ids[0]], [cs[0]], y),
        }
    });
}

/// q8 twin of [`axpy_group`]: per block, `y += (c[k] · scale[k]) · q[k]` for the N rows in order,
/// one pass over y; bit-identical to the scalar twin.
///
/// # Safety
/// Every `rows[k]` must be a row of the q8 matrix (`check_q8` holds), and `y.len() == cols`.
#[inline(always)]
pub(super) unsafe fn axpy_group_q8<const N: usize>(
    q: &[i8],
    scales: &[f32],
    cols: usize,
    rows: [usize; N],
    c: [f32; N],
    y: &mut [f32],
) {
    let nb = cols / Q8_BLOCK;
    let rp: [*const i8; N] = core::array::from_fn(|k| q.as_ptr().add(rows[k] * cols));
    let sp: [*const f32; N] = core::array::from_fn(|k| scales.as_ptr().add(rows[k] * nb));
    let yp = y.as_mut_ptr();
    for b in 0..nb {
        let cs: [v128; N] = core::array::from_fn(|k| f32x4_splat(c[k] * *sp[k].add(b)));
        for j in [b * Q8_BLOCK, b * Q8_BLOCK + 16] {
            let mut ys = [ld(yp.add(j)), ld(yp.add(j + 4)), ld(yp.add(j + 8)), ld(yp.add(j + 12))];
            for k in 0..N {
                let w = load_q16(rp[k].add(j));
                for i in 0..4 {
                    ys[i] = madd(ys[i], cs[k], w[i]);
                }
            }
            for (i, v) in ys.into_iter().enumerate() {
                st(yp.add(j + 4 * i), v);
            }
        }
    }
}

fn axpy_rows_q8(q: &[i8], scales: &[f32], rows: usize, cols: usize, coeff: &[f32], y: &mut [f32], skip_zero: bool) {
    check_q8(q, scales, rows, cols);
    // SAFETY: every id is < rows = coeff.len(), check_q8 holds, and y.len() == cols (caller).
    for_row_groups(coeff, skip_zero, |ids, cs| unsafe {
        match ids.len() {
            4 => axpy_group_q8::<4>(q, scales, cols, [ids[0], ids[1], ids[2], ids[3]], [cs[0], cs[1], cs[2], cs[3]], y),
            3 => axpy_group_q8::<3>(q, scales, cols, [ids[0], ids[1], ids[2]], [cs[0], cs[1], cs[2]], y),
            2 => axpy_group_q8::<2>(q, scales, cols, [ids[0], ids[1]], [cs[0], cs[1]], y),
            _ => axpy_group_q8::<1>(q, scales, cols, [ids[0]], [cs[0]], y),
        }
    });
}

/// y += Σ_r coeff[r] · W[r, :] (i.e. y += Wᵀ c), skipping zero coefficients.
pub fn axpy_rows(w: Mat, coeff: &[f32], y: &mut [f32]) {
    assert_eq!(coeff.len(), w.rows(), "axpy_rows: coefficient count");
    assert_eq!(y.len(), w.cols(), "axpy_rows: output length");
    match w {
        Mat::F32 { data, rows, cols } => axpy_rows_t(data, rows, cols, coeff, y, true),
        Mat::F16 { data, rows, cols } => axpy_rows_t(data, rows, cols, coeff, y, true),
        Mat::BF16 { data, rows, cols } => axpy_rows_t(data, rows, cols, coeff, y, true),
        Mat::Q8 { data, scales, rows, cols } => axpy_rows_q8(data, scales, rows, cols, coeff, y, true),
    }
}

/// Dense twin of [`axpy_rows`]: every row is accumulated, zero coefficients included.
pub fn axpy_rows_dense(w: Mat, coeff: &[f32], y: &mut [f32]) {
    assert_eq!(coeff.len(), w.rows(), "axpy_rows_dense: coefficient count");
    assert_eq!(y.len(), w.cols(), "axpy_rows_dense: output length");
    match w {
        Mat::F32 { data, rows, cols } => axpy_rows_t(data, rows, cols, coeff, y, false),
        Mat::F16 { data, rows, cols } => axpy_rows_t(data, rows, cols, coeff, y, false),
        Mat::BF16 { data, rows, cols } => axpy_rows_t(data, rows, cols, coeff, y, false),
        Mat::Q8 { data, scales, rows, cols } => axpy_rows_q8(data, scales, rows, cols, coeff, y, false),
    }
}

pub(super) fn widen_row<T: Wide>(row: &[T], out: &mut [f32]) {
    let n = row.len().min(out.len());
    let (rp, op) = (row.as_ptr(), out.as_mut_ptr());
    let mut i = 0;
    // SAFETY: indices < n ≤ both lengths.
    unsafe {
        while i + 8 <= n {
            let (a, b) = T::load8(rp.add(i));
            st(op.add(i), T::exact(a));
            st(op.add(i + 4), T::exact(b));
            i += 8;
        }
        if i + 4 <= n {
            st(op.add(i), T::exact(T::load4(rp.add(i))));
            i += 4;
        }
    }
    for j in i..n {
        out[j] = row[j].f32();
    }
}

/// Copies row `r` of W into `out` as f32.
pub fn row_to_f32(w: Mat, r: usize, out: &mut [f32]) {
    assert_eq!(out.len(), w.cols());
    let c = w.cols();
    match w {
        Mat::F32 { data, .. } => out.copy_from_slice(&data[r * c..(r + 1) * c]),
        Mat::F16 { data, .. } => widen_row(&data[r * c..(r + 1) * c], out),
        Mat::BF16 { data, .. } => widen_row(&data[r * c..(r + 1) * c], out),
        Mat::Q8 { data, scales, rows, cols } => {
            check_q8(data, scales, rows, cols);
            assert!(r < rows, "row_to_f32: row {r} of {rows}");
            let nb = cols / Q8_BLOCK;
            let (qp, op) = (data.as_ptr(), out.as_mut_ptr());
            // SAFETY: row r is in bounds (checked), out.len() == cols.
            unsafe {
                for b in 0..nb {
                    let s = f32x4_splat(scales[r * nb + b]);
                    for j in [b * Q8_BLOCK, b * Q8_BLOCK + 16] {
                        let w = load_q16(qp.add(r * cols + j));
                        for (i, v) in w.into_iter().enumerate() {
                            st(op.add(j + 4 * i), f32x4_mul(s, v));
                        }
                    }
                }
            }
        }
    }
}
