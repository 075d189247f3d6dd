//! The SIMD128 kernels against their scalar twins, compiled to wasm32 and run under Node
//! (`cargo test --target wasm32-unknown-unknown --test wasm_kernels`).
//!
//! Every run draws fresh random inputs (seeded from `Math.random()`); the seed is printed in every
//! failure message: paste it into `SEED_OVERRIDE` below to replay that run.
//!
//! Tolerances (u = 2^-24 ≈ 6e-8, the f32 unit roundoff), asserted per output element:
//! - f16/bf16 → f32 widening (`row_to_f32`): bit-identical to `half`, over all 65536 bit patterns
//!   (NaN: both NaN); `axpy_rows`, `axpy_rows_dense`: bit-identical (same operations, same order).
//! - `dot`, `matvec`: |simd − scalar| ≤ 1e-6 · Σ_j |w_j · x_j| (≈ 17u of the sum of |terms|; both
//!   sums round differently, neither is exact). Non-finite results must match exactly (±inf, NaN).
//! - `rmsnorm`: |simd − scalar| ≤ 1e-5 · |scalar| (Σx² is a sum of positive terms whose
//!   sequential rounding error grows like u·√n; 1e-5 leaves > 5× margin at n = 3072).
//! - `softmax`: |simd − scalar| ≤ 1e-5 · p + 1e-40 (polynomial exp ≤ a few u, positive sum as above,
//!   the absolute term for results in the subnormal range).
//! - `silu_scaled`: |simd − scalar| ≤ 1e-6 · |scalar| + 1e-40 (exp differs by a few u).
//! - q8 (`Mat::Q8`, int8 values over the whole range −128..=127, block scales random, zero,
//!   tiny and huge; rows of 32 … 3072, every row-count tail, `row_range` slices): `row_to_f32`,
//!   `axpy_rows`, `axpy_rows_dense` bit-identical (the same `scale·q` / `y + (c·scale)·q`, rows in
//!   order; also with ±inf/NaN scales); `matvec` |simd − scalar| ≤ 1e-6 · Σ_j |scale_b · q_j · x_j|
//!   as for the other dtypes (per-block lane sums vs sequential sums; f32 throughout, int8 → f32
//!   exact), for finite scales (the converter only writes finite ones).
//! - chunk kernels (`chunk_up`, `chunk_down`): stated with their test at the end of this file.
#![cfg(target_arch = "wasm32")]

use blockffn::kernels::{self, scalar, simd128};
use blockffn::tensor::Mat;
use half::{bf16, f16};
use wasm_bindgen_test::*;

/// Set to `Some(seed)` to replay a failing run.
const SEED_OVERRIDE: Option<u64> = None;

/// Lengths with every kind of tail for 4-, 8- and 16-wide loops, plus the model's sizes.
const LENS: &[usize] = &[0, 1, 2, 3, 4, 5, 7, 8, 9, 12, 15, 16, 17, 31, 33, 63, 64, 65, 100, 768, 3072];
const ROWS: &[usize] = &[1, 2, 3, 4, 5, 7, 8, 9, 17, 63, 65];
const COLS: &[usize] = &[1, 3, 4, 7, 8, 12, 17, 63, 65, 768];
const BIG: &[(usize, usize)] = &[(768, 768), (3072, 768), (768, 3072), (64, 768), (48, 768)];

/// splitmix64: small, fast, good enough for test data.
struct Rng(u64, u64);

impl Rng {
    fn new() -> Rng {
        let seed = SEED_OVERRIDE.unwrap_or_else(|| (js_sys::Math::random() * 9.007e15) as u64);
        Rng(seed, seed)
    }
    fn seed(&self) -> u64 {
        self.1
    }
    fn u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in [-1, 1).
    fn sym(&mut self) -> f32 {
        (self.u64() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
    fn vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| self.sym() * scale).collect()
    }
    fn below(&mut self, n: u64) -> u64 {
        self.u64() % n
    }
}

/// Weights of one dtype, owned, so a `Mat` can view them.
enum Owned {
    F32(Vec<f32>),
    F16(Vec<f16>),
    BF16(Vec<bf16>),
}

impl Owned {
    fn random(dtype: &str, n: usize, rng: &mut Rng) -> Owned {
        let v = rng.vec(n, 1.0);
        match dtype {
            "f32" => Owned::F32(v),
            "f16" => Owned::F16(v.iter().map(|&a| f16::from_f32(a)).collect()),
            _ => Owned::BF16(v.iter().map(|&a| bf16::from_f32(a)).collect()),
        }
    }
    fn mat(&self, rows: usize, cols: usize) -> Mat<'_> {
        match self {
            Owned::F32(data) => Mat::F32 { data, rows, cols },
            Owned::F16(data) => Mat::F16 { data, rows, cols },
            Owned::BF16(data) => Mat::BF16 { data, rows, cols },
        }
    }
    /// Element i widened (for Σ|terms|).
    fn get(&self, i: usize) -> f32 {
        match self {
            Owned::F32(d) => d[i],
            Owned::F16(d) => d[i].to_f32(),
            Owned::BF16(d) => d[i].to_f32(),
        }
    }
}

const DTYPES: [&str; 3] = ["f32", "f16", "bf16"];

/// Checks a sum-like result: non-finite results identical in kind, finite ones within `tol`.
fn check_sum(got: f32, want: f32, abs_terms: f64, what: &dyn Fn() -> String) -> f64 {
    if !want.is_finite() || !got.is_finite() {
        let same = (want.is_nan() && got.is_nan()) || want == got;
        assert!(same, "{}: simd {got} vs scalar {want}", what());
        return 0.0;
    }
    let tol = 1e-6 * abs_terms;
    let err = (got as f64 - want as f64).abs();
    assert!(err <= tol, "{}: simd {got} vs scalar {want}, |diff| {err:e} > 1e-6·Σ|terms| = {tol:e}", what());
    if abs_terms > 0.0 {
        err / abs_terms
    } else {
        0.0
    }
}

fn same_bits(got: f32, want: f32) -> bool {
    got.to_bits() == want.to_bits() || (got.is_nan() && want.is_nan())
}

