//! Plain scalar kernels: the readable reference implementation, f32 accumulation throughout.
//!
//! q8 matrices ([`Mat::Q8`]) are handled block by block, with the block's scale applied once:
//! - `matvec`: the input vector is quantized the same way as the weights (per block of 32:
//!   `sx = max|x| / 127`, `qx = round(x / sx)`, [`crate::tensor::quantize_q8`]), each block's
//!   products are summed exactly in integers, and `y[r] = Σ_b (scale_b · sx_b) · isum_b`, blocks
//!   added in order. This is the int8 × int8 product of q8 runtimes; it adds at most
//!   `Σ_j |w_j| · sx_b / 2` of error per row. An input with a non-finite value takes the exact
//!   path `Σ_b scale_b · (Σ_{j in b} q_j · x_j)` instead;
//! - `axpy_rows`: `y[j] += (c_r · scale_b) · q_j`, i.e. the coefficient folded into the scale;
//! - `row_to_f32`: `out[j] = scale_b · q_j` (the dequantized weight, one rounding).
//!
//! Files (the same in each ISA's directory): `rows.rs` (one matrix row at a time: `dot`, `matvec`,
//! `axpy_rows`, `row_to_f32`; q8 included), `activations.rs` (RMSNorm, SiLU, softmax, RoPE),
//! `multi_token.rs` (k tokens at once: `matmul`, and the chunk kernels `chunk_up`/`chunk_down`).

use half::{bf16, f16};

use crate::tensor::Mat;

mod activations;
mod multi_token;
mod rows;

pub use activations::{rmsnorm, rope_inv_freq, rope_rotate_half, silu, silu_scaled, softmax};
pub(crate) use multi_token::{check_chunk, check_matmul};
pub use multi_token::{chunk_down, chunk_up, matmul, union_sorted};
pub(crate) use rows::check_q8;
pub use rows::{axpy_rows, axpy_rows_dense, dot, matvec, row_to_f32};

/// A stored weight element that widens to f32.
pub trait Elem: Copy {
    fn f32(self) -> f32;
    /// This slice viewed as a row-major `[rows, cols]` matrix (lets dtype-specific kernels dispatch).
    fn mat(data: &[Self], rows: usize, cols: usize) -> Mat<'_>;
    /// Widens a whole slice (f16 uses the CPU's conversion instructions where it has them).
    fn widen(src: &[Self], dst: &mut [f32]) {
        for (d, s) in dst.iter_mut().zip(src) {
            *d = s.f32();
        }
    }
}
impl Elem for f32 {
    #[inline(always)]
    fn f32(self) -> f32 {
        self
    }
    fn mat(data: &[Self], rows: usize, cols: usize) -> Mat<'_> {
        Mat::F32 { data, rows, cols }
    }
}
impl Elem for f16 {
    #[inline(always)]
    fn f32(self) -> f32 {
        self.to_f32()
    }
    fn mat(data: &[Self], rows: usize, cols: usize) -> Mat<'_> {
        Mat::F16 { data, rows, cols }
    }
    fn widen(src: &[Self], dst: &mut [f32]) {
        use half::slice::HalfFloatSliceExt;
        src.convert_to_f32_slice(dst);
    }
}
impl Elem for bf16 {
    #[inline(always)]
    fn f32(self) -> f32 {
        self.to_f32()
    }
    fn mat(data: &[Self], rows: usize, cols: usize) -> Mat<'_> {
        Mat::BF16 { data, rows, cols }
    }
    fn widen(src: &[Self], dst: &mut [f32]) {
        use half::slice::HalfFloatSliceExt;
        src.convert_to_f32_slice(dst);
    }
}
