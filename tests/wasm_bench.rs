//! Kernel benchmark: scalar vs SIMD128 GEMV at BlockFFN-Small shapes, single-threaded under Node.
//! Ignored by default; run with
//!
//! ```text
//! cargo test --target wasm32-unknown-unknown --release --test wasm_bench -- --include-ignored --nocapture
//! ```
//!
//! Each case is warmed up (so V8 has tiered the kernel up to its optimising compiler), then timed
//! in batches of calls lasting ≥ 40 ms, scalar and SIMD batches alternating (9 of each, 3 for the
//! LM head); the table reports the median time per call. Filter with the test name:
//! `bench_f32`, `bench_f16`, `bench_lm_head_f16`. GFLOP/s counts
//! 2 flops per weight read (multiply + add); GB/s counts weight bytes only (the input and output
//! vectors are a few KB and stay in cache).
#![cfg(target_arch = "wasm32")]

use blockffn::kernels::{scalar, simd128};
use blockffn::weights::Mat;
use half::f16;
use wasm_bindgen::JsCast;
use wasm_bindgen_test::*;

/// Milliseconds from `performance.now()` (sub-millisecond resolution in Node).
fn now_ms() -> f64 {
    let perf = js_sys::Reflect::get(&js_sys::global(), &"performance".into()).expect("performance");
    let f: js_sys::Function = js_sys::Reflect::get(&perf, &"now".into()).expect("performance.now").unchecked_into();
    f.call0(&perf).expect("performance.now()").as_f64().expect("a number")
}

/// Warms `f` up (at least 3 calls and 200 ms, so V8 has tiered it up to its optimising compiler)
/// and returns how many calls make a batch of ≥ 40 ms, and the time of one call.
fn warm(f: &mut impl FnMut()) -> (usize, f64) {
    let t0 = now_ms();
    let mut calls = 0;
    while calls < 3 || now_ms() - t0 < 200.0 {
        f();
        calls += 1;
    }
    let per_call = (now_ms() - t0) / calls as f64;
    (((40.0 / per_call).ceil() as usize).max(1), per_call)
}

/// Milliseconds per call of one batch.
fn batch(f: &mut impl FnMut(), calls: usize) -> f64 {
    let t = now_ms();
    for _ in 0..calls {
        f();
    }
    (now_ms() - t) / calls as f64
}