/// The relaxed-SIMD build (`+relaxed-simd`) fuses each `y + c·w` (`f32x4.relaxed_madd`, one
/// rounding instead of two), so its row accumulations are no longer bit-identical to the scalar
/// twin: both are within γ_n · Σ|terms| of the exact sum (n additions, γ_n ≈ n·u), so they differ by
/// at most 2·n·u·Σ|terms|. The baseline build must stay bit-identical.
const FUSED: bool = cfg!(target_feature = "relaxed-simd");

/// Element `[r, j]` of any matrix as f64 (q8: scale · q).
fn weight(m: Mat, r: usize, j: usize) -> f64 {
    let c = m.cols();
    match m {
        Mat::F32 { data, .. } => data[r * c + j] as f64,
        Mat::F16 { data, .. } => data[r * c + j].to_f64(),
        Mat::BF16 { data, .. } => data[r * c + j].to_f64(),
        Mat::Q8 { data, scales, .. } => scales[r * (c / 32) + j / 32] as f64 * data[r * c + j] as f64,
    }
}

/// `got` (SIMD) against `want` (scalar) for `y0 + Σ_r coeff[r]·W[r, :]`: bit-identical in the
/// baseline build, within the bound above in the fused one (non-finite results identical).
fn axpy_matches(m: Mat, coeff: &[f32], y0: &[f32], got: &[f32], want: &[f32]) -> Result<(), String> {
    for j in 0..got.len() {
        let (a, b) = (got[j], want[j]);
        if FUSED && !a.is_finite() && !b.is_finite() {
            // Overflow stays overflow, but a fused product that overflows alone no longer does, so
            // an inf of the scalar twin may meet the opposite inf (NaN) in one and not the other.
            continue;
        }
        if !FUSED || !a.is_finite() || !b.is_finite() {
            if !same_bits(a, b) {
                return Err(format!("col {j}: simd {a} vs scalar {b}"));
            }
            continue;
        }
        let terms: f64 = y0[j].abs() as f64
            + coeff
                .iter()
                .enumerate()
                .filter(|(_, c)| **c != 0.0)
                .map(|(r, c)| (*c as f64 * weight(m, r, j)).abs())
                .sum::<f64>();
        let tol = 2.0 * (coeff.len() + 1) as f64 * f64::powi(2.0, -24) * terms;
        if (a as f64 - b as f64).abs() > tol {
            return Err(format!("col {j}: simd {a} vs scalar {b}, beyond the fused bound {tol:e}"));
        }
    }
    Ok(())
}

#[wasm_bindgen_test]
fn default_kernels_are_the_simd_ones() {
    assert_eq!(kernels::matvec as *const () as usize, simd128::matvec as *const () as usize);
    assert_eq!(kernels::axpy_rows as *const () as usize, simd128::axpy_rows as *const () as usize);
    assert_eq!(kernels::axpy_rows_dense as *const () as usize, simd128::axpy_rows_dense as *const () as usize);
    assert_eq!(kernels::row_to_f32 as *const () as usize, simd128::row_to_f32 as *const () as usize);
    assert_eq!(kernels::rmsnorm as *const () as usize, simd128::rmsnorm as *const () as usize);
    assert_eq!(kernels::softmax as *const () as usize, simd128::softmax as *const () as usize);
    assert_eq!(kernels::dot::<f32> as *const () as usize, simd128::dot::<f32> as *const () as usize);
}

#[wasm_bindgen_test]
fn widening_is_bit_exact_for_every_f16_and_bf16() {
    let bits: Vec<u16> = (0..=u16::MAX).collect();
    let halves: Vec<f16> = bits.iter().map(|&b| f16::from_bits(b)).collect();
    let brains: Vec<bf16> = bits.iter().map(|&b| bf16::from_bits(b)).collect();
    // 65536 = 256 rows × 256 columns, and also odd row lengths (tails) over the same values.
    for cols in [256usize, 7, 13] {
        let rows = 65536 / cols;
        let (hm, bm) = (Mat::F16 { data: &halves, rows, cols }, Mat::BF16 { data: &brains, rows, cols });
        let (mut a, mut b) = (vec![0.0f32; cols], vec![0.0f32; cols]);
        for r in 0..rows {
            for (m, name) in [(hm, "f16"), (bm, "bf16")] {
                simd128::row_to_f32(m, r, &mut a);
                scalar::row_to_f32(m, r, &mut b);
                for j in 0..cols {
                    assert!(
                        same_bits(a[j], b[j]),
                        "{name} bits {:#06x}: simd {:#010x} vs scalar {:#010x}",
                        bits[r * cols + j],
                        a[j].to_bits(),
                        b[j].to_bits()
                    );
                }
            }
        }
    }
    // f32 rows are copied exactly too.
    let mut rng = Rng::new();
    let w = rng.vec(65 * 3, 1.0);
    let (mut a, mut b) = (vec![0.0; 65], vec![0.0; 65]);
    for r in 0..3 {
        let m = Mat::F32 { data: &w, rows: 3, cols: 65 };
        simd128::row_to_f32(m, r, &mut a);
        scalar::row_to_f32(m, r, &mut b);
        assert_eq!(a, b);
    }
}

#[wasm_bindgen_test]
fn dot_matches_scalar() {
    let mut rng = Rng::new();
    let seed = rng.seed();
    let mut worst = 0.0f64;
    for dtype in DTYPES {
        for &n in LENS {
            for scale in [1.0f32, 1e-3, 1e3] {
                let w = Owned::random(dtype, n, &mut rng);
                let x = rng.vec(n, scale);
                let abs: f64 = (0..n).map(|i| (w.get(i) as f64 * x[i] as f64).abs()).sum();
                let (got, want) = match &w {
                    Owned::F32(d) => (simd128::dot(d, &x), scalar::dot(d, &x)),
                    Owned::F16(d) => (simd128::dot(d, &x), scalar::dot(d, &x)),
                    Owned::BF16(d) => (simd128::dot(d, &x), scalar::dot(d, &x)),
                };
                let r = check_sum(got, want, abs, &|| format!("dot {dtype} n={n} scale={scale} seed={seed}"));
                worst = worst.max(r);
            }
        }
    }
    wasm_bindgen_test::console_log!("dot: worst |simd−scalar| / Σ|terms| = {worst:e} (seed {seed})");
}

