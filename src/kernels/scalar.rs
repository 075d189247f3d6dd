//! Plain scalar kernels: the readable reference implementation, f32 accumulation throughout.

use half::{bf16, f16};

use crate::weights::Mat;

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

#[inline]
pub fn dot<T: Elem>(w: &[T], x: &[f32]) -> f32 {
    debug_assert_eq!(w.len(), x.len());
    let mut acc = 0.0f32;
    for (a, b) in w.iter().zip(x) {
        acc += a.f32() * b;
    }
    acc
}

fn matvec_t<T: Elem>(w: &[T], cols: usize, x: &[f32], y: &mut [f32]) {
    let mut row = vec![0.0f32; cols];
    for (r, out) in y.iter_mut().enumerate() {
        T::widen(&w[r * cols..(r + 1) * cols], &mut row);
        *out = dot(&row, x);
    }
}

/// y = W x for a row-major W `[rows, cols]`.
pub fn matvec(w: Mat, x: &[f32], y: &mut [f32]) {
    assert_eq!(x.len(), w.cols(), "matvec: input length");
    assert_eq!(y.len(), w.rows(), "matvec: output length");
    match w {
        Mat::F32 { data, cols, .. } => {
            for (r, out) in y.iter_mut().enumerate() {
                *out = dot(&data[r * cols..(r + 1) * cols], x);
            }
        }
        Mat::F16 { data, cols, .. } => matvec_t(data, cols, x, y),
        Mat::BF16 { data, cols, .. } => matvec_t(data, cols, x, y),
    }
}

fn axpy_rows_t<T: Elem>(w: &[T], cols: usize, coeff: &[f32], y: &mut [f32], skip_zero: bool) {
    let mut row = vec![0.0f32; cols];
    for (r, &c) in coeff.iter().enumerate() {
        if skip_zero && c == 0.0 {
            continue;
        }
        T::widen(&w[r * cols..(r + 1) * cols], &mut row);
        for (o, a) in y.iter_mut().zip(&row) {
            *o += c * a;
        }
    }
}

/// y += Σ_r coeff[r] · W[r, :] (i.e. y += Wᵀ c), skipping zero coefficients.
pub fn axpy_rows(w: Mat, coeff: &[f32], y: &mut [f32]) {
    assert_eq!(coeff.len(), w.rows(), "axpy_rows: coefficient count");
    assert_eq!(y.len(), w.cols(), "axpy_rows: output length");
    match w {
        Mat::F32 { data, cols, .. } => axpy_rows_t(data, cols, coeff, y, true),
        Mat::F16 { data, cols, .. } => axpy_rows_t(data, cols, coeff, y, true),
        Mat::BF16 { data, cols, .. } => axpy_rows_t(data, cols, coeff, y, true),
    }
}

/// Dense twin of [`axpy_rows`]: every row is accumulated, zero coefficients included.
pub fn axpy_rows_dense(w: Mat, coeff: &[f32], y: &mut [f32]) {
    assert_eq!(coeff.len(), w.rows(), "axpy_rows_dense: coefficient count");
    assert_eq!(y.len(), w.cols(), "axpy_rows_dense: output length");
    match w {
        Mat::F32 { data, cols, .. } => axpy_rows_t(data, cols, coeff, y, false),
        Mat::F16 { data, cols, .. } => axpy_rows_t(data, cols, coeff, y, false),
        Mat::BF16 { data, cols, .. } => axpy_rows_t(data, cols, coeff, y, false),
    }
}

/// Copies row `r` of W into `out` as f32.
pub fn row_to_f32(w: Mat, r: usize, out: &mut [f32]) {
    assert_eq!(out.len(), w.cols());
    fn run<T: Elem>(row: &[T], out: &mut [f32]) {
        for (o, a) in out.iter_mut().zip(row) {
            *o = a.f32();
        }
    }
    let c = w.cols();
    match w {
        Mat::F32 { data, .. } => run(&data[r * c..(r + 1) * c], out),
        Mat::F16 { data, .. } => run(&data[r * c..(r + 1) * c], out),
        Mat::BF16 { data, .. } => run(&data[r * c..(r + 1) * c], out),
    }
}

/// RMSNorm: out = x · rsqrt(mean(x²) + eps) · w. No mean subtraction, no bias.
pub fn rmsnorm(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    assert_eq!(x.len(), w.len());
    assert_eq!(x.len(), out.len());
    let ms = x.iter().map(|v| v * v).sum::<f32>() / x.len() as f32;
    let inv = 1.0 / (ms + eps).sqrt();
    for ((o, &v), &g) in out.iter_mut().zip(x).zip(w) {
        *o = v * inv * g;
    }
}

#[inline]
pub fn silu(x: f32) -> f32 {
    x / (1.0 + (-x).exp())
}

/// `x[i] = silu(x[i]) · scale` over a slice (an expert's activation times its router score).
pub fn silu_scaled(x: &mut [f32], scale: f32) {
    for v in x.iter_mut() {
        *v = silu(*v) * scale;
    }
}

/// In-place softmax; returns nothing, leaves a probability vector.
pub fn softmax(x: &mut [f32]) {
    let m = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut s = 0.0;
    for v in x.iter_mut() {
        *v = (*v - m).exp();
        s += *v;
    }
    for v in x.iter_mut() {
        *v /= s;
    }
}

/// Rotary embedding tables: inverse frequencies `theta^(-2i/d)` for i < d/2, in f32 like the reference.
pub fn rope_inv_freq(dim: usize, theta: f32) -> Vec<f32> {
    (0..dim / 2).map(|i| 1.0 / theta.powf((2 * i) as f32 / dim as f32)).collect()
}

/// Rotate-half (NeoX) RoPE on a contiguous slice of even length at position `pos`.
pub fn rope_rotate_half(x: &mut [f32], inv_freq: &[f32], pos: usize) {
    let half = x.len() / 2;
    assert_eq!(inv_freq.len(), half);
    for i in 0..half {
        let angle = pos as f32 * inv_freq[i];
        let (s, c) = angle.sin_cos();
        let a = x[i];
        let b = x[i + half];
        x[i] = a * c - b * s;
        x[i + half] = b * c + a * s;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matvec_and_axpy_agree_with_hand_values() {
        let w = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0];
        let m = Mat::F32 { data: &w, rows: 2, cols: 3 };
        let mut y = [0.0; 2];
        matvec(m, &[1.0, 0.5, -1.0], &mut y);
        assert_eq!(y, [-1.0, 0.5]);
        let mut z = [0.0; 3];
        axpy_rows(m, &[2.0, 0.0], &mut z);
        assert_eq!(z, [2.0, 4.0, 6.0]);
        let mut z2 = [0.0; 3];
        axpy_rows_dense(m, &[2.0, 0.0], &mut z2);
        assert_eq!(z, z2);
    }

    #[test]
    fn rmsnorm_and_rope_hand_values() {
        let mut out = [0.0; 2];
        rmsnorm(&[3.0, 4.0], &[1.0, 2.0], 0.0, &mut out);
        let inv = 1.0 / (12.5f32).sqrt();
        assert!((out[0] - 3.0 * inv).abs() < 1e-6 && (out[1] - 8.0 * inv).abs() < 1e-6);
        let f = rope_inv_freq(4, 10000.0);
        assert_eq!(f[0], 1.0);
        assert!((f[1] - 0.01).abs() < 1e-7);
        let mut x = [1.0, 0.0, 0.0, 0.0];
        rope_rotate_half(&mut x, &f, 1);
        assert!((x[0] - 1f32.cos()).abs() < 1e-6 && (x[2] - 1f32.sin()).abs() < 1e-6);
    }
}
