//! Scalar multi-token kernels: `matmul` (k tokens through one matrix, `matvec` per token) and
//! the chunk kernels below.
//!
//! Chunk kernels (scalar reference): one row-block ("expert") of a matrix applied to several
//! input vectors ("tokens") at once, each block's rows read once for all of them.
//!
//! The matrices are row-major with `block` consecutive rows per block id; `union` lists the block
//! ids to compute (sorted ascending to reproduce the per-token order of additions exactly).
//! Layouts (k = number of tokens, nu = `union.len()`, H = the matrix's columns):
//! - `xs`, `ys`: `k × H`, token-major;
//! - `scores`: `k × ne` (a token's weight for each of the `ne` blocks; 0 = block not used);
//! - `u`: `k × nu × block`, element `(t · nu + j) · block + r` for token t, union entry j, row r.
//!
//! Numerics: per token and block, [`chunk_up`] does exactly what `matvec` on the block's rows
//! followed by `silu_scaled` does, and [`chunk_down`] exactly what `axpy_rows` on the block's rows
//! does, so a chunk is bit-identical to running the tokens one by one with the same kernels.

use super::activations::silu_scaled;
use super::rows::{axpy_rows, dot, matvec, row_to_f32};
use crate::tensor::Mat;

/// Checks a k-token product's shapes (`xs`: k × cols, `ys`: k × rows, token-major); returns k.
pub(crate) fn check_matmul(w: Mat, xs: &[f32], ys: &[f32]) -> usize {
    let (rows, cols) = (w.rows(), w.cols());
    assert!(cols > 0 && xs.len().is_multiple_of(cols), "matmul: inputs are not whole rows of {cols}");
    let k = xs.len() / cols;
    assert_eq!(ys.len(), k * rows, "matmul: output length");
    k
}

/// `ys[t] = W xs[t]` for k tokens (token-major `xs` `[k, cols]`, `ys` `[k, rows]`): `matvec`
/// per token. The fast twins read each weight once for all k tokens.
pub fn matmul(w: Mat, xs: &[f32], ys: &mut [f32]) {
    check_matmul(w, xs, ys);
    if xs.is_empty() {
        return;
    }
    for (x, y) in xs.chunks_exact(w.cols()).zip(ys.chunks_exact_mut(w.rows())) {
        matvec(w, x, y);
    }
}

/// Checks the shapes shared by both chunk kernels; returns `(k, nu)`.
pub(crate) fn check_chunk(
    w: Mat,
    block: usize,
    union: &[u16],
    xs_len: usize,
    u_len: usize,
    what: &str,
) -> (usize, usize) {
    let cols = w.cols();
    assert!(block > 0 && cols > 0, "{what}: empty block or matrix");
    assert!(xs_len.is_multiple_of(cols), "{what}: token vectors are not a whole number of rows of {cols}");
    let k = xs_len / cols;
    let nu = union.len();
    if let Some(&m) = union.iter().max() {
        assert!((m as usize + 1) * block <= w.rows(), "{what}: block {m} beyond the matrix's {} rows", w.rows());
    }
    assert_eq!(u_len, k * nu * block, "{what}: activation buffer length");
    (k, nu)
}

/// `u[t, j, :] = silu(W[b·block .. (b+1)·block, :] · x_t) · scores[t, b]` for every token t and
/// every block b = `union[j]`; tokens whose score for b is 0 get exact zeros (no dot products).
pub fn chunk_up(up: Mat, block: usize, union: &[u16], xs: &[f32], scores: &[f32], ne: usize, u: &mut [f32]) {
    let (k, nu) = check_chunk(up, block, union, xs.len(), u.len(), "chunk_up");
    assert_eq!(scores.len(), k * ne, "chunk_up: scores length");
    assert!(union.iter().all(|&b| (b as usize) < ne), "chunk_up: block id beyond ne");
    let cols = up.cols();
    u.iter_mut().for_each(|v| *v = 0.0);
    let mut row = vec![0.0f32; cols];
    for (j, &b) in union.iter().enumerate() {
        let b = b as usize;
        let used: Vec<usize> = (0..k).filter(|&t| scores[t * ne + b] != 0.0).collect();
        if used.is_empty() {
            continue;
        }
        for r in 0..block {
            let wr = b * block + r;
            // One read of the row, then every token's dot product with it.
            match up {
                Mat::Q8 { .. } => {
                    let one = up.row_range(wr, wr + 1);
                    for &t in &used {
                        let i = (t * nu + j) * block + r;
                        matvec(one, &xs[t * cols..(t + 1) * cols], &mut u[i..i + 1]);
                    }
                }
                _ => {
                    row_to_f32(up, wr, &mut row);
                    for &t in &used {
                        u[(t * nu + j) * block + r] = dot(&row, &xs[t * cols..(t + 1) * cols]);
                    }
                }
            }
        }
        for &t in &used {
            let i = (t * nu + j) * block;
            silu_scaled(&mut u[i..i + block], scores[t * ne + b]);
        }
    }
}

