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
//!
//! Files, as in every ISA's directory: `rows.rs` (dot, matvec, axpy_rows, row_to_f32; q8
//! included), `activations.rs` (rmsnorm, softmax, silu_scaled), `multi_token.rs` (matmul and the
//! chunk kernels); this file holds what they share (loading and widening stored elements, `madd`,
//! lane sums, bounds checks).

use core::arch::wasm32::*;

use half::{bf16, f16};

use crate::kernels::scalar::Elem;

mod activations;
mod multi_token;
mod rows;

pub use activations::{rmsnorm, silu_scaled, softmax};
pub use multi_token::{chunk_down, chunk_up, matmul};
pub use rows::{axpy_rows, axpy_rows_dense, dot, matvec, row_to_f32};

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
