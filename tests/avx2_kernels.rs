//! The AVX2 kernels (src/kernels/avx2/) against their scalar twins, natively on x86-64; skipped
//! with a note on CPUs without AVX2/FMA/F16C (or with BLOCKFFN_KERNELS=scalar, which makes both the same).
//!
//! Every run draws fresh random inputs (seeded from the std hasher's random keys and the clock); the
//! seed is printed at the start of each test and in every failure message: paste it into
//! `SEED_OVERRIDE` below to replay that run.
//!
//! Tolerances (u = 2^-24), per output element:
//! - `axpy_rows`, `axpy_rows_dense`, `chunk_down` (all dtypes): bit-identical to scalar.
//! - `dot`, `matvec`, `matmul` (f32/f16/bf16/q8): |avx2 − scalar| ≤ 2·n·u·Σ|terms| (+1e-30),
//!   n = columns; non-finite results identical in kind.
//! - `chunk_up`: |avx2 − scalar| ≤ 1.1·|s|·(the `matvec` bound) + 1e-6·|scalar| (+1e-40): SiLU's
//!   slope is below 1.1, and the same scalar `silu_scaled` runs on both.
//! - `matmul`, `chunk_up`: also bit-identical to the AVX2 `matvec` (+ `silu_scaled`) per token.
#![cfg(target_arch = "x86_64")]

use blockffn::kernels::{avx2, scalar};
use blockffn::tensor::{Mat, Q8_BLOCK};
use half::{bf16, f16};

/// Set to `Some(seed)` to replay a failing run.
const SEED_OVERRIDE: Option<u64> = None;