fn check_matvec(dtype: &str, rows: usize, cols: usize, rng: &mut Rng, worst: &mut f64) {
    let seed = rng.seed();
    let w = Owned::random(dtype, rows * cols, rng);
    let x = rng.vec(cols, 1.0);
    let m = w.mat(rows, cols);
    let (mut a, mut b) = (vec![f32::NAN; rows], vec![f32::NAN; rows]);
    simd128::matvec(m, &x, &mut a);
    scalar::matvec(m, &x, &mut b);
    for r in 0..rows {
        let abs: f64 = (0..cols).map(|j| (w.get(r * cols + j) as f64 * x[j] as f64).abs()).sum();
        let e = check_sum(a[r], b[r], abs, &|| format!("matvec {dtype} {rows}×{cols} row {r} seed={seed}"));
        *worst = worst.max(e);
    }
}

#[wasm_bindgen_test]
fn matvec_matches_scalar_on_all_shapes() {
    let mut rng = Rng::new();
    let mut worst = 0.0f64;
    for dtype in DTYPES {
        for &rows in ROWS {
            for &cols in COLS {
                check_matvec(dtype, rows, cols, &mut rng, &mut worst);
            }
        }
        for &(rows, cols) in BIG {
            check_matvec(dtype, rows, cols, &mut rng, &mut worst);
        }
    }
    wasm_bindgen_test::console_log!("matvec: worst |simd−scalar| / Σ|terms| = {worst:e} (seed {})", rng.seed());
}

/// A random f16 from special classes: ±0, subnormals, the smallest/largest normals, ±inf, NaNs
/// with assorted payloads, ordinary values.
fn special_f16(rng: &mut Rng) -> f16 {
    let sign = if rng.below(2) == 0 { 0 } else { 0x8000u16 };
    let mag = match rng.below(8) {
        0 => 0,
        1 => 1 + rng.below(0x3ff) as u16,      // subnormal
        2 => 0x0400 + rng.below(0x400) as u16, // smallest normals
        3 => 0x7800 + rng.below(0x3ff) as u16, // largest normals
        4 => 0x7c00 + (rng.below(64) == 0) as u16 * (1 + rng.below(0x3ff) as u16), // mostly inf, sometimes NaN
        _ => rng.below(0x7c00) as u16,         // any finite
    };
    f16::from_bits(sign | mag)
}

#[wasm_bindgen_test]
fn f16_special_values_in_matvec_dot_and_axpy() {
    let mut rng = Rng::new();
    let seed = rng.seed();
    let mut worst = 0.0f64;
    for &(rows, cols) in &[(1usize, 1usize), (3, 7), (5, 17), (9, 63), (4, 65), (17, 768)] {
        for round in 0..4 {
            // Round 0 has only finite values (no inf/NaN), so the tolerance check on finite
            // results gets exercised on subnormals and extremes, not only the NaN/inf paths.
            let data: Vec<f16> = (0..rows * cols)
                .map(|_| loop {
                    let h = special_f16(&mut rng);
                    if round > 0 || h.is_finite() {
                        break h;
                    }
                })
                .collect();
            let x = rng.vec(cols, 1.0);
            let m = Mat::F16 { data: &data, rows, cols };
            let (mut a, mut b) = (vec![0.0; rows], vec![0.0; rows]);
            simd128::matvec(m, &x, &mut a);
            scalar::matvec(m, &x, &mut b);
            for r in 0..rows {
                let row = &data[r * cols..(r + 1) * cols];
                let abs: f64 = row.iter().zip(&x).map(|(w, v)| (w.to_f32() as f64 * *v as f64).abs()).sum();
                let what = || format!("f16 specials matvec {rows}×{cols} row {r} seed={seed}");
                worst = worst.max(check_sum(a[r], b[r], abs, &what));
                let what = || format!("f16 specials dot {rows}×{cols} row {r} seed={seed}");
                check_sum(simd128::dot(row, &x), scalar::dot(row, &x), abs, &what);
            }
            let c: Vec<f32> = (0..rows).map(|_| if rng.below(3) == 0 { 0.0 } else { rng.sym() }).collect();
            for dense in [false, true] {
                let (mut ya, mut yb) = (x.clone(), x.clone());
                if dense {
                    simd128::axpy_rows_dense(m, &c, &mut ya);
                    scalar::axpy_rows_dense(m, &c, &mut yb);
                } else {
                    simd128::axpy_rows(m, &c, &mut ya);
                    scalar::axpy_rows(m, &c, &mut yb);
                }
                if let Err(e) = axpy_matches(m, &c, &x, &ya, &yb) {
                    panic!("f16 specials axpy (dense={dense}) {rows}×{cols} {e} seed={seed}");
                }
            }
        }
    }
    wasm_bindgen_test::console_log!("f16 specials: worst matvec |simd−scalar| / Σ|terms| = {worst:e}");
}

/// Axpy coefficients: a `zero_frac` share of ±0 (skipped by the sparse kernel), the rest random.
fn axpy_coeffs(rows: usize, zero_frac: f32, rng: &mut Rng) -> Vec<f32> {
    (0..rows)
        .map(|_| {
            if (rng.sym() + 1.0) / 2.0 < zero_frac {
                if rng.below(2) == 0 {
                    0.0
                } else {
                    -0.0
                }
            } else {
                rng.sym() * 2.0
            }
        })
        .collect()
}

/// Sparse and dense axpy of `m` must equal the scalar twin bit for bit.
fn assert_axpy_bitwise(m: Mat, zero_frac: f32, rng: &mut Rng, what: &str) {
    let seed = rng.seed();
    let (rows, cols) = (m.rows(), m.cols());
    let c = axpy_coeffs(rows, zero_frac, rng);
    let y0 = rng.vec(cols, 1.0);
    for dense in [false, true] {
        let (mut a, mut b) = (y0.clone(), y0.clone());
        if dense {
            simd128::axpy_rows_dense(m, &c, &mut a);
            scalar::axpy_rows_dense(m, &c, &mut b);
        } else {
            simd128::axpy_rows(m, &c, &mut a);
            scalar::axpy_rows(m, &c, &mut b);
        }
        if let Err(e) = axpy_matches(m, &c, &y0, &a, &b) {
            panic!("axpy {what} dense={dense} {rows}×{cols} zeros {zero_frac} {e} seed={seed}");
        }
    }
}

