//! WebAssembly SIMD128 kernels: the same functions, signatures and semantics as [`super::scalar`],
//! four f32 lanes at a time. Compiled only for wasm32 with `+simd128` (set in .cargo/config.toml);
//! tests/wasm_kernels.rs checks every kernel here against its scalar twin.
//!
//! Numerics, compared with the scalar twin:
//! - f16/bf16 → f32 widening is exact and gives the same bits as `half` (NaN stays NaN).
//! - `row_to_f32`, `axpy_rows` and `axpy_rows_dense` do the same operations in the same order per
//!   output element, so their results are bit-identical.
//! - `dot` and `matvec` sum in 8 (`matvec`) or 16 (`dot`) lane accumulators and then add those up,
//!   so they differ from the sequential scalar sum by rounding only; f32 accumulation throughout.
//! - q8 (`Mat::Q8`): `row_to_f32`, `axpy_rows` and `axpy_rows_dense` widen the int8 values
//!   exactly (i8 → i16 → i32 → f32) and are bit-identical to the scalar twin (`scale · q`, resp.
//!   `y + (c · scale) · q`, rows in order). `matvec` quantizes x per block as the scalar twin does
//!   and multiplies int8 × int8 with `i32x4.dot_i16x8_s` (exact integer block sums per lane),
//!   scaling each lane's block sum by `scale · sx` in f32: it differs from the scalar twin by
//!   rounding only. Non-finite inputs take the exact f32 path, as in the scalar twin.
//! - `rmsnorm` differs only in the rounding of Σx²; `softmax` and `silu_scaled` use a polynomial
//!   `exp` (a few ulp from libm's) and, for `softmax`, a lane-wise sum.
//!
//! All loads are unaligned `v128.load`s inside bounds checked at each function's entry.

use core::arch::wasm32::*;

use half::{bf16, f16};

use super::scalar::{check_q8, Elem};
use crate::weights::{Mat, Q8_BLOCK};

// ---------------------------------------------------------------------------------------------
// Loading and widening stored elements.

/// Element types that load and widen to f32 four or eight at a time.
trait Wide: Elem {
    /// `p[0..8]` as f32: lanes 0–3 and lanes 4–7.
    ///
    /// # Safety
    /// `p..p+8` must be in bounds of one slice.
    unsafe fn load8(p: *const Self) -> (v128, v128);
    /// `p[0..4]` as f32.
    ///
    /// # Safety
    /// `p..p+4` must be in bounds of one slice.
    unsafe fn load4(p: *const Self) -> v128;
    /// Makes widened values bit-identical to the scalar conversion (only bf16 NaNs need it: `half`
    /// sets their quiet bit). Used where values are copied out, not where they are multiplied.
    #[inline(always)]
    fn exact(v: v128) -> v128 {
        v
    }
}

impl Wide for f32 {
    #[inline(always)]
    unsafe fn load8(p: *const f32) -> (v128, v128) {
        (v128_load(p as *const v128), v128_load(p.add(4) as *const v128))
    }
    #[inline(always)]
    unsafe fn load4(p: *const f32) -> v128 {
        v128_load(p as *const v128)
    }
}

/// Interleaves zero halves below eight 16-bit values: each u32 lane holds one value in its top half,
/// which for bf16 already is the f32 bit pattern.
#[inline(always)]
fn to_top_halves(h: v128) -> (v128, v128) {
    let z = u16x8_splat(0);
    (u16x8_shuffle::<0, 8, 1, 9, 2, 10, 3, 11>(z, h), u16x8_shuffle::<4, 12, 5, 13, 6, 14, 7, 15>(z, h))
}