/// Median milliseconds per call of `a` and of `b`, timed in alternating batches so that load from
/// other processes affects both alike.
fn time_pair(mut a: impl FnMut(), mut b: impl FnMut()) -> (f64, f64) {
    let (na, ta) = warm(&mut a);
    let (nb, tb) = warm(&mut b);
    let batches = if ta.max(tb) > 300.0 { 3 } else { 9 };
    let (mut sa, mut sb) = (Vec::new(), Vec::new());
    for _ in 0..batches {
        sa.push(batch(&mut a, na));
        sb.push(batch(&mut b, nb));
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    (median(sa), median(sb))
}

struct Rng(u64);

impl Rng {
    fn sym(&mut self) -> f32 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        (z >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
    fn vec(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.sym()).collect()
    }
}

/// One kernel set: the scalar twins or the SIMD128 kernels.
struct Kernels {
    matvec: fn(Mat, &[f32], &mut [f32]),
    axpy_rows: fn(Mat, &[f32], &mut [f32]),
    axpy_rows_dense: fn(Mat, &[f32], &mut [f32]),
}

const SCALAR: Kernels =
    Kernels { matvec: scalar::matvec, axpy_rows: scalar::axpy_rows, axpy_rows_dense: scalar::axpy_rows_dense };
const SIMD: Kernels =
    Kernels { matvec: simd128::matvec, axpy_rows: simd128::axpy_rows, axpy_rows_dense: simd128::axpy_rows_dense };

const HIDDEN: usize = 768;
const EXPERTS: usize = 48;
const EXPERT_SIZE: usize = 64;

/// One row of the table: times `run(scalar kernels)` and `run(simd kernels)`.
fn report(name: &str, dtype: &str, weights: usize, elem_bytes: usize, run: impl Fn(&Kernels)) {
    let (ts, tv) = time_pair(|| run(&SCALAR), || run(&SIMD));
    let gflop = |t: f64| 2.0 * weights as f64 / (t * 1e6);
    let gbs = |t: f64| (weights * elem_bytes) as f64 / (t * 1e6);
    console_log!(
        "| {name} | {dtype} | {ts:.3} | {tv:.3} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2}× |",
        gflop(ts),
        gflop(tv),
        gbs(ts),
        gbs(tv),
        ts / tv
    );
}

/// The sparse BlockFFN layer's kernel work for `active` experts: up projection of each active
/// expert (`[64, 768]` matvec) and its down projection (axpy over the expert's 64 rows).
fn sparse_ffn(up: Mat, down: Mat, x: &[f32], active: &[usize], k: &Kernels) {
    let mut u = [0.0f32; EXPERT_SIZE];
    let mut out = vec![0.0f32; HIDDEN];
    for &e in active {
        let (r0, r1) = (e * EXPERT_SIZE, (e + 1) * EXPERT_SIZE);
        (k.matvec)(up.row_range(r0, r1), x, &mut u);
        // Activation stand-in: keep u nonzero and bounded, as SiLU·score would be.
        for v in u.iter_mut() {
            *v = v.abs() * 0.01 + 1e-3;
        }
        (k.axpy_rows)(down.row_range(r0, r1), &u, &mut out);
    }
    core::hint::black_box(&out);
}

#[wasm_bindgen_test]
#[ignore]
fn bench_f32() {
    bench_dtype("f32");
}

#[wasm_bindgen_test]
#[ignore]
fn bench_f16() {
    bench_dtype("f16");
}

fn header() {
    console_log!("Kernel benchmark, one thread, Node {}.", node_version());
    console_log!("| case | dtype | scalar ms | SIMD ms | scalar GFLOP/s | SIMD GFLOP/s | scalar GB/s | SIMD GB/s | SIMD/scalar |");
    console_log!("|---|---|---|---|---|---|---|---|---|");
}

fn bench_dtype(dtype: &str) {
    let mut rng = Rng(0x5eed);
    let x = rng.vec(HIDDEN);
    let ffn_rows = EXPERTS * EXPERT_SIZE;
    // 20% ≈ 10 of 48 experts, 10% ≈ 5 of 48, spread over the layer.
    let act20: Vec<usize> = (0..10).map(|i| (i * 48) / 10).collect();
    let act10: Vec<usize> = (0..5).map(|i| (i * 48) / 5 + 1).collect();

    header();
    {
        let size = if dtype == "f32" { 4 } else { 2 };
        let wq = rng.vec(HIDDEN * HIDDEN);
        let wup = rng.vec(ffn_rows * HIDDEN);
        let wdown = rng.vec(ffn_rows * HIDDEN);
        let (wq16, wup16, wdown16) = (to16(&wq), to16(&wup), to16(&wdown));
        let q = mat(dtype, &wq, &wq16, HIDDEN);
        let up = mat(dtype, &wup, &wup16, ffn_rows);
        let down = mat(dtype, &wdown, &wdown16, ffn_rows);
        report("matvec 768×768 (attention proj.)", dtype, HIDDEN * HIDDEN, size, |k| {
            let mut y = vec![0.0; HIDDEN];
            (k.matvec)(q, &x, &mut y);
            core::hint::black_box(&y);
        });
        report("matvec 3072×768 (all-expert up, dense)", dtype, ffn_rows * HIDDEN, size, |k| {
            let mut y = vec![0.0; ffn_rows];
            (k.matvec)(up, &x, &mut y);
            core::hint::black_box(&y);
        });
        let c = rng.vec(ffn_rows);
        report("axpy_rows_dense 3072×768 (all-expert down, dense)", dtype, ffn_rows * HIDDEN, size, |k| {
            let mut y = vec![0.0; HIDDEN];
            (k.axpy_rows_dense)(down, &c, &mut y);
            core::hint::black_box(&y);
        });
        for (label, act) in [
            ("sparse FFN up+down, 10/48 experts (20.8%)", &act20),
            ("sparse FFN up+down, 5/48 experts (10.4%)", &act10),
        ] {
            let weights = 2 * act.len() * EXPERT_SIZE * HIDDEN;
            report(label, dtype, weights, size, |k| sparse_ffn(up, down, &x, act, k));
        }
    }
    if dtype == "f16" {
        // Worst case for the f16 widening: every eighth weight zero or subnormal, so most
        // 8-element vectors take the general path.
        let w: Vec<f16> = (0..HIDDEN * HIDDEN)
            .map(|i| if i % 8 == 3 { f16::from_bits((i % 1024) as u16) } else { f16::from_f32(rng.sym()) })
            .collect();
        let m = Mat::F16 { data: &w, rows: HIDDEN, cols: HIDDEN };
        report("matvec 768×768, 1/8 zero/subnormal", dtype, HIDDEN * HIDDEN, 2, |k| {
            let mut y = vec![0.0; HIDDEN];
            (k.matvec)(m, &x, &mut y);
            core::hint::black_box(&y);
        });
    }
}

#[wasm_bindgen_test]
#[ignore]
fn bench_lm_head_f16() {
    header();
    let mut rng = Rng(0x1eaf);
    let x = rng.vec(HIDDEN);
    // LM head in f16: 122753 × 768 (≈ 189 MB of weights).
    let vocab = 122_753;
    let head: Vec<f16> = (0..vocab * HIDDEN).map(|_| f16::from_f32(rng.sym() * 0.05)).collect();
    let hm = Mat::F16 { data: &head, rows: vocab, cols: HIDDEN };
    report("matvec 122753×768 (LM head)", "f16", vocab * HIDDEN, 2, |k| {
        let mut y = vec![0.0; vocab];
        (k.matvec)(hm, &x, &mut y);
        core::hint::black_box(&y);
    });
}

fn mat<'a>(dtype: &str, f: &'a [f32], h: &'a [f16], rows: usize) -> Mat<'a> {
    if dtype == "f32" {
        Mat::F32 { data: f, rows, cols: HIDDEN }
    } else {
        Mat::F16 { data: h, rows, cols: HIDDEN }
    }
}

fn to16(v: &[f32]) -> Vec<f16> {
    v.iter().map(|&a| f16::from_f32(a)).collect()
}

fn node_version() -> String {
    let process = js_sys::Reflect::get(&js_sys::global(), &"process".into()).expect("process");
    js_sys::Reflect::get(&process, &"version".into()).ok().and_then(|v| v.as_string()).unwrap_or_default()
}