fn check_axpy(dtype: &str, rows: usize, cols: usize, zero_frac: f32, rng: &mut Rng) {
    let w = Owned::random(dtype, rows * cols, rng);
    assert_axpy_bitwise(w.mat(rows, cols), zero_frac, rng, dtype);
}

#[wasm_bindgen_test]
fn axpy_rows_bit_identical_to_scalar() {
    let mut rng = Rng::new();
    for dtype in DTYPES {
        for &rows in ROWS {
            for &cols in COLS {
                for zero_frac in [0.0, 0.5, 0.9, 1.0] {
                    check_axpy(dtype, rows, cols, zero_frac, &mut rng);
                }
            }
        }
        for &(rows, cols) in BIG {
            check_axpy(dtype, rows, cols, 0.8, &mut rng);
        }
    }
}

#[wasm_bindgen_test]
fn sparse_axpy_skips_zero_rows_and_dense_does_not() {
    // A NaN in a row whose coefficient is zero: the sparse kernel never reads it, the dense one does.
    let mut w = vec![1.0f32; 5 * 9];
    w[2 * 9 + 4] = f32::NAN;
    let m = Mat::F32 { data: &w, rows: 5, cols: 9 };
    let c = [1.0, 2.0, 0.0, -0.0, 3.0];
    let mut y = vec![0.0; 9];
    simd128::axpy_rows(m, &c, &mut y);
    assert_eq!(y, vec![6.0; 9]);
    let mut y = vec![0.0; 9];
    simd128::axpy_rows_dense(m, &c, &mut y);
    assert!(y[4].is_nan() && y[3] == 6.0);
}

#[wasm_bindgen_test]
fn rmsnorm_matches_scalar() {
    let mut rng = Rng::new();
    let seed = rng.seed();
    let mut worst = 0.0f64;
    for &n in LENS.iter().filter(|&&n| n > 0) {
        for (scale, eps) in [(1.0f32, 1e-6f32), (1e-3, 1e-5), (30.0, 1e-6), (1e-8, 1e-6)] {
            let x = rng.vec(n, scale);
            let g = rng.vec(n, 2.0);
            let (mut a, mut b) = (vec![0.0; n], vec![0.0; n]);
            simd128::rmsnorm(&x, &g, eps, &mut a);
            scalar::rmsnorm(&x, &g, eps, &mut b);
            for j in 0..n {
                let err = (a[j] - b[j]).abs() as f64;
                let tol = 1e-5 * b[j].abs() as f64;
                assert!(err <= tol, "rmsnorm n={n} scale={scale} [{j}]: simd {} vs scalar {} seed={seed}", a[j], b[j]);
                if b[j] != 0.0 {
                    worst = worst.max(err / b[j].abs() as f64);
                }
            }
        }
    }
    wasm_bindgen_test::console_log!("rmsnorm: worst relative difference {worst:e} (seed {seed})");
}

fn check_softmax(x: &[f32], what: &str, worst: &mut f64) {
    let (mut a, mut b) = (x.to_vec(), x.to_vec());
    simd128::softmax(&mut a);
    scalar::softmax(&mut b);
    for j in 0..x.len() {
        if b[j].is_nan() || a[j].is_nan() {
            assert!(a[j].is_nan() && b[j].is_nan(), "softmax {what} [{j}]: simd {} vs scalar {}", a[j], b[j]);
            continue;
        }
        let err = (a[j] - b[j]).abs() as f64;
        let tol = 1e-5 * b[j] as f64 + 1e-40;
        assert!(err <= tol, "softmax {what} [{j}] of {}: simd {} vs scalar {}, input {}", x.len(), a[j], b[j], x[j]);
        if b[j] > 1e-30 {
            *worst = worst.max(err / b[j] as f64);
        }
    }
}

#[wasm_bindgen_test]
fn softmax_matches_scalar() {
    let mut rng = Rng::new();
    let seed = rng.seed();
    let mut worst = 0.0f64;
    for &n in LENS {
        for scale in [1.0f32, 10.0, 60.0, 200.0] {
            let x = rng.vec(n, scale);
            check_softmax(&x, &format!("n={n} scale={scale} seed={seed}"), &mut worst);
        }
        // Masked entries (-inf), one NaN, all equal, a huge and a tiny spread.
        let mut x = rng.vec(n, 5.0);
        for (i, v) in x.iter_mut().enumerate() {
            if i % 3 == 1 {
                *v = f32::NEG_INFINITY;
            }
        }
        check_softmax(&x, &format!("n={n} with -inf seed={seed}"), &mut worst);
        check_softmax(&vec![0.25; n], &format!("n={n} constant"), &mut worst);
        check_softmax(&vec![f32::NEG_INFINITY; n], &format!("n={n} all -inf"), &mut worst);
        if n > 0 {
            let mut x = rng.vec(n, 1.0);
            x[n / 2] = f32::NAN;
            check_softmax(&x, &format!("n={n} with NaN seed={seed}"), &mut worst);
            let mut x = rng.vec(n, 1.0);
            x[n - 1] = 1e30;
            check_softmax(&x, &format!("n={n} one huge seed={seed}"), &mut worst);
        }
    }
    wasm_bindgen_test::console_log!("softmax: worst relative difference {worst:e} (seed {seed})");
}

#[wasm_bindgen_test]
fn silu_scaled_matches_scalar() {
    let mut rng = Rng::new();
    let seed = rng.seed();
    let mut worst = 0.0f64;
    let specials =
        [0.0f32, -0.0, f32::INFINITY, f32::NEG_INFINITY, f32::NAN, 88.0, 89.0, -88.0, -104.0, -110.0, 1e-30, -1e-30];
    for &n in LENS {
        for (scale, s) in [(1.0f32, 1.0f32), (10.0, 0.37), (100.0, -2.5), (0.01, 0.0)] {
            let mut x = rng.vec(n, scale);
            if n >= 16 {
                for (k, v) in specials.iter().enumerate() {
                    x[(k * 7) % n] = *v;
                }
            }
            let (mut a, mut b) = (x.clone(), x.clone());
            simd128::silu_scaled(&mut a, s);
            scalar::silu_scaled(&mut b, s);
            for j in 0..n {
                if a[j].is_nan() || b[j].is_nan() || b[j].is_infinite() {
                    assert!(
                        same_bits(a[j], b[j]) || a[j] == b[j],
                        "silu x={} s={s}: simd {} vs scalar {}",
                        x[j],
                        a[j],
                        b[j]
                    );
                    continue;
                }
                let err = (a[j] - b[j]).abs() as f64;
                let tol = 1e-6 * b[j].abs() as f64 + 1e-40;
                assert!(err <= tol, "silu n={n} x={} s={s}: simd {} vs scalar {} seed={seed}", x[j], a[j], b[j]);
                if b[j].abs() > 1e-30 {
                    worst = worst.max(err / b[j].abs() as f64);
                }
            }
        }
    }
    wasm_bindgen_test::console_log!("silu_scaled: worst relative difference {worst:e} (seed {seed})");
}