/// f16 → f32 on four lanes that hold the f16 bits in their top 16 bits (low 16 bits zero), for
/// any f16: exact, and bit-identical to `half`.
///
/// Exponent and mantissa move to the f32 position (`e = (h & 0x7fff) << 13`). Normal numbers,
/// infinities and NaNs: add 224 to the exponent field and multiply by 2^-112, which rebiases
/// normals exactly and leaves ±inf infinite and NaNs NaN. (Wasm makes that NaN quiet, as `half`
/// does; V8 on x86-64 and arm64 also keeps sign and payload, so the bits match `half`'s.) Zero and
/// subnormals (exponent 0): `(2^-14 · (1 + m/1024)) − 2^-14 = m · 2^-24`, exact. The sign is ORed
/// back last. No operand or result is an f32 subnormal, so there is no slow path on any CPU.
#[inline(always)]
fn f16_top_to_f32(w: v128) -> v128 {
    let sign = v128_and(w, u32x4_splat(0x8000_0000));
    let e = u32x4_shr(i32x4_add(w, w), 4);
    let normal = f32x4_mul(i32x4_add(e, u32x4_splat(0x7000_0000)), f32x4_splat(f32::from_bits(0x0780_0000)));
    let small = f32x4_sub(v128_or(e, u32x4_splat(0x3880_0000)), f32x4_splat(f32::from_bits(0x3880_0000)));
    let is_small = i32x4_lt(e, u32x4_splat(0x0080_0000));
    v128_or(v128_bitselect(small, normal, is_small), sign)
}

/// The same for lanes whose f16 exponent is not 0 (normals, ±inf, NaN), in three operations: an
/// arithmetic shift right by 3 puts exponent and mantissa in the f32 position and copies the
/// sign into bits 31–28; ORing 0x7000_0000 sets bits 30–28 (adding 224 to the exponent field,
/// sign kept in bit 31); the multiply by 2^-112 rebiases exactly as above.
#[inline(always)]
fn f16_top_to_f32_normal(w: v128) -> v128 {
    f32x4_mul(v128_or(i32x4_shr(w, 3), u32x4_splat(0x7000_0000)), f32x4_splat(f32::from_bits(0x0780_0000)))
}

/// Eight f16 → two f32x4. Vectors without a zero or subnormal (the common case for trained
/// weights: exponent 0 means |w| < 6.1e-5) take the three-operation path.
#[inline(always)]
fn f16x8_to_f32(h: v128) -> (v128, v128) {
    let (lo, hi) = to_top_halves(h);
    if u16x8_all_true(v128_and(h, u16x8_splat(0x7c00))) {
        (f16_top_to_f32_normal(lo), f16_top_to_f32_normal(hi))
    } else {
        (f16_top_to_f32(lo), f16_top_to_f32(hi))
    }
}

impl Wide for f16 {
    #[inline(always)]
    unsafe fn load8(p: *const f16) -> (v128, v128) {
        f16x8_to_f32(v128_load(p as *const v128))
    }
    #[inline(always)]
    unsafe fn load4(p: *const f16) -> v128 {
        f16_top_to_f32(to_top_halves(v128_load64_zero(p as *const u64)).0)
    }
}

impl Wide for bf16 {
    #[inline(always)]
    unsafe fn load8(p: *const bf16) -> (v128, v128) {
        to_top_halves(v128_load(p as *const v128))
    }
    #[inline(always)]
    unsafe fn load4(p: *const bf16) -> v128 {
        to_top_halves(v128_load64_zero(p as *const u64)).0
    }
    #[inline(always)]
    fn exact(v: v128) -> v128 {
        let is_nan = i32x4_gt(v128_and(v, u32x4_splat(0x7fff_ffff)), u32x4_splat(0x7f80_0000));
        v128_or(v, v128_and(is_nan, u32x4_splat(0x0040_0000)))
    }
}

/// `acc + a·b`. Baseline SIMD128 has no fused multiply-add: a multiply, then an add. The
/// relaxed-SIMD build (`+relaxed-simd`, chosen at load time where the browser has it) uses
/// `f32x4.relaxed_madd`, fused where the CPU can (one rounding instead of two).
#[inline(always)]
pub(crate) fn madd(acc: v128, a: v128, b: v128) -> v128 {
    #[cfg(target_feature = "relaxed-simd")]
    {
        f32x4_relaxed_madd(a, b, acc)
    }
    #[cfg(not(target_feature = "relaxed-simd"))]
    {
        f32x4_add(acc, f32x4_mul(a, b))
    }
}

#[inline(always)]
unsafe fn ld(p: *const f32) -> v128 {
    v128_load(p as *const v128)
}

#[inline(always)]
unsafe fn st(p: *mut f32, v: v128) {
    v128_store(p as *mut v128, v)
}