/// splitmix64 (state, seed).
struct Rng(u64, u64);
impl Rng {
    /// A fresh seed per call (random hasher keys plus the clock), unless `SEED_OVERRIDE` is set.
    fn new(test: &str) -> Rng {
        use std::hash::BuildHasher;
        let seed = SEED_OVERRIDE
            .unwrap_or_else(|| std::collections::hash_map::RandomState::new().hash_one(std::time::SystemTime::now()));
        eprintln!("avx2_kernels::{test}: seed {seed} (set SEED_OVERRIDE = Some({seed}) to replay)");
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
    fn sym(&mut self) -> f32 {
        (self.u64() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
    fn vec(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.sym()).collect()
    }
}

fn skip() -> bool {
    if !avx2::enabled() {
        eprintln!("note: AVX2/FMA/F16C kernels not enabled on this CPU/environment; avx2_kernels skipped");
        return true;
    }
    false
}

struct Owned {
    f: Vec<f32>,
    h: Vec<f16>,
    b: Vec<bf16>,
    q: Vec<i8>,
    s: Vec<f32>,
}
fn owned(rows: usize, cols: usize, rng: &mut Rng) -> Owned {
    let f = rng.vec(rows * cols);
    let q: Vec<i8> = (0..rows * cols).map(|_| (rng.u64() % 256) as u8 as i8).collect();
    let s = (0..rows * cols / Q8_BLOCK).map(|_| rng.sym() * 0.01).collect();
    Owned {
        h: f.iter().map(|&v| f16::from_f32(v)).collect(),
        b: f.iter().map(|&v| bf16::from_f32(v)).collect(),
        f,
        q,
        s,
    }
}
fn mats(o: &Owned, rows: usize, cols: usize) -> Vec<(&'static str, Mat<'_>)> {
    let mut v = vec![
        ("f32", Mat::F32 { data: &o.f, rows, cols }),
        ("f16", Mat::F16 { data: &o.h, rows, cols }),
        ("bf16", Mat::BF16 { data: &o.b, rows, cols }),
    ];
    if cols.is_multiple_of(Q8_BLOCK) {
        v.push(("q8", Mat::Q8 { data: &o.q, scales: &o.s, rows, cols }));
    }
    v
}
fn weight(m: Mat, r: usize, j: usize) -> f64 {
    let c = m.cols();
    match m {
        Mat::F32 { data, .. } => data[r * c + j] as f64,
        Mat::F16 { data, .. } => data[r * c + j].to_f64(),
        Mat::BF16 { data, .. } => data[r * c + j].to_f64(),
        Mat::Q8 { data, scales, .. } => data[r * c + j] as f64 * scales[(r * c + j) / Q8_BLOCK] as f64,
    }
}

const SHAPES: &[(usize, usize)] = &[
    (1, 1),
    (3, 7),
    (5, 8),
    (4, 15),
    (7, 16),
    (9, 17),
    (6, 31),
    (5, 32),
    (13, 33),
    (17, 64),
    (3, 96),
    (65, 100),
    (64, 768),
];

#[test]
fn matvec_and_dot_match_scalar() {
    if skip() {
        return;
    }
    let mut rng = Rng::new("matvec_and_dot_match_scalar");
    let seed = rng.seed();
    for &(rows, cols) in SHAPES {
        let o = owned(rows, cols, &mut rng);
        let x = rng.vec(cols);
        for (name, m) in mats(&o, rows, cols) {
            let (mut a, mut s) = (vec![0.0; rows], vec![0.0; rows]);
            avx2::matvec(m, &x, &mut a);
            scalar::matvec(m, &x, &mut s);
            for r in 0..rows {
                let tol = dot_tol(m, r, &x);
                let what = || format!("{name} {rows}x{cols} row {r} seed={seed}");
                check_close(a[r], s[r], tol, &what);
            }
            if r_is_elem(name) {
                for r in 0..rows {
                    let (d, ds) = match m {
                        Mat::F32 { data, .. } => (
                            avx2::dot(&data[r * cols..(r + 1) * cols], &x),
                            scalar::dot(&data[r * cols..(r + 1) * cols], &x),
                        ),
                        Mat::F16 { data, .. } => (
                            avx2::dot(&data[r * cols..(r + 1) * cols], &x),
                            scalar::dot(&data[r * cols..(r + 1) * cols], &x),
                        ),
                        Mat::BF16 { data, .. } => (
                            avx2::dot(&data[r * cols..(r + 1) * cols], &x),
                            scalar::dot(&data[r * cols..(r + 1) * cols], &x),
                        ),
                        Mat::Q8 { .. } => unreachable!(),
                    };
                    assert_eq!(d.to_bits(), a[r].to_bits(), "{name} dot vs matvec row {r} seed={seed}");
                    check_close(d, ds, dot_tol(m, r, &x), &|| format!("{name} {rows}x{cols} dot row {r} seed={seed}"));
                }
            }
        }
    }
}

/// The `dot`/`matvec` bound for row `r` of `m` against `x`: 2·n·u·Σ|terms| (+1e-30). q8: the input
/// quantization error is the same in both (same quantizer); the bound covers the differing f32
/// roundings of Σ|terms| with the quantized x ≈ x (hence the 2 % margin).
fn dot_tol(m: Mat, r: usize, x: &[f32]) -> f64 {
    let cols = m.cols();
    let terms: f64 = (0..cols).map(|j| (weight(m, r, j) * x[j] as f64).abs()).sum::<f64>() * 1.02;
    2.0 * cols as f64 * f64::powi(2.0, -24) * terms + 1e-30
}

/// `got` (AVX2) against `want` (scalar): within `tol` when both are finite, else the same kind
/// (both NaN, or the same infinity).
fn check_close(got: f32, want: f32, tol: f64, what: &dyn Fn() -> String) {
    if !got.is_finite() || !want.is_finite() {
        assert!((got.is_nan() && want.is_nan()) || got == want, "{}: avx2 {got} vs scalar {want}", what());
        return;
    }
    let err = (got as f64 - want as f64).abs();
    assert!(err <= tol, "{}: avx2 {got} vs scalar {want}, |diff| {err:e} > tol {tol:e}", what());
}

fn r_is_elem(name: &str) -> bool {
    name != "q8"
}

#[test]
fn axpy_rows_bit_identical_to_scalar() {
    if skip() {
        return;
    }
    let mut rng = Rng::new("axpy_rows_bit_identical_to_scalar");
    let seed = rng.seed();
    for &(rows, cols) in SHAPES {
        let o = owned(rows, cols, &mut rng);
        let mut c = rng.vec(rows);
        for (i, v) in c.iter_mut().enumerate() {
            if i % 3 == 1 {
                *v = 0.0;
            }
        }
        let y0 = rng.vec(cols);
        for (name, m) in mats(&o, rows, cols) {
            for dense in [false, true] {
                let (mut a, mut s) = (y0.clone(), y0.clone());
                if dense {
                    avx2::axpy_rows_dense(m, &c, &mut a);
                    scalar::axpy_rows_dense(m, &c, &mut s);
                } else {
                    avx2::axpy_rows(m, &c, &mut a);
                    scalar::axpy_rows(m, &c, &mut s);
                }
                let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&a), bits(&s), "{name} {rows}x{cols} dense={dense} seed={seed}");
            }
        }
    }
}