// ---------------------------------------------------------------------------------------------
// q8.

/// Block counts per row (cols = 32 · blocks) and row counts with every tail of the 4-row groups.
const Q8_COLS: &[usize] = &[32, 64, 96, 160, 256, 768, 3072];
const Q8_ROWS: &[usize] = &[1, 2, 3, 4, 5, 7, 8, 9, 17, 63, 65];
const Q8_BIG: &[(usize, usize)] = &[(768, 768), (3072, 768), (768, 3072), (384, 64), (96, 64)];

struct Q8Owned {
    q: Vec<i8>,
    scales: Vec<f32>,
}

impl Q8Owned {
    /// Random int8 values over the whole range and scales of magnitude `mag` (a tenth of them 0).
    fn random(rows: usize, cols: usize, mag: f32, rng: &mut Rng) -> Q8Owned {
        let q = (0..rows * cols).map(|_| rng.u64() as u8 as i8).collect();
        let scales = (0..rows * cols / 32).map(|_| if rng.below(10) == 0 { 0.0 } else { rng.sym() * mag }).collect();
        Q8Owned { q, scales }
    }
    fn mat(&self, rows: usize, cols: usize) -> Mat<'_> {
        Mat::Q8 { data: &self.q, scales: &self.scales, rows, cols }
    }
    fn w(&self, cols: usize, r: usize, j: usize) -> f64 {
        self.scales[(r * cols + j) / 32] as f64 * self.q[r * cols + j] as f64
    }
}

fn check_q8_matvec(rows: usize, cols: usize, mag: f32, xscale: f32, rng: &mut Rng, worst: &mut f64) {
    let seed = rng.seed();
    let w = Q8Owned::random(rows, cols, mag, rng);
    let x = rng.vec(cols, xscale);
    let m = w.mat(rows, cols);
    let (mut a, mut b) = (vec![f32::NAN; rows], vec![f32::NAN; rows]);
    simd128::matvec(m, &x, &mut a);
    scalar::matvec(m, &x, &mut b);
    for r in 0..rows {
        let abs: f64 = (0..cols).map(|j| (w.w(cols, r, j) * x[j] as f64).abs()).sum();
        let what = || format!("q8 matvec {rows}×{cols} mag {mag} x·{xscale} row {r} seed={seed}");
        *worst = worst.max(check_sum(a[r], b[r], abs, &what));
    }
    // A slice of rows, as the sparse FFN reads one expert's rows.
    if rows >= 3 {
        let (r0, r1) = (1, rows - 1);
        let sub = m.row_range(r0, r1);
        let (mut a, mut b) = (vec![0.0; r1 - r0], vec![0.0; r1 - r0]);
        simd128::matvec(sub, &x, &mut a);
        scalar::matvec(sub, &x, &mut b);
        for r in 0..r1 - r0 {
            let abs: f64 = (0..cols).map(|j| (w.w(cols, r0 + r, j) * x[j] as f64).abs()).sum();
            let what = || format!("q8 matvec row_range {r0}..{r1} of {rows}×{cols} row {r} seed={seed}");
            *worst = worst.max(check_sum(a[r], b[r], abs, &what));
        }
    }
}

#[wasm_bindgen_test]
fn q8_matvec_matches_scalar_on_all_shapes() {
    let mut rng = Rng::new();
    let mut worst = 0.0f64;
    for &rows in Q8_ROWS {
        for &cols in Q8_COLS {
            for (mag, xscale) in [(1e-2f32, 1.0f32), (1.0, 1e-3), (1e-6, 1e3), (30.0, 1.0)] {
                check_q8_matvec(rows, cols, mag, xscale, &mut rng, &mut worst);
            }
        }
    }
    for &(rows, cols) in Q8_BIG {
        check_q8_matvec(rows, cols, 1e-2, 1.0, &mut rng, &mut worst);
    }
    wasm_bindgen_test::console_log!("q8 matvec: worst |simd−scalar| / Σ|terms| = {worst:e} (seed {})", rng.seed());
}

/// Axpy (sparse and dense) and `row_to_f32` on one q8 matrix: bit-identical to the scalar twin.
fn check_q8_bitwise(w: &Q8Owned, rows: usize, cols: usize, zero_frac: f32, rng: &mut Rng, what: &str) {
    let m = w.mat(rows, cols);
    assert_axpy_bitwise(m, zero_frac, rng, &format!("q8 {what}"));
    let seed = rng.seed();
    let (mut a, mut b) = (vec![0.0; cols], vec![0.0; cols]);
    for r in 0..rows {
        simd128::row_to_f32(m, r, &mut a);
        scalar::row_to_f32(m, r, &mut b);
        for j in 0..cols {
            assert!(
                same_bits(a[j], b[j]),
                "q8 row_to_f32 {what} {rows}×{cols} [{r}, {j}]: simd {} vs scalar {} seed={seed}",
                a[j],
                b[j]
            );
        }
    }
}

