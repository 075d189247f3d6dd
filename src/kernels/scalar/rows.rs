//! Scalar row kernels: one matrix row at a time (`dot`, `matvec`, `axpy_rows`, `axpy_rows_dense`,
//! `row_to_f32`), every dtype including q8 (see the notes of `kernels::scalar`).

use super::Elem;
use crate::tensor::{quantize_q8, Mat, Q8_BLOCK};

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

/// Checks the invariants of a q8 matrix (block-aligned rows, both slices long enough); the
/// kernels would otherwise misread or panic mid-way.
#[inline]
pub(crate) fn check_q8(data: &[i8], scales: &[f32], rows: usize, cols: usize) {
    assert!(cols.is_multiple_of(Q8_BLOCK), "q8 matrix: {cols} columns is not a multiple of {Q8_BLOCK}");
    let n = rows.checked_mul(cols).expect("q8 matrix: rows × cols overflows");
    assert!(data.len() >= n && scales.len() >= n / Q8_BLOCK, "q8 matrix: data or scales shorter than rows × cols");
}

/// Σ_b scale_b · (Σ_{j in b} q_j · x_j) over one q8 row (see the notes of `kernels::scalar`).
#[inline]
fn dot_q8(q: &[i8], scales: &[f32], x: &[f32]) -> f32 {
    let mut acc = 0.0f32;
    for ((qb, xb), &s) in q.chunks_exact(Q8_BLOCK).zip(x.chunks_exact(Q8_BLOCK)).zip(scales) {
        let mut b = 0.0f32;
        for (&a, &v) in qb.iter().zip(xb) {
            b += a as f32 * v;
        }
        acc += s * b;
    }
    acc
}