#[test]
fn matmul_and_chunks_match_per_token_and_scalar() {
    if skip() {
        return;
    }
    let mut rng = Rng::new("matmul_and_chunks_match_per_token_and_scalar");
    let seed = rng.seed();
    let (ne, de) = (5usize, 3usize);
    for cols in [7usize, 32, 33, 64, 96] {
        let rows = ne * de;
        let o = owned(rows, cols, &mut rng);
        for k in [1usize, 2, 3, 4, 5, 9] {
            let mut xs = rng.vec(k * cols);
            if k == 9 {
                xs[cols + 2] = f32::INFINITY; // token 1 takes the q8 exact path
            }
            let mut scores: Vec<f32> =
                (0..k * ne).map(|i| if i % 3 == 0 { 0.0 } else { 0.1 + (i % 5) as f32 * 0.3 }).collect();
            scores[0] = 0.7;
            let union = [0u16, 2, 4];
            let nu = union.len();
            for (name, m) in mats(&o, rows, cols) {
                let mut ys = vec![0.0; k * rows];
                avx2::matmul(m, &xs, &mut ys);
                let mut ys_s = vec![0.0; k * rows];
                scalar::matmul(m, &xs, &mut ys_s);
                let mut u = vec![0.0; k * nu * de];
                avx2::chunk_up(m, de, &union, &xs, &scores, ne, &mut u);
                let mut u_s = vec![0.0; k * nu * de];
                scalar::chunk_up(m, de, &union, &xs, &scores, ne, &mut u_s);
                // Down projection: a [rows, cols] matrix used as down_t, coefficients = u.
                let mut yd = vec![0.5; k * cols];
                avx2::chunk_down(m, de, &union, &u, &mut yd);
                let mut yd_s = vec![0.5; k * cols];
                scalar::chunk_down(m, de, &union, &u, &mut yd_s);
                for t in 0..k {
                    let x = &xs[t * cols..(t + 1) * cols];
                    let mut y = vec![0.0; rows];
                    avx2::matvec(m, x, &mut y);
                    let same = |a: &[f32], b: &[f32]| a.iter().zip(b).all(|(p, q)| p.to_bits() == q.to_bits());
                    assert!(
                        same(&y, &ys[t * rows..(t + 1) * rows]),
                        "{name} cols {cols} k {k} matmul token {t} seed={seed}"
                    );
                    for r in 0..rows {
                        let what =
                            || format!("{name} cols {cols} k {k} matmul vs scalar token {t} row {r} seed={seed}");
                        check_close(ys[t * rows + r], ys_s[t * rows + r], dot_tol(m, r, x), &what);
                    }
                    let mut yt = vec![0.5; cols];
                    for (j, &b) in union.iter().enumerate() {
                        let b = b as usize;
                        let mut v = vec![0.0; de];
                        let s = scores[t * ne + b];
                        if s != 0.0 {
                            avx2::matvec(m.row_range(b * de, (b + 1) * de), x, &mut v);
                            blockffn::kernels::silu_scaled(&mut v, s);
                        }
                        let i0 = (t * nu + j) * de;
                        assert!(same(&v, &u[i0..][..de]), "{name} cols {cols} k {k} chunk_up token {t} seed={seed}");
                        for r in 0..de {
                            let (got, want) = (u[i0 + r], u_s[i0 + r]);
                            let what =
                                || format!("{name} cols {cols} k {k} chunk_up vs scalar t={t} b={b} r={r} seed={seed}");
                            if s == 0.0 {
                                assert!(got == 0.0 && want == 0.0, "{}: zero score gives {got}/{want}", what());
                                continue;
                            }
                            let tol =
                                1.1 * s.abs() as f64 * dot_tol(m, b * de + r, x) + 1e-6 * want.abs() as f64 + 1e-40;
                            check_close(got, want, tol, &what);
                        }
                        avx2::axpy_rows(m.row_range(b * de, (b + 1) * de), &v, &mut yt);
                    }
                    assert!(
                        same(&yt, &yd[t * cols..(t + 1) * cols]),
                        "{name} cols {cols} k {k} chunk_down token {t} seed={seed}"
                    );
                }
                let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&yd), bits(&yd_s), "{name} cols {cols} k {k} chunk_down vs scalar seed={seed}");
            }
        }
    }
}