#[wasm_bindgen_test]
fn q8_axpy_and_row_to_f32_bit_identical_to_scalar() {
    let mut rng = Rng::new();
    for &rows in Q8_ROWS {
        for &cols in Q8_COLS {
            for zero_frac in [0.0, 0.5, 0.9, 1.0] {
                let w = Q8Owned::random(rows, cols, 0.05, &mut rng);
                check_q8_bitwise(&w, rows, cols, zero_frac, &mut rng, "random");
            }
        }
    }
    for &(rows, cols) in Q8_BIG {
        let w = Q8Owned::random(rows, cols, 0.05, &mut rng);
        check_q8_bitwise(&w, rows, cols, 0.8, &mut rng, "big");
    }
    // Extreme scales: tiny (subnormal products), huge (overflow to ±inf), ±inf and NaN.
    let specials = [1e-40f32, -1e-38, 3e38, -3e38, f32::INFINITY, f32::NEG_INFINITY, f32::NAN, 0.0, -0.0];
    for &(rows, cols) in &[(5usize, 64usize), (9, 96), (4, 32)] {
        let mut w = Q8Owned::random(rows, cols, 1.0, &mut rng);
        for (i, s) in w.scales.iter_mut().enumerate() {
            if i % 2 == 0 {
                *s = specials[rng.below(specials.len() as u64) as usize];
            }
        }
        for zero_frac in [0.0, 0.5] {
            check_q8_bitwise(&w, rows, cols, zero_frac, &mut rng, "special scales");
        }
    }
}

#[wasm_bindgen_test]
fn q8_matches_dequantized_f32_kernels() {
    // The q8 kernels against the f32 SIMD kernels on the dequantized matrix: row_to_f32 exactly,
    // matvec within the activation-quantization bound (it multiplies int8 × int8), axpy within
    // |c·s·q| rounding (the scale is folded into the coefficient: (c·s)·q vs c·(s·q)).
    let mut rng = Rng::new();
    let seed = rng.seed();
    for &(rows, cols) in &[(7usize, 64usize), (65, 96), (96, 64), (17, 768)] {
        let w = Q8Owned::random(rows, cols, 0.05, &mut rng);
        let deq: Vec<f32> = (0..rows * cols).map(|i| w.scales[i / 32] * w.q[i] as f32).collect();
        let (qm, fm) = (w.mat(rows, cols), Mat::F32 { data: &deq, rows, cols });
        let x = rng.vec(cols, 1.0);
        let (mut a, mut b) = (vec![0.0; rows], vec![0.0; rows]);
        simd128::matvec(qm, &x, &mut a);
        simd128::matvec(fm, &x, &mut b);
        // matvec quantizes x per block of 32 (int8 × int8): within Σ_j |w_j| · sx_b / 2 of the f32
        // product on the dequantized weights, plus summation rounding.
        let sx: Vec<f64> =
            x.chunks_exact(32).map(|b| b.iter().fold(0.0f32, |m, v| m.max(v.abs())) as f64 / 127.0).collect();
        for r in 0..rows {
            let abs: f64 = (0..cols).map(|j| (deq[r * cols + j] as f64 * x[j] as f64).abs()).sum();
            let bound: f64 = (0..cols).map(|j| (deq[r * cols + j] as f64).abs() * sx[j / 32] / 2.0).sum();
            let err = (a[r] as f64 - b[r] as f64).abs();
            assert!(
                err <= bound * 1.001 + 1e-6 * abs,
                "q8 vs f32 matvec {rows}×{cols} row {r} seed={seed}: |diff| {err:e} > bound {bound:e}"
            );
        }
        let c = rng.vec(rows, 1.0);
        let (mut ya, mut yb) = (vec![0.0; cols], vec![0.0; cols]);
        simd128::axpy_rows(qm, &c, &mut ya);
        simd128::axpy_rows(fm, &c, &mut yb);
        for j in 0..cols {
            let abs: f64 = (0..rows).map(|r| (c[r] as f64 * deq[r * cols + j] as f64).abs()).sum();
            check_sum(ya[j], yb[j], abs, &|| format!("q8 vs f32 axpy {rows}×{cols} col {j} seed={seed}"));
        }
        let (mut ra, mut rb) = (vec![0.0; cols], vec![0.0; cols]);
        for r in 0..rows {
            simd128::row_to_f32(qm, r, &mut ra);
            simd128::row_to_f32(fm, r, &mut rb);
            assert_eq!(ra, rb, "q8 vs f32 row_to_f32 row {r} seed={seed}");
        }
    }
}

#[wasm_bindgen_test]
fn q8_model_end_to_end_under_simd() {
    // The committed f32 runtime package quantized here exactly as `convert --dtype q8` does (same
    // quantizer, same eligibility rule), loaded through `model_from_parts`, run with the SIMD
    // kernels: the logits stay within tests/q8.rs's bounds of the PyTorch reference (max 0.12,
    // mean 1e-2), and sparse equals dense.
    use blockffn::config::ModelConfig;
    use blockffn::layout::tensor_table;
    use blockffn::model::{FfnMode, Logits};
    use blockffn::tensor::quantize_q8;
    use blockffn::weights::AlignedBuf;
    use safetensors::tensor::TensorView;
    use safetensors::{Dtype, SafeTensors};

    const CONFIG: &str = include_str!("fixtures/mla_block_linear/runtime/config.json");
    const WEIGHTS: &[u8] = include_bytes!("fixtures/mla_block_linear/runtime/model.safetensors");
    const EXPECTED: &str = include_str!("fixtures/mla_block_linear/expected.json");
    let cfg = ModelConfig::from_json_str(CONFIG).unwrap();
    let table = tensor_table(&cfg);
    let st = SafeTensors::deserialize(WEIGHTS).unwrap();
    let mut out: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
    let mut quantized = 0;
    for e in &table {
        let t = st.tensor(&e.rt_name).unwrap();
        assert_eq!(t.dtype(), Dtype::F32, "the committed package is f32");
        let shape = t.shape().to_vec();
        let cols = *shape.last().unwrap();
        if !e.keep_f32 && shape.len() == 2 && cols % 32 == 0 {
            let w: Vec<f32> = t.data().chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect();
            let (q, s) = quantize_q8(&w).unwrap();
            let sb: Vec<u8> = s.iter().flat_map(|v| v.to_le_bytes()).collect();
            out.push((format!("{}.q8_scales", e.rt_name), Dtype::F32, vec![shape[0], cols / 32], sb));
            out.push((e.rt_name.clone(), Dtype::I8, shape, q.iter().map(|&v| v as u8).collect()));
            quantized += 1;
        } else {
            out.push((e.rt_name.clone(), Dtype::F32, shape, t.data().to_vec()));
        }
    }
    assert!(quantized > 0);
    let views: Vec<(String, TensorView)> =
        out.iter().map(|(n, d, s, b)| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap())).collect();
    let bytes = safetensors::serialize(views, None).unwrap();
    let mut buf = AlignedBuf::zeroed(bytes.len()).unwrap();
    buf.as_bytes_mut().copy_from_slice(&bytes);
    let model = blockffn::package::model_from_parts(CONFIG, buf).unwrap();

    let exp: serde_json::Value = serde_json::from_str(EXPECTED).unwrap();
    let ids: Vec<u32> = exp["ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
    let sparse = model.forward(&mut model.new_cache().unwrap(), &ids, FfnMode::Sparse, Logits::All).unwrap();
    let dense = model.forward(&mut model.new_cache().unwrap(), &ids, FfnMode::Dense, Logits::All).unwrap();
    let (mut worst, mut sum, mut n, mut sd) = (0.0f64, 0.0f64, 0usize, 0.0f32);
    for (p, row) in exp["logits"].as_array().unwrap().iter().enumerate() {
        for (j, v) in row.as_array().unwrap().iter().enumerate() {
            let d = (sparse.logits[p][j] as f64 - v.as_f64().unwrap()).abs();
            worst = worst.max(d);
            sum += d;
            n += 1;
            sd = sd.max((sparse.logits[p][j] - dense.logits[p][j]).abs());
        }
    }
    let mean = sum / n as f64;
    wasm_bindgen_test::console_log!(
        "q8 under SIMD: |logit − reference| max {worst:e} mean {mean:e}; |sparse − dense| {sd:e}"
    );
    assert!(worst <= 0.12 && mean <= 1e-2, "q8 under SIMD: logit error max {worst} mean {mean}");
    assert!(sd < 1e-5, "q8 under SIMD: sparse and dense differ by {sd}");
    assert_eq!(sparse.active(), dense.active());
    // The chunk path (SIMD chunk kernels over q8) equals the per-token sparse path.
    for size in [3, ids.len()] {
        let mut cache = model.new_cache().unwrap();
        let (mut logits, mut active) = (Vec::new(), Vec::new());
        for span in ids.chunks(size) {
            let o = model.forward_chunk(&mut cache, span, Logits::All).unwrap();
            active.extend(o.active());
            logits.extend(o.logits);
        }
        assert_eq!(active, sparse.active(), "q8 chunks of {size}: active sets");
        let d = logits.iter().zip(&sparse.logits).flat_map(|(a, b)| a.iter().zip(b).map(|(p, q)| (p - q).abs()));
        let d = d.fold(0.0f32, f32::max);
        assert!(d <= 1e-5, "q8 chunks of {size}: chunk and sparse differ by {d}");
    }
}

