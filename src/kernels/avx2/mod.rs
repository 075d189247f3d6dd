//! x86-64 AVX2 + FMA (+ F16C) kernels: the same functions, signatures and semantics as
//! [`super::scalar`], eight f32 lanes at a time. Compiled only on x86-64; each
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
//!
//! Files, as in every ISA's directory: `rows.rs` (dot, matvec, axpy_rows, axpy_rows_dense),
//! `multi_token.rs` (matmul, chunk_up, chunk_down); this file holds the dispatch and what they
//! share (loading and widening, lane sums, bounds checks). There is no `activations.rs`: rmsnorm,
//! softmax and silu have no AVX2 kernels (see above), the scalar ones are used.

use core::arch::x86_64::*;
use core::sync::atomic::{AtomicU8, Ordering};

use half::{bf16, f16};

use crate::kernels::scalar::{check_q8, Elem};
use crate::tensor::Mat;

mod multi_token;
mod rows;

pub use multi_token::{chunk_down, chunk_up, matmul};
pub use rows::{axpy_rows, axpy_rows_dense, dot, matvec};

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
