//! Tensor and number formats shared by the kernels and the weight file: element types
//! ([`DType`]), the row-major matrix view ([`Mat`]) and the q8 block format. Nothing here knows
//! about files or models; `crate::kernels` imports only from this module.
//!
//! ## The q8 format
//!
//! A q8 matrix (shape `[.., cols]` with `cols` a multiple of [`Q8_BLOCK`] = 32) is two arrays:
//! - the values, `I8`, `q = round(w / scale)` clamped to −127..=127;
//! - the block scales, `F32`, one per block of 32 consecutive weights of a row,
//!   `scale = max|w| / 127` over the block (0 for an all-zero block).
//!
//! A weight is `scale · q` (symmetric, no offset); [`quantize_q8`] produces both arrays and
//! [`Mat::Q8`] views them. How a weight file stores the two is described in `crate::weights`.

use half::{bf16, f16};

/// Element type of a stored tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DType {
    F32,
    F16,
    BF16,
    /// Block-quantized int8 (q8): the values of a q8 matrix, whose scales are a separate tensor.
    I8,
}

impl DType {
    pub fn size(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::F16 | DType::BF16 => 2,
            DType::I8 => 1,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "F32",
            DType::F16 => "F16",
            DType::BF16 => "BF16",
            DType::I8 => "I8",
        }
    }
    pub(crate) fn parse(s: &str) -> Option<Self> {
        match s {
            "F32" => Some(DType::F32),
            "F16" => Some(DType::F16),
            "BF16" => Some(DType::BF16),
            "I8" => Some(DType::I8),
            _ => None,
        }
    }
}

/// Weights per q8 block: one f32 scale for every 32 consecutive weights of a row.
pub const Q8_BLOCK: usize = 32;

/// Quantizes a row-major `[rows, cols]` matrix to q8 (`cols` a multiple of [`Q8_BLOCK`]):
/// per block of 32, `scale = max|w| / 127` and `q = round(w / scale)` (half away from zero),
/// clamped to −127..=127; an all-zero block gets scale 0 and q = 0. Returns `(q, scales)`, or
/// `None` when the length is not a whole number of blocks or a weight is not finite.
pub fn quantize_q8(w: &[f32]) -> Option<(Vec<i8>, Vec<f32>)> {
    if !w.len().is_multiple_of(Q8_BLOCK) || w.iter().any(|v| !v.is_finite()) {
        return None;
    }
    let mut q = Vec::with_capacity(w.len());
    let mut scales = Vec::with_capacity(w.len() / Q8_BLOCK);
    for block in w.chunks_exact(Q8_BLOCK) {
        let max = block.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let scale = max / 127.0;
        scales.push(scale);
        for &v in block {
            // scale ≥ max/127 up to rounding, so |v/scale| ≤ 127 + rounding; the clamp makes it exact.
            let x = if scale > 0.0 { (v / scale).round().clamp(-127.0, 127.0) } else { 0.0 };
            q.push(x as i8);
        }
    }
    Some((q, scales))
}

/// A row-major matrix view `[rows, cols]` over stored weights of any supported dtype.
///
/// `Q8` (see the module notes): `W[r, c] = scales[r · cols/32 + c/32] · data[r · cols + c]`;
/// `cols` is a multiple of [`Q8_BLOCK`], `data` holds `rows · cols` values and `scales`
/// `rows · cols / 32` (the kernels assert this).
#[derive(Clone, Copy)]
pub enum Mat<'a> {
    F32 { data: &'a [f32], rows: usize, cols: usize },
    F16 { data: &'a [f16], rows: usize, cols: usize },
    BF16 { data: &'a [bf16], rows: usize, cols: usize },
    Q8 { data: &'a [i8], scales: &'a [f32], rows: usize, cols: usize },
}

impl<'a> Mat<'a> {
    pub fn rows(&self) -> usize {
        match *self {
            Mat::F32 { rows, .. } | Mat::F16 { rows, .. } | Mat::BF16 { rows, .. } | Mat::Q8 { rows, .. } => rows,
        }
    }
    pub fn cols(&self) -> usize {
        match *self {
            Mat::F32 { cols, .. } | Mat::F16 { cols, .. } | Mat::BF16 { cols, .. } | Mat::Q8 { cols, .. } => cols,
        }
    }
    /// Rows `r0..r1` as a matrix (contiguous, no copy).
    pub fn row_range(&self, r0: usize, r1: usize) -> Mat<'a> {
        match *self {
            Mat::F32 { data, cols, .. } => Mat::F32 { data: &data[r0 * cols..r1 * cols], rows: r1 - r0, cols },
            Mat::F16 { data, cols, .. } => Mat::F16 { data: &data[r0 * cols..r1 * cols], rows: r1 - r0, cols },
            Mat::BF16 { data, cols, .. } => Mat::BF16 { data: &data[r0 * cols..r1 * cols], rows: r1 - r0, cols },
            Mat::Q8 { data, scales, cols, .. } => {
                let nb = cols / Q8_BLOCK;
                Mat::Q8 { data: &data[r0 * cols..r1 * cols], scales: &scales[r0 * nb..r1 * nb], rows: r1 - r0, cols }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q8_quantizer_round_trips_within_half_a_step() {
        let w: Vec<f32> = (0..96).map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5).chain([0.0; 32]).collect();
        let (q, s) = quantize_q8(&w).unwrap();
        assert_eq!((q.len(), s.len()), (128, 4));
        assert_eq!(s[3], 0.0);
        assert!(q.iter().all(|&v| v != i8::MIN));
        for (i, &v) in w.iter().enumerate() {
            let d = s[i / 32] * q[i] as f32;
            assert!((d - v).abs() <= 0.5 * s[i / 32] * 1.0001, "w[{i}] = {v} dequantizes to {d}");
        }
        // The block maximum maps to ±127 exactly.
        let b0 = &w[..32];
        let k = (0..32).max_by(|&a, &b| b0[a].abs().total_cmp(&b0[b].abs())).unwrap();
        assert_eq!(q[k].abs(), 127);
        assert!(quantize_q8(&w[..33]).is_none());
        assert!(quantize_q8(&[f32::NAN; 32]).is_none());
    }
}