// ---------------------------------------------------------------------------------------------
// Chunk kernels (`chunk_up`, `chunk_down`: k tokens through the union of their row blocks).
//
// Tolerances: `chunk_down` is bit-identical to the scalar `chunk_down` (same `y + c·w` /
// `y + (c·scale)·q` per element, rows in order). `chunk_up`: each entry is `silu(d) · s` where
// the dot product d differs from the scalar sequential sum as `matvec` does (≤ 1e-6 · Σ|w·x|);
// silu has slope ≤ 1.1, and the polynomial exp adds ≤ 1e-6 relative, so
// |simd − scalar| ≤ 1.1 · |s| · 1e-6 · Σ|w·x| + 1e-6 · |scalar| + 1e-40. Tokens whose score for a
// block is 0 get exact zeros in both. Besides the scalar comparison, the SIMD chunk kernels must be
// bit-identical to the SIMD per-token kernels (`matvec` + `silu_scaled` on the block's rows, and
// `axpy_rows`), which is what makes the chunked model path equal the per-token one.

enum AnyW {
    Plain(Owned),
    Q8(Q8Owned),
}

impl AnyW {
    fn random(dtype: &str, rows: usize, cols: usize, rng: &mut Rng) -> AnyW {
        match dtype {
            "q8" => AnyW::Q8(Q8Owned::random(rows, cols, 0.05, rng)),
            d => AnyW::Plain(Owned::random(d, rows * cols, rng)),
        }
    }
    fn mat(&self, rows: usize, cols: usize) -> Mat<'_> {
        match self {
            AnyW::Plain(o) => o.mat(rows, cols),
            AnyW::Q8(q) => q.mat(rows, cols),
        }
    }
    fn get(&self, cols: usize, r: usize, j: usize) -> f64 {
        match self {
            AnyW::Plain(o) => o.get(r * cols + j) as f64,
            AnyW::Q8(q) => q.w(cols, r, j),
        }
    }
}