/// `ys[t, :] += Σ_j Σ_r u[t, j, r] · W[union[j]·block + r, :]`, skipping zero coefficients;
/// each row is read once for all tokens. Blocks in `union` order, rows in order.
pub fn chunk_down(down: Mat, block: usize, union: &[u16], u: &[f32], ys: &mut [f32]) {
    let (k, nu) = check_chunk(down, block, union, ys.len(), u.len(), "chunk_down");
    let cols = down.cols();
    let mut row = vec![0.0f32; cols];
    for (j, &b) in union.iter().enumerate() {
        for r in 0..block {
            let wr = b as usize * block + r;
            let coeff = |t: usize| u[(t * nu + j) * block + r];
            if (0..k).all(|t| coeff(t) == 0.0) {
                continue;
            }
            match down {
                // q8 folds the coefficient into the block scale (as `axpy_rows` does).
                Mat::Q8 { .. } => {
                    let one = down.row_range(wr, wr + 1);
                    for t in 0..k {
                        let c = coeff(t);
                        if c != 0.0 {
                            axpy_rows(one, &[c], &mut ys[t * cols..(t + 1) * cols]);
                        }
                    }
                }
                _ => {
                    row_to_f32(down, wr, &mut row);
                    for t in 0..k {
                        let c = coeff(t);
                        if c != 0.0 {
                            for (o, a) in ys[t * cols..(t + 1) * cols].iter_mut().zip(&row) {
                                *o += c * a;
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Sorted union of several sorted id lists.
pub fn union_sorted(sets: &[&[u16]]) -> Vec<u16> {
    let mut u: Vec<u16> = sets.iter().flat_map(|s| s.iter().copied()).collect();
    u.sort_unstable();
    u.dedup();
    u
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_matches_per_token_kernels_bitwise() {
        let (ne, de, h, k) = (5usize, 3usize, 8usize, 4usize);
        let w: Vec<f32> = (0..ne * de * h).map(|i| ((i * 7919) % 97) as f32 / 50.0 - 1.0).collect();
        let m = Mat::F32 { data: &w, rows: ne * de, cols: h };
        let xs: Vec<f32> = (0..k * h).map(|i| ((i * 31) % 13) as f32 / 7.0 - 0.9).collect();
        let mut scores = vec![0.0f32; k * ne];
        for (i, s) in scores.iter_mut().enumerate() {
            if i % 3 != 0 {
                *s = 0.1 + (i % 5) as f32 * 0.3;
            }
        }
        let union = [0u16, 2, 4];
        let mut u = vec![0.0; k * union.len() * de];
        chunk_up(m, de, &union, &xs, &scores, ne, &mut u);
        let mut ys = vec![0.0; k * h];
        chunk_down(m, de, &union, &u, &mut ys);
        for t in 0..k {
            let mut y = vec![0.0; h];
            for (j, &b) in union.iter().enumerate() {
                let b = b as usize;
                let mut v = vec![0.0; de];
                let s = scores[t * ne + b];
                if s != 0.0 {
                    matvec(m.row_range(b * de, (b + 1) * de), &xs[t * h..(t + 1) * h], &mut v);
                    silu_scaled(&mut v, s);
                }
                assert_eq!(v, u[(t * union.len() + j) * de..][..de]);
                axpy_rows(m.row_range(b * de, (b + 1) * de), &v, &mut y);
            }
            assert_eq!(y, ys[t * h..(t + 1) * h]);
        }
    }
}