/// Sum of the four lanes: (l0 + l2) + (l1 + l3).
#[inline(always)]
fn hsum(v: v128) -> f32 {
    let s = f32x4_add(v, i32x4_shuffle::<2, 3, 0, 1>(v, v));
    let s = f32x4_add(s, i32x4_shuffle::<1, 0, 3, 2>(s, s));
    f32x4_extract_lane::<0>(s)
}

/// Checks that `data` holds a `[rows, cols]` matrix (the scalar kernels' slicing would panic too).
#[inline]
fn check_len(len: usize, rows: usize, cols: usize) {
    assert!(rows.checked_mul(cols).is_some_and(|n| n <= len), "matrix data shorter than rows × cols");
}

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
unsafe fn rows_dot<T: Wide, const N: usize>(w: &[T], cols: usize, r0: usize, x: &[f32], out: &mut [f32]) {
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

/// Sixteen int8 values as four f32x4 (lanes 0–3, 4–7, 8–11, 12–15), exactly: i8 → i16 → i32 → f32.
///
/// # Safety
/// `p..p+16` must be in bounds of one slice.
#[inline(always)]
unsafe fn load_q16(p: *const i8) -> [v128; 4] {
    let v = v128_load(p as *const v128);
    let (lo, hi) = (i16x8_extend_low_i8x16(v), i16x8_extend_high_i8x16(v));
    [
        f32x4_convert_i32x4(i32x4_extend_low_i16x8(lo)),
        f32x4_convert_i32x4(i32x4_extend_high_i16x8(lo)),
        f32x4_convert_i32x4(i32x4_extend_low_i16x8(hi)),
        f32x4_convert_i32x4(i32x4_extend_high_i16x8(hi)),
    ]
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

/// An input vector quantized like the weights (per block of 32, [`crate::weights::quantize_q8`]),
/// widened to i16 for `i32x4.dot_i16x8_s`: `(qx, sx)`. `None` when x has a non-finite value.
pub(crate) type QuantX = (Vec<i16>, Vec<f32>);

fn quantize_x(x: &[f32]) -> Option<QuantX> {
    let (q, s) = crate::weights::quantize_q8(x)?;
    Some((q.into_iter().map(i16::from).collect(), s))
}

/// int8 × int8 twin of [`rows_dot_q8`] (see `super::scalar`'s notes): per block, each lane sums
/// eight products exactly in i32 (`dot_i16x8`), converted (exactly) to f32 and scaled by
/// `scale_b · sx_b` into the row's accumulator; lanes are summed at the end. Differs from the
/// scalar twin (which adds whole-block sums in order) by f32 rounding only.
///
/// # Safety
/// `check_q8(q, scales, r0 + N, cols)` must hold, `qx.len() == cols`, `sx.len() == cols / 32`.
#[inline(always)]
unsafe fn rows_dot_q8q8<const N: usize>(
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
unsafe fn axpy_group<T: Wide, const N: usize>(w: &[T], cols: usize, rows: [usize; N], c: [f32; N], y: &mut [f32]) {
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
unsafe fn axpy_group_q8<const N: usize>(
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

fn widen_row<T: Wide>(row: &[T], out: &mut [f32]) {
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

// ---------------------------------------------------------------------------------------------
// Normalisation and activations.

/// RMSNorm: out = x · rsqrt(mean(x²) + eps) · w. No mean subtraction, no bias.
pub fn rmsnorm(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    assert_eq!(x.len(), w.len());
    assert_eq!(x.len(), out.len());
    let n = x.len();
    let (xp, wp, op) = (x.as_ptr(), w.as_ptr(), out.as_mut_ptr());
    let z = f32x4_splat(0.0);
    let (mut a0, mut a1, mut a2, mut a3) = (z, z, z, z);
    let mut i = 0;
    // SAFETY: indices < n = every slice's length.
    unsafe {
        while i + 16 <= n {
            let (v0, v1, v2, v3) = (ld(xp.add(i)), ld(xp.add(i + 4)), ld(xp.add(i + 8)), ld(xp.add(i + 12)));
            a0 = f32x4_add(a0, f32x4_mul(v0, v0));
            a1 = f32x4_add(a1, f32x4_mul(v1, v1));
            a2 = f32x4_add(a2, f32x4_mul(v2, v2));
            a3 = f32x4_add(a3, f32x4_mul(v3, v3));
            i += 16;
        }
        while i + 4 <= n {
            let v = ld(xp.add(i));
            a0 = f32x4_add(a0, f32x4_mul(v, v));
            i += 4;
        }
    }
    let mut ss = hsum(f32x4_add(f32x4_add(a0, a1), f32x4_add(a2, a3)));
    for v in &x[i..] {
        ss += v * v;
    }
    let inv = 1.0 / (ss / n as f32 + eps).sqrt();
    let iv = f32x4_splat(inv);
    let mut i = 0;
    // SAFETY: as above.
    unsafe {
        while i + 4 <= n {
            st(op.add(i), f32x4_mul(f32x4_mul(ld(xp.add(i)), iv), ld(wp.add(i))));
            i += 4;
        }
    }
    for j in i..n {
        out[j] = x[j] * inv * w[j];
    }
}

/// e^x on four lanes: x = n·ln2 + r with |r| ≤ ln2/2 (Cody–Waite, two-part ln2), e^r by its
/// degree-7 Taylor polynomial (truncation < 6e-9 relative), times 2^n applied as two factors so
/// results down to the subnormal range are right. x is clamped to [-104, 88.8] first: below,
/// e^x rounds to 0; above, it overflows to +inf. NaN stays NaN: the clamp uses the
/// NaN-propagating `min`/`max` (with `+relaxed-simd`, LLVM may turn `pmin`/`pmax` into the relaxed
/// forms, whose NaN result is implementation-defined).
#[inline(always)]
fn exp4(x: v128) -> v128 {
    let x = f32x4_max(f32x4_min(x, f32x4_splat(88.8)), f32x4_splat(-104.0));
    let n = f32x4_nearest(f32x4_mul(x, f32x4_splat(core::f32::consts::LOG2_E)));
    let r = f32x4_sub(x, f32x4_mul(n, f32x4_splat(355.0 / 512.0))); // ln2_hi: n·ln2_hi is exact
    let r = f32x4_sub(r, f32x4_mul(n, f32x4_splat(-2.121_944_4e-4))); // ln2 − ln2_hi
    let mut p = f32x4_splat(1.0 / 5040.0);
    for c in [1.0 / 720.0, 1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0, 1.0] {
        p = f32x4_add(f32x4_mul(p, r), f32x4_splat(c));
    }
    let ni = i32x4_trunc_sat_f32x4(n);
    let n1 = i32x4_shr(ni, 1);
    let n2 = i32x4_sub(ni, n1);
    let bias = i32x4_splat(127);
    let s1 = i32x4_shl(i32x4_add(n1, bias), 23);
    let s2 = i32x4_shl(i32x4_add(n2, bias), 23);
    f32x4_mul(f32x4_mul(p, s1), s2)
}

/// Loads up to three trailing elements into a vector (the other lanes 0), for one more vector step.
#[inline(always)]
fn load_tail(t: &[f32]) -> v128 {
    let mut a = [0.0f32; 4];
    a[..t.len()].copy_from_slice(t);
    // SAFETY: `a` is 16 readable bytes.
    unsafe { ld(a.as_ptr()) }
}

#[inline(always)]
fn store_tail(t: &mut [f32], v: v128) {
    let mut a = [0.0f32; 4];
    // SAFETY: `a` is 16 writable bytes.
    unsafe { st(a.as_mut_ptr(), v) };
    let n = t.len();
    t.copy_from_slice(&a[..n]);
}

/// In-place softmax; returns nothing, leaves a probability vector.
pub fn softmax(x: &mut [f32]) {
    let n = x.len();
    let split = n - n % 4;
    // Maximum, ignoring NaNs like `f32::max` (pmax keeps its first operand when the second is NaN).
    let mut mv = f32x4_splat(f32::NEG_INFINITY);
    let p = x.as_ptr();
    // SAFETY: every vector access in this function is below `split` ≤ n.
    unsafe {
        for i in (0..split).step_by(4) {
            mv = f32x4_pmax(mv, ld(p.add(i)));
        }
    }
    let lanes = [
        f32x4_extract_lane::<0>(mv),
        f32x4_extract_lane::<1>(mv),
        f32x4_extract_lane::<2>(mv),
        f32x4_extract_lane::<3>(mv),
    ];
    let m = lanes.iter().chain(&x[split..]).copied().fold(f32::NEG_INFINITY, f32::max);
    let mm = f32x4_splat(m);
    let mut sv = f32x4_splat(0.0);
    let p = x.as_mut_ptr();
    unsafe {
        for i in (0..split).step_by(4) {
            let e = exp4(f32x4_sub(ld(p.add(i)), mm));
            st(p.add(i), e);
            sv = f32x4_add(sv, e);
        }
    }
    let mut s = hsum(sv);
    let tail = &mut x[split..];
    if !tail.is_empty() {
        store_tail(tail, exp4(f32x4_sub(load_tail(tail), mm)));
        for &v in tail.iter() {
            s += v;
        }
    }
    let sd = f32x4_splat(s);
    let p = x.as_mut_ptr();
    unsafe {
        for i in (0..split).step_by(4) {
            st(p.add(i), f32x4_div(ld(p.add(i)), sd));
        }
    }
    for v in &mut x[split..] {
        *v /= s;
    }
}

#[inline(always)]
fn silu_scaled4(v: v128, scale: v128) -> v128 {
    let e = exp4(f32x4_neg(v));
    f32x4_mul(f32x4_div(v, f32x4_add(f32x4_splat(1.0), e)), scale)
}

/// `x[i] = silu(x[i]) · scale` over a slice (an expert's activation times its router score).
pub fn silu_scaled(x: &mut [f32], scale: f32) {
    let n = x.len();
    let split = n - n % 4;
    let sc = f32x4_splat(scale);
    let p = x.as_mut_ptr();
    let mut i = 0;
    // SAFETY: every vector access is below `split` ≤ n.
    unsafe {
        while i < split {
            st(p.add(i), silu_scaled4(ld(p.add(i)), sc));
            i += 4;
        }
    }
    if split < n {
        let tail = &mut x[split..];
        let v = silu_scaled4(load_tail(tail), sc);
        store_tail(tail, v);
    }
}

// ---------------------------------------------------------------------------------------------
// Chunk kernels (several tokens through the same row blocks; see `super::chunk` for layouts).

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

/// int8 × int8 twin of [`rows_dot_tokens`] (the operations of [`rows_dot_q8q8`]); `qx[m]` and
/// `sx[m]` are token m's quantized input and block scales.
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

/// SIMD twin of [`super::scalar::matmul`] (k tokens through one matrix, the prefill GEMM): rows
/// [`DOT_ROWS`] at a time against [`DOT_TOKENS`] tokens per weight load, every token of the block
/// while the rows are in L1. Per token the numerics are exactly this module's `matvec`.
pub fn matmul(w: Mat, xs: &[f32], ys: &mut [f32]) {
    let k = super::scalar::check_matmul(w, xs, ys);
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

/// SIMD twin of [`super::chunk::chunk_up`]: for each block of the union, its rows are read
/// [`DOT_ROWS`] at a time and applied to the tokens that use the block, [`DOT_TOKENS`] per pass.
/// Per token and block: the operations of `matvec` and `silu_scaled`, so bit-identical to running
/// this module's kernels token by token.
pub fn chunk_up(up: Mat, block: usize, union: &[u16], xs: &[f32], scores: &[f32], ne: usize, u: &mut [f32]) {
    let (k, nu) = super::chunk::check_chunk(up, block, union, xs.len(), u.len(), "chunk_up");
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

/// SIMD twin of [`super::chunk::chunk_down`]: rows in groups of [`AXPY_ROWS`]; the tokens whose
/// coefficients for a group are all nonzero (the usual case: a token that selected an expert)
/// get it [`AXPY_TOKENS`] per weight load, the others one by one with their nonzero rows only. Per
/// output element the additions are the scalar ones in the scalar order: bit-identical to it.
pub fn chunk_down(down: Mat, block: usize, union: &[u16], u: &[f32], ys: &mut [f32]) {
    let (k, nu) = super::chunk::check_chunk(down, block, union, ys.len(), u.len(), "chunk_down");
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