/// One random chunk case: `ne` blocks of `de` rows × `cols`, `k` tokens each using a random subset
/// of the union (some tokens none, some blocks of the union used by no token).
fn check_chunk(dtype: &str, ne: usize, de: usize, cols: usize, k: usize, rng: &mut Rng, worst: &mut f64) {
    let seed = rng.seed();
    let what = || format!("chunk {dtype} ne={ne} de={de} cols={cols} k={k} seed={seed}");
    let w = AnyW::random(dtype, ne * de, cols, rng);
    let m = w.mat(ne * de, cols);
    let mut union: Vec<u16> = (0..ne as u16).filter(|_| rng.below(3) != 0).collect();
    if union.is_empty() && rng.below(2) == 0 {
        union.push(rng.below(ne as u64) as u16);
    }
    let nu = union.len();
    let xs = rng.vec(k * cols, 1.0);
    let mut scores = vec![0.0f32; k * ne];
    for t in 0..k {
        let p = rng.below(4); // 0: token uses nothing; otherwise keeps ~p/4 of the union
        for &b in &union {
            if p != 0 && rng.below(4) < p {
                scores[t * ne + b as usize] = rng.sym() * 2.0;
            }
        }
    }
    let (mut us, mut uc) = (vec![f32::NAN; k * nu * de], vec![f32::NAN; k * nu * de]);
    simd128::chunk_up(m, de, &union, &xs, &scores, ne, &mut us);
    scalar::chunk_up(m, de, &union, &xs, &scores, ne, &mut uc);
    for t in 0..k {
        for (j, &b) in union.iter().enumerate() {
            let b = b as usize;
            let s = scores[t * ne + b];
            let i0 = (t * nu + j) * de;
            // SIMD per-token kernels, bit for bit.
            let mut v = vec![0.0f32; de];
            if s != 0.0 {
                simd128::matvec(m.row_range(b * de, (b + 1) * de), &xs[t * cols..(t + 1) * cols], &mut v);
                simd128::silu_scaled(&mut v, s);
            }
            for r in 0..de {
                let (got, want) = (us[i0 + r], uc[i0 + r]);
                assert!(same_bits(got, v[r]), "{} up t={t} b={b} r={r}: chunk {got} vs per-token {}", what(), v[r]);
                if s == 0.0 {
                    assert!(got == 0.0 && want == 0.0, "{} up t={t} b={b}: zero score gives {got}/{want}", what());
                    continue;
                }
                let terms: f64 = (0..cols).map(|c| (w.get(cols, b * de + r, c) * xs[t * cols + c] as f64).abs()).sum();
                let tol = 1.1 * s.abs() as f64 * 1e-6 * terms + 1e-6 * want.abs() as f64 + 1e-40;
                let err = (got as f64 - want as f64).abs();
                assert!(err <= tol, "{} up t={t} b={b} r={r}: simd {got} vs scalar {want}, {err:e} > {tol:e}", what());
                if terms > 0.0 {
                    *worst = worst.max(err / (s.abs() as f64 * terms));
                }
            }
        }
    }
    // Down: the same coefficients (the scalar ones, with extra exact zeros) into both kernels.
    let mut u = uc.clone();
    for v in u.iter_mut() {
        if rng.below(5) == 0 {
            *v = 0.0;
        }
    }
    let y0 = rng.vec(k * cols, 1.0);
    let (mut ys, mut yc) = (y0.clone(), y0.clone());
    simd128::chunk_down(m, de, &union, &u, &mut ys);
    scalar::chunk_down(m, de, &union, &u, &mut yc);
    for t in 0..k {
        let mut yt = y0[t * cols..(t + 1) * cols].to_vec();
        for (j, &b) in union.iter().enumerate() {
            let b = b as usize;
            simd128::axpy_rows(m.row_range(b * de, (b + 1) * de), &u[(t * nu + j) * de..][..de], &mut yt);
        }
        let mut coeff = vec![0.0f32; ne * de];
        for (j, &b) in union.iter().enumerate() {
            coeff[b as usize * de..][..de].copy_from_slice(&u[(t * nu + j) * de..][..de]);
        }
        let span = t * cols..(t + 1) * cols;
        if let Err(e) = axpy_matches(m, &coeff, &y0[span.clone()], &ys[span.clone()], &yc[span]) {
            panic!("{} down t={t} {e}", what());
        }
        for (c, &want) in yt.iter().enumerate() {
            let i = t * cols + c;
            assert!(same_bits(ys[i], want), "{} down t={t} col {c}: chunk {} vs per-token {want}", what(), ys[i]);
        }
    }
}

#[wasm_bindgen_test]
fn chunk_kernels_match_scalar_and_per_token() {
    let mut rng = Rng::new();
    let mut worst = 0.0f64;
    for dtype in ["f32", "f16", "bf16", "q8"] {
        let cols_set: &[usize] = if dtype == "q8" { &[32, 96, 768] } else { &[1, 7, 17, 64, 65, 768] };
        for &cols in cols_set {
            for &(ne, de) in &[(1usize, 1usize), (3, 2), (5, 3), (4, 4), (6, 5), (8, 9), (48, 4)] {
                for k in [1usize, 2, 3, 8] {
                    check_chunk(dtype, ne, de, cols, k, &mut rng, &mut worst);
                }
            }
        }
        // Small-model block shape: 64 rows per expert.
        let cols = 768;
        check_chunk(dtype, 6, 64, cols, 8, &mut rng, &mut worst);
    }
    // Empty span and empty union are no-ops.
    let w = vec![1.0f32; 4 * 8];
    let m = Mat::F32 { data: &w, rows: 4, cols: 8 };
    let mut u: Vec<f32> = Vec::new();
    simd128::chunk_up(m, 2, &[], &[0.5; 16], &[1.0; 4], 2, &mut u);
    let mut y = vec![1.0f32; 16];
    simd128::chunk_down(m, 2, &[], &u, &mut y);
    assert_eq!(y, vec![1.0f32; 16]);
    println!("chunk_up: worst |simd - scalar| / (|s|·Σ|w·x|) = {worst:.2e}");
}

// matmul (k tokens through one matrix, the prefill GEMM): each token's row of the SIMD result is
// bit-identical to the SIMD `matvec` of that token (so blocked prefill equals token-by-token
// decoding), and within the dot tolerance of the scalar twin.

#[wasm_bindgen_test]
fn matmul_equals_per_token_matvec_and_scalar() {
    let mut rng = Rng::new();
    let mut worst = 0.0f64;
    for dtype in ["f32", "f16", "bf16", "q8"] {
        for &(rows, cols) in &[(1usize, 32usize), (5, 64), (13, 96), (64, 256), (130, 64)] {
            for k in [0usize, 1, 2, 3, 7, 16] {
                let seed = rng.seed();
                let w = AnyW::random(dtype, rows, cols, &mut rng);
                let m = w.mat(rows, cols);
                let xs = rng.vec(k * cols, 1.0);
                let (mut ys, mut yc) = (vec![f32::NAN; k * rows], vec![f32::NAN; k * rows]);
                simd128::matmul(m, &xs, &mut ys);
                scalar::matmul(m, &xs, &mut yc);
                for t in 0..k {
                    let x = &xs[t * cols..(t + 1) * cols];
                    let mut y1 = vec![f32::NAN; rows];
                    simd128::matvec(m, x, &mut y1);
                    for r in 0..rows {
                        let got = ys[t * rows + r];
                        assert!(
                            same_bits(got, y1[r]),
                            "matmul {dtype} {rows}×{cols} k={k} token {t} row {r}: {got} vs matvec {} (seed {seed})",
                            y1[r]
                        );
                        let abs: f64 = (0..cols).map(|j| (w.get(cols, r, j) * x[j] as f64).abs()).sum();
                        let e = check_sum(got, yc[t * rows + r], abs, &|| {
                            format!("matmul {dtype} {rows}×{cols} k={k} t={t} r={r} seed={seed}")
                        });
                        worst = worst.max(e);
                    }
                }
            }
        }
    }
    wasm_bindgen_test::console_log!("matmul: worst |simd−scalar| / Σ|terms| = {worst:e} (seed {})", rng.seed());
}
