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
#![cfg(target_arch = "wasm32")]

use blockffn::kernels::{self, scalar, simd128};
use blockffn::weights::Mat;
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
                for j in 0..cols {
                    assert!(
                        same_bits(ya[j], yb[j]),
                        "f16 specials axpy (dense={dense}) {rows}×{cols} col {j}: {} vs {} seed={seed}",
                        ya[j],
                        yb[j]
                    );
                }
            }
        }
    }
    wasm_bindgen_test::console_log!("f16 specials: worst matvec |simd−scalar| / Σ|terms| = {worst:e}");
}

fn check_axpy(dtype: &str, rows: usize, cols: usize, zero_frac: f32, rng: &mut Rng) {
    let seed = rng.seed();
    let w = Owned::random(dtype, rows * cols, rng);
    let m = w.mat(rows, cols);
    let c: Vec<f32> = (0..rows)
        .map(|_| {
            let u = (rng.sym() + 1.0) / 2.0;
            if u < zero_frac {
                if rng.below(2) == 0 {
                    0.0
                } else {
                    -0.0
                }
            } else {
                rng.sym() * 2.0
            }
        })
        .collect();
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
        for j in 0..cols {
            assert!(
                same_bits(a[j], b[j]),
                "axpy {dtype} dense={dense} {rows}×{cols} zeros {zero_frac} col {j}: simd {} vs scalar {} seed={seed}",
                a[j],
                b[j]
            );
        }
    }
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