/// `Σ_b (scale_b · sx_b) · Σ_{j in b} q_j · qx_j` over one q8 row and a quantized input (integer
/// block sums, exact; blocks added in order).
#[inline]
fn dot_q8q8(q: &[i8], scales: &[f32], qx: &[i8], sx: &[f32]) -> f32 {
    let mut acc = 0.0f32;
    for (((qb, xb), &s), &t) in q.chunks_exact(Q8_BLOCK).zip(qx.chunks_exact(Q8_BLOCK)).zip(scales).zip(sx) {
        let isum: i32 = qb.iter().zip(xb).map(|(&a, &b)| a as i32 * b as i32).sum();
        acc += (s * t) * isum as f32;
    }
    acc
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
        Mat::Q8 { data, scales, rows, cols } => {
            check_q8(data, scales, rows, cols);
            let nb = cols / Q8_BLOCK;
            let (ws, qs) = (|r: usize| &data[r * cols..(r + 1) * cols], |r: usize| &scales[r * nb..(r + 1) * nb]);
            match quantize_q8(x) {
                Some((qx, sx)) => {
                    for (r, out) in y.iter_mut().enumerate() {
                        *out = dot_q8q8(ws(r), qs(r), &qx, &sx);
                    }
                }
                None => {
                    for (r, out) in y.iter_mut().enumerate() {
                        *out = dot_q8(ws(r), qs(r), x);
                    }
                }
            }
        }
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

/// q8 rows: `y[j] += (c_r · scale_b) · q_j`, rows in order (see the notes of `kernels::scalar`).
fn axpy_rows_q8(data: &[i8], scales: &[f32], rows: usize, cols: usize, coeff: &[f32], y: &mut [f32], skip_zero: bool) {
    check_q8(data, scales, rows, cols);
    let nb = cols / Q8_BLOCK;
    for (r, &c) in coeff.iter().enumerate() {
        if skip_zero && c == 0.0 {
            continue;
        }
        let row = &data[r * cols..(r + 1) * cols];
        for ((qb, yb), &s) in row.chunks_exact(Q8_BLOCK).zip(y.chunks_exact_mut(Q8_BLOCK)).zip(&scales[r * nb..]) {
            let cs = c * s;
            for (o, &a) in yb.iter_mut().zip(qb) {
                *o += cs * a as f32;
            }
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
        Mat::Q8 { data, scales, rows, cols } => axpy_rows_q8(data, scales, rows, cols, coeff, y, true),
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
        Mat::Q8 { data, scales, rows, cols } => axpy_rows_q8(data, scales, rows, cols, coeff, y, false),
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
        Mat::Q8 { data, scales, rows, cols } => {
            check_q8(data, scales, rows, cols);
            let nb = cols / Q8_BLOCK;
            let row = &data[r * c..(r + 1) * c];
            for ((ob, qb), &s) in out.chunks_exact_mut(Q8_BLOCK).zip(row.chunks_exact(Q8_BLOCK)).zip(&scales[r * nb..])
            {
                for (o, &a) in ob.iter_mut().zip(qb) {
                    *o = s * a as f32;
                }
            }
        }
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
    fn q8_kernels_agree_with_dequantized_f32() {
        // Two rows of 64 (two blocks each); values chosen so every product is exact in f32.
        let q: Vec<i8> = (0..128).map(|i| ((i * 37) % 255 - 127) as i8).collect();
        let scales = [0.5f32, -0.25, 2.0, 0.0];
        let m = Mat::Q8 { data: &q, scales: &scales, rows: 2, cols: 64 };
        let deq: Vec<f32> = (0..128).map(|i| scales[i / 32] * q[i] as f32).collect();
        let f = Mat::F32 { data: &deq, rows: 2, cols: 64 };
        // An input already on its int8 grid (each block's max is 127 steps of 0.25): the int8 × int8
        // product is then exact.
        let x: Vec<f32> = (0..64).map(|i| [-127.0, -1.0, 0.0, 1.0, 127.0][i % 5] * 0.25).collect();
        let (mut a, mut b) = ([0.0; 2], [0.0; 2]);
        matvec(m, &x, &mut a);
        matvec(f, &x, &mut b);
        assert_eq!(a, b);
        // Off the grid: within the activation rounding bound Σ_j |w_j| · sx_b / 2.
        let x: Vec<f32> = (0..64).map(|i| (i % 5) as f32 - 2.0 + 0.3 * (i % 3) as f32).collect();
        matvec(m, &x, &mut a);
        matvec(f, &x, &mut b);
        for r in 0..2 {
            let bound: f32 = (0..64)
                .map(|j| {
                    let amax = x[j / 32 * 32..j / 32 * 32 + 32].iter().fold(0.0f32, |m, v| m.max(v.abs()));
                    deq[r * 64 + j].abs() * amax / 127.0 / 2.0
                })
                .sum();
            assert!((a[r] - b[r]).abs() <= bound * 1.001 + 1e-4, "row {r}: {} vs {} (bound {bound})", a[r], b[r]);
        }
        // A non-finite input takes the exact path (NaN propagates as in the f32 kernel).
        let mut xn = x.clone();
        xn[3] = f32::NAN;
        matvec(m, &xn, &mut a);
        assert!(a[0].is_nan());
        for dense in [false, true] {
            let (mut ya, mut yb) = (vec![1.0; 64], vec![1.0; 64]);
            let c = [0.0, 1.5];
            if dense {
                axpy_rows_dense(m, &c, &mut ya);
                axpy_rows_dense(f, &c, &mut yb);
            } else {
                axpy_rows(m, &c, &mut ya);
                axpy_rows(f, &c, &mut yb);
            }
            assert_eq!(ya, yb);
        }
        let mut row = vec![0.0; 64];
        row_to_f32(m, 1, &mut row);
        assert_eq!(row, deq[64..]);
        // row_range keeps rows and their scales together.
        let mut row0 = vec![0.0; 64];
        row_to_f32(m.row_range(1, 2), 0, &mut row0);
        assert_eq!(row0, row);
    }
}
