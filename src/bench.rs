//! Kernel benchmarks that run inside the shipped wasm module (exported as `benchKernels`, driven
//! by `bench/run.mjs`), so the numbers are those of the build users get. Nothing here is used by
//! the engine.
//!
//! Every case times the scalar twins and the SIMD128 kernels in alternating batches (load from
//! other processes hits both alike) and reports medians. Shapes are BlockFFN-Small's (hidden 768,
//! 48 experts × 64, 16 layers, vocab 122,753). GFLOP/s counts 2 flops per weight used, GB/s the
//! weight bytes read (vectors are a few KB and stay in cache).
//!
//! Besides the kernels it measures this machine's roofline in the same run: streaming read
//! bandwidth (SIMD sum over 256 MiB) and SIMD f32 peak (independent multiply-add chains in
//! registers), and a decode step at Small shapes composed of the engine's kernels (attention
//! projections as one GEMV of the same size, router, FFN dense / sparse at 20% and 10%, LM head),
//! with all weights cold in memory.
//!
//! `benchSpans` times a loaded model end to end in "chunk mode" (spans of k tokens with the KV cache).

use half::f16;
use serde::{Deserialize, Serialize};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;

use crate::kernels::{scalar, simd128};
use crate::model::{FfnMode, Logits};
use crate::tensor::{quantize_q8, Mat, Q8_BLOCK};

pub const HIDDEN: usize = 768;
pub const EXPERTS: usize = 48;
pub const EXPERT_SIZE: usize = 64;
pub const LAYERS: usize = 16;
pub const VOCAB: usize = 122_753;
/// Attention weights of one BlockFFN-Small layer (MLA, SPEC §5), as rows of 768.
pub const ATTN_ROWS: usize = 2_704_384 / HIDDEN;

/// Milliseconds from `performance.now()`.
pub fn now_ms() -> f64 {
    let perf = js_sys::Reflect::get(&js_sys::global(), &"performance".into()).expect("performance");
    let f: js_sys::Function = js_sys::Reflect::get(&perf, &"now".into()).expect("performance.now").unchecked_into();
    f.call0(&perf).expect("performance.now()").as_f64().expect("a number")
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Warms `f` up (≥ 3 calls and ≥ `warm_ms`, so V8 has tiered it up) and returns how many calls
/// make a batch of ≥ 40 ms.
fn warm(f: &mut impl FnMut(), warm_ms: f64) -> usize {
    let t0 = now_ms();
    let mut calls = 0;
    while calls < 3 || now_ms() - t0 < warm_ms {
        f();
        calls += 1;
    }
    let per_call = (now_ms() - t0) / calls as f64;
    ((40.0 / per_call).ceil() as usize).max(1)
}

fn batch(f: &mut impl FnMut(), calls: usize) -> f64 {
    let t = now_ms();
    for _ in 0..calls {
        f();
    }
    (now_ms() - t) / calls as f64
}

/// Median milliseconds per call of each closure, timed in alternating batches.
pub fn time_alternating(fs: &mut [&mut dyn FnMut()], rounds: usize) -> Vec<f64> {
    let ns: Vec<usize> = fs.iter_mut().map(|f| warm(f, 150.0)).collect();
    let mut samples = vec![Vec::new(); fs.len()];
    for _ in 0..rounds {
        for (i, f) in fs.iter_mut().enumerate() {
            samples[i].push(batch(f, ns[i]));
        }
    }
    samples.into_iter().map(median).collect()
}

/// SplitMix64 numbers in [-1, 1).
pub struct Rng(pub u64);

impl Rng {
    pub fn sym(&mut self) -> f32 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        (z >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
    pub fn vec(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.sym()).collect()
    }
    pub fn below(&mut self, n: usize) -> usize {
        (((self.sym() + 1.0) * 0.5 * n as f32) as usize).min(n - 1)
    }
}

/// `chunk_up`'s signature (matrix, block rows, union, token inputs, scores, experts, activations).
pub type ChunkUpFn = fn(Mat, usize, &[u16], &[f32], &[f32], usize, &mut [f32]);

/// One kernel set: the scalar twins or the SIMD128 kernels.
pub struct Kernels {
    pub matvec: fn(Mat, &[f32], &mut [f32]),
    pub axpy_rows: fn(Mat, &[f32], &mut [f32]),
    pub axpy_rows_dense: fn(Mat, &[f32], &mut [f32]),
    pub chunk_up: ChunkUpFn,
    pub chunk_down: fn(Mat, usize, &[u16], &[f32], &mut [f32]),
}

pub const SCALAR: Kernels = Kernels {
    matvec: scalar::matvec,
    axpy_rows: scalar::axpy_rows,
    axpy_rows_dense: scalar::axpy_rows_dense,
    chunk_up: scalar::chunk_up,
    chunk_down: scalar::chunk_down,
};
pub const SIMD: Kernels = Kernels {
    matvec: simd128::matvec,
    axpy_rows: simd128::axpy_rows,
    axpy_rows_dense: simd128::axpy_rows_dense,
    chunk_up: simd128::chunk_up,
    chunk_down: simd128::chunk_down,
};

/// A weight matrix owned in one of the benchmarked formats.
pub enum Owned {
    F32(Vec<f32>),
    F16(Vec<f16>),
    Q8(Vec<i8>, Vec<f32>),
}

impl Owned {
    /// Random weights in [-scale, scale) stored as `dtype` (f32 | f16 | q8).
    pub fn random(dtype: &str, n: usize, scale: f32, rng: &mut Rng) -> Owned {
        match dtype {
            "f16" => Owned::F16((0..n).map(|_| f16::from_f32(rng.sym() * scale)).collect()),
            "q8" => {
                let w: Vec<f32> = (0..n).map(|_| rng.sym() * scale).collect();
                let (q, s) = quantize_q8(&w).expect("whole q8 blocks");
                Owned::Q8(q, s)
            }
            _ => Owned::F32((0..n).map(|_| rng.sym() * scale).collect()),
        }
    }
    pub fn mat(&self, rows: usize, cols: usize) -> Mat<'_> {
        match self {
            Owned::F32(d) => Mat::F32 { data: d, rows, cols },
            Owned::F16(d) => Mat::F16 { data: d, rows, cols },
            Owned::Q8(d, s) => Mat::Q8 { data: d, scales: s, rows, cols },
        }
    }
    /// Bytes per weight as stored (q8: one byte + a 4-byte scale per 32).
    pub fn bytes_per_weight(dtype: &str) -> f64 {
        match dtype {
            "f16" => 2.0,
            "q8" => 1.0 + 4.0 / Q8_BLOCK as f64,
            _ => 4.0,
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct Options {
    dtypes: Vec<String>,
    /// Include the LM head GEMV (122,753 × 768).
    lm_head: bool,
    /// Include the composed decode step at Small shapes (all 16 layers).
    decode: bool,
    /// Time the scalar twins too (the decode step's scalar run is slow).
    scalar: bool,
    rounds: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            dtypes: vec!["f32".into(), "f16".into(), "q8".into()],
            lm_head: true,
            decode: true,
            scalar: true,
            rounds: 7,
        }
    }
}

#[derive(Serialize, Default)]
#[serde(rename_all = "camelCase")]
struct Row {
    group: String,
    case: String,
    dtype: String,
    /// Weights read per call and the flops they imply (2 per weight per token).
    weights: f64,
    flops: f64,
    bytes: f64,
    simd_ms: f64,
    simd_gflops: f64,
    simd_gbs: f64,
    scalar_ms: Option<f64>,
    simd_over_scalar: Option<f64>,
    /// Extra numbers of the case (ratios, roofline fraction).
    #[serde(skip_serializing_if = "serde_json::Map::is_empty")]
    extra: serde_json::Map<String, serde_json::Value>,
}

fn row(group: &str, case: &str, dtype: &str, weights: f64, tokens: f64, simd_ms: f64, scalar_ms: Option<f64>) -> Row {
    let bytes = weights * Owned::bytes_per_weight(dtype);
    let flops = 2.0 * weights * tokens;
    Row {
        group: group.into(),
        case: case.into(),
        dtype: dtype.into(),
        weights,
        flops,
        bytes,
        simd_ms,
        simd_gflops: flops / (simd_ms * 1e6),
        simd_gbs: bytes / (simd_ms * 1e6),
        scalar_ms,
        simd_over_scalar: scalar_ms.map(|s| s / simd_ms),
        extra: Default::default(),
    }
}

/// Times `f(SIMD)` and, when asked, `f(SCALAR)` in alternating batches; returns (simd, scalar) ms.
fn pair(o: &Options, f: impl FnMut(&Kernels)) -> (f64, Option<f64>) {
    let f = core::cell::RefCell::new(f);
    let mut a = || (f.borrow_mut())(&SIMD);
    if o.scalar {
        let mut b = || (f.borrow_mut())(&SCALAR);
        let t = time_alternating(&mut [&mut a, &mut b], o.rounds);
        (t[0], Some(t[1]))
    } else {
        (time_alternating(&mut [&mut a], o.rounds)[0], None)
    }
}

/// As [`pair`], with a streaming-bandwidth measurement over `big` in the same alternation, so
/// rows that stream weights from memory get the bandwidth of the moment they ran (these machines'
/// memory bandwidth moves with their neighbours' load). Returns (simd, scalar, GB/s).
fn pair_stream(o: &Options, big: &[f32], f: impl FnMut(&Kernels)) -> (f64, Option<f64>, f64) {
    let f = core::cell::RefCell::new(f);
    let mut a = || (f.borrow_mut())(&SIMD);
    let mut bw = || stream_once(big);
    if o.scalar {
        let mut b = || (f.borrow_mut())(&SCALAR);
        let t = time_alternating(&mut [&mut a, &mut b, &mut bw], o.rounds);
        (t[0], Some(t[1]), (big.len() * 4) as f64 / (t[2] * 1e6))
    } else {
        let t = time_alternating(&mut [&mut a, &mut bw], o.rounds);
        (t[0], None, (big.len() * 4) as f64 / (t[1] * 1e6))
    }
}

/// Activation stand-in between up and down projections: keeps values non-zero and bounded, as
/// SiLU × router score would.
fn act(u: &mut [f32]) {
    for v in u.iter_mut() {
        *v = v.abs() * 0.01 + 1e-3;
    }
}

/// One token through a BlockFFN layer's active experts: up rows `[64, 768]` per expert, then the
/// expert's down rows as an axpy.
fn sparse_ffn(k: &Kernels, up: Mat, down: Mat, x: &[f32], active: &[usize], out: &mut [f32]) {
    let mut u = [0.0f32; EXPERT_SIZE];
    for &e in active {
        let (r0, r1) = (e * EXPERT_SIZE, (e + 1) * EXPERT_SIZE);
        (k.matvec)(up.row_range(r0, r1), x, &mut u);
        act(&mut u);
        (k.axpy_rows)(down.row_range(r0, r1), &u, out);
    }
}

/// Every expert: one up GEMV over all 3072 rows and one dense down pass.
fn dense_ffn(k: &Kernels, up: Mat, down: Mat, x: &[f32], u: &mut [f32], out: &mut [f32]) {
    (k.matvec)(up, x, u);
    act(u);
    (k.axpy_rows_dense)(down, u, out);
}

/// `count` distinct experts out of `EXPERTS`, sorted.
fn pick(rng: &mut Rng, pool: &[usize], count: usize) -> Vec<usize> {
    let mut p = pool.to_vec();
    for i in 0..count {
        let j = i + rng.below(p.len() - i);
        p.swap(i, j);
    }
    let mut s = p[..count].to_vec();
    s.sort_unstable();
    s
}

/// Streaming read bandwidth in GB/s: SIMD sum over `n` f32 (4 independent accumulators).
fn stream_gbs(o: &Options, buf: &[f32]) -> f64 {
    let t = time_alternating(&mut [&mut || stream_once(buf)], o.rounds);
    (buf.len() * 4) as f64 / (t[0] * 1e6)
}

/// One SIMD pass summing `buf` (4 independent accumulators).
fn stream_once(buf: &[f32]) {
    use core::arch::wasm32::*;
    let sum = || {
        let (mut a, mut b, mut c, mut d) = (f32x4_splat(0.0), f32x4_splat(0.0), f32x4_splat(0.0), f32x4_splat(0.0));
        for ch in buf.chunks_exact(16) {
            // SAFETY: each chunk holds 16 f32; unaligned v128 loads are allowed in wasm.
            unsafe {
                let p = ch.as_ptr() as *const v128;
                a = f32x4_add(a, v128_load(p));
                b = f32x4_add(b, v128_load(p.add(1)));
                c = f32x4_add(c, v128_load(p.add(2)));
                d = f32x4_add(d, v128_load(p.add(3)));
            }
        }
        core::hint::black_box(f32x4_add(f32x4_add(a, b), f32x4_add(c, d)));
    };
    sum()
}

/// SIMD f32 peak in GFLOP/s: 8 independent multiply-add chains in registers, with the kernels'
/// multiply-add (`simd128::madd`: a multiply and an add in baseline SIMD128, fused in the
/// relaxed-SIMD build), 8 flops per 4 lanes either way.
fn peak_gflops(o: &Options) -> f64 {
    use core::arch::wasm32::*;
    const ITERS: usize = 4_000_000;
    let m = f32x4_splat(core::hint::black_box(0.999_999));
    let c = f32x4_splat(core::hint::black_box(1e-7));
    let mut run = || {
        let mut acc = [f32x4_splat(1.0); 8];
        for _ in 0..ITERS {
            for a in acc.iter_mut() {
                *a = simd128::madd(c, *a, m);
            }
        }
        core::hint::black_box(acc);
    };
    let t = time_alternating(&mut [&mut run], o.rounds);
    (ITERS * 8 * 8) as f64 / (t[0] * 1e6)
}

/// One layer's weights of the composed Small decode step.
struct Layer {
    attn: Owned,
    router: Vec<f32>,
    up: Owned,
    down: Owned,
}

#[derive(Clone, Copy, PartialEq)]
enum Step {
    Dense,
    Sparse(usize),
}

/// One decode step at Small shapes: per layer the attention projections (one GEMV of the same
/// weight count), the router, the FFN; then the LM head. Attention over the KV cache, norms and
/// RoPE are left out (at short contexts they are < 1% of the weights' work).
fn decode_step(k: &Kernels, layers: &[Layer], head: Mat, sets: &[Vec<usize>], mode: Step, bufs: &mut DecodeBufs) {
    let x = &mut bufs.x;
    for (l, layer) in layers.iter().enumerate() {
        (k.matvec)(layer.attn.mat(ATTN_ROWS, HIDDEN), x, &mut bufs.attn);
        (k.matvec)(Mat::F32 { data: &layer.router, rows: EXPERTS, cols: HIDDEN }, x, &mut bufs.router);
        let up = layer.up.mat(EXPERTS * EXPERT_SIZE, HIDDEN);
        let down = layer.down.mat(EXPERTS * EXPERT_SIZE, HIDDEN);
        bufs.out.iter_mut().for_each(|v| *v = 0.0);
        match mode {
            Step::Dense => dense_ffn(k, up, down, x, &mut bufs.u, &mut bufs.out),
            Step::Sparse(_) => sparse_ffn(k, up, down, x, &sets[l], &mut bufs.out),
        }
        for (a, b) in x.iter_mut().zip(&bufs.out) {
            *a = (*a + b * 1e-3).clamp(-1.0, 1.0);
        }
    }
    (k.matvec)(head, x, &mut bufs.logits);
    core::hint::black_box(&bufs.logits);
}

struct DecodeBufs {
    x: Vec<f32>,
    attn: Vec<f32>,
    router: Vec<f32>,
    u: Vec<f32>,
    out: Vec<f32>,
    logits: Vec<f32>,
}

/// Runs the whole suite; see the module comment. Returns `{ rows, machine }`.
#[wasm_bindgen(js_name = benchKernels)]
pub fn bench_kernels(options: JsValue) -> Result<JsValue, JsValue> {
    let o: Options = if options.is_undefined() || options.is_null() {
        Options::default()
    } else {
        serde_wasm_bindgen::from_value(options).map_err(|e| JsValue::from_str(&format!("benchKernels options: {e}")))?
    };
    let mut rows: Vec<Row> = Vec::new();
    let mut rng = Rng(0x5eed);
    let x = rng.vec(HIDDEN);
    let ffn_rows = EXPERTS * EXPERT_SIZE;

    // The machine: streaming bandwidth and SIMD peak, measured first and last (their mean is used).
    let big = rng.vec(64 << 20);
    let bw0 = stream_gbs(&o, &big);
    let peak0 = peak_gflops(&o);

    for dtype in &o.dtypes {
        let dt = dtype.as_str();
        let wq = Owned::random(dt, HIDDEN * HIDDEN, 0.05, &mut rng);
        let up = Owned::random(dt, ffn_rows * HIDDEN, 0.05, &mut rng);
        let down = Owned::random(dt, ffn_rows * HIDDEN, 0.05, &mut rng);
        let (q, upm, downm) = (wq.mat(HIDDEN, HIDDEN), up.mat(ffn_rows, HIDDEN), down.mat(ffn_rows, HIDDEN));
        let w_ffn = (2 * ffn_rows * HIDDEN) as f64;

        let (s, sc) = pair(&o, |k| {
            let mut y = [0.0f32; HIDDEN];
            (k.matvec)(q, &x, &mut y);
            core::hint::black_box(&y);
        });
        rows.push(row("kernel", "GEMV 768×768 (attention projection)", dt, (HIDDEN * HIDDEN) as f64, 1.0, s, sc));
        let (s, sc) = pair(&o, |k| {
            let mut y = vec![0.0f32; ffn_rows];
            (k.matvec)(upm, &x, &mut y);
            core::hint::black_box(&y);
        });
        rows.push(row("kernel", "GEMV 3072×768 (FFN up, all experts)", dt, (ffn_rows * HIDDEN) as f64, 1.0, s, sc));
        let (dense_ms, sc) = pair(&o, |k| {
            let (mut u, mut out) = (vec![0.0f32; ffn_rows], vec![0.0f32; HIDDEN]);
            dense_ffn(k, upm, downm, &x, &mut u, &mut out);
            core::hint::black_box(&out);
        });
        rows.push(row("ffn", "dense FFN layer (up + down, 48/48 experts)", dt, w_ffn, 1.0, dense_ms, sc));
        for (n_act, label) in
            [(10usize, "sparse FFN layer, 10/48 experts (20.8%)"), (5, "sparse FFN layer, 5/48 experts (10.4%)")]
        {
            let active: Vec<usize> = (0..n_act).map(|i| (i * EXPERTS) / n_act + (n_act == 5) as usize).collect();
            let (s, sc) = pair(&o, |k| {
                let mut out = [0.0f32; HIDDEN];
                sparse_ffn(k, upm, downm, &x, &active, &mut out);
                core::hint::black_box(&out);
            });
            let frac = n_act as f64 / EXPERTS as f64;
            let mut r = row("ffn", label, dt, w_ffn * frac, 1.0, s, sc);
            r.extra.insert("activeFraction".into(), frac.into());
            r.extra.insert("sparseOverDense".into(), (s / dense_ms).into());
            r.extra.insert("sparseOverFractionDense".into(), (s / (frac * dense_ms)).into());
            rows.push(r);
        }

        // Chunk verification: 8 tokens with 10 active experts each, drawn from a union of `nu`.
        for nu in [14usize, 25] {
            let kt = 8usize;
            let all: Vec<usize> = (0..EXPERTS).collect();
            let pool = pick(&mut rng, &all, nu);
            let sets: Vec<Vec<usize>> = (0..kt).map(|_| pick(&mut rng, &pool, 10)).collect();
            let union: Vec<u16> = {
                let mut u: Vec<u16> = sets.iter().flatten().map(|&e| e as u16).collect();
                u.sort_unstable();
                u.dedup();
                u
            };
            let xs = rng.vec(kt * HIDDEN);
            let mut scores = vec![0.0f32; kt * EXPERTS];
            for (t, s) in sets.iter().enumerate() {
                for &e in s {
                    scores[t * EXPERTS + e] = 0.5;
                }
            }
            let ts = time_alternating(
                &mut [
                    &mut || {
                        let mut u = vec![0.0f32; kt * union.len() * EXPERT_SIZE];
                        let mut ys = vec![0.0f32; kt * HIDDEN];
                        (SIMD.chunk_up)(upm, EXPERT_SIZE, &union, &xs, &scores, EXPERTS, &mut u);
                        (SIMD.chunk_down)(downm, EXPERT_SIZE, &union, &u, &mut ys);
                        core::hint::black_box(&ys);
                    },
                    &mut || {
                        let mut out = [0.0f32; HIDDEN];
                        sparse_ffn(&SIMD, upm, downm, &xs[..HIDDEN], &sets[0], &mut out);
                        core::hint::black_box(&out);
                    },
                    &mut || {
                        for (t, s) in sets.iter().enumerate() {
                            let mut out = [0.0f32; HIDDEN];
                            sparse_ffn(&SIMD, upm, downm, &xs[t * HIDDEN..(t + 1) * HIDDEN], s, &mut out);
                            core::hint::black_box(&out);
                        }
                    },
                ],
                o.rounds,
            );
            let (chunk_ms, one_ms, seq_ms) = (ts[0], ts[1], ts[2]);
            // The two halves apart: up (dot products + SiLU) and down (row accumulation).
            let mut u = vec![0.0f32; kt * union.len() * EXPERT_SIZE];
            (SIMD.chunk_up)(upm, EXPERT_SIZE, &union, &xs, &scores, EXPERTS, &mut u);
            let halves = time_alternating(
                &mut [
                    &mut || {
                        let mut u = vec![0.0f32; kt * union.len() * EXPERT_SIZE];
                        (SIMD.chunk_up)(upm, EXPERT_SIZE, &union, &xs, &scores, EXPERTS, &mut u);
                        core::hint::black_box(&u);
                    },
                    &mut || {
                        let mut ys = vec![0.0f32; kt * HIDDEN];
                        (SIMD.chunk_down)(downm, EXPERT_SIZE, &union, &u, &mut ys);
                        core::hint::black_box(&ys);
                    },
                ],
                o.rounds,
            );
            let cls8 = 1.0 - union.len() as f64 / EXPERTS as f64;
            let label = format!("chunk of 8 tokens × 10 experts, union {} of 48 (CLS_8 {cls8:.2})", union.len());
            let mut r = row("chunk", &label, dt, w_ffn * union.len() as f64 / EXPERTS as f64, 1.0, chunk_ms, None);
            r.flops = 2.0 * (kt * 10 * 2 * EXPERT_SIZE * HIDDEN) as f64;
            r.simd_gflops = r.flops / (chunk_ms * 1e6);
            r.extra.insert("oneTokenMs".into(), one_ms.into());
            r.extra.insert("eightTokensOneByOneMs".into(), seq_ms.into());
            r.extra.insert("chunkOverOneToken".into(), (chunk_ms / one_ms).into());
            r.extra.insert("upMs".into(), halves[0].into());
            r.extra.insert("downMs".into(), halves[1].into());
            rows.push(r);
        }
        drop((wq, up, down));

        if o.lm_head {
            let head = Owned::random(dt, VOCAB * HIDDEN, 0.05, &mut rng);
            let hm = head.mat(VOCAB, HIDDEN);
            let (s, sc, bw) = pair_stream(&o, &big, |k| {
                let mut y = vec![0.0f32; VOCAB];
                (k.matvec)(hm, &x, &mut y);
                core::hint::black_box(&y);
            });
            let mut r = row("kernel", "LM head GEMV 122,753×768", dt, (VOCAB * HIDDEN) as f64, 1.0, s, sc);
            r.extra.insert("streamGBs".into(), bw.into());
            rows.push(r);
        }

        if o.decode {
            let layers: Vec<Layer> = (0..LAYERS)
                .map(|_| Layer {
                    attn: Owned::random(dt, ATTN_ROWS * HIDDEN, 0.05, &mut rng),
                    router: rng.vec(EXPERTS * HIDDEN),
                    up: Owned::random(dt, ffn_rows * HIDDEN, 0.05, &mut rng),
                    down: Owned::random(dt, ffn_rows * HIDDEN, 0.05, &mut rng),
                })
                .collect();
            let head = Owned::random(dt, VOCAB * HIDDEN, 0.05, &mut rng);
            let hm = head.mat(VOCAB, HIDDEN);
            let all: Vec<usize> = (0..EXPERTS).collect();
            let mut bufs = DecodeBufs {
                x: x.clone(),
                attn: vec![0.0; ATTN_ROWS],
                router: vec![0.0; EXPERTS],
                u: vec![0.0; ffn_rows],
                out: vec![0.0; HIDDEN],
                logits: vec![0.0; VOCAB],
            };
            let bpw = Owned::bytes_per_weight(dt);
            let mut dense_ms = 0.0;
            for mode in [Step::Dense, Step::Sparse(10), Step::Sparse(5)] {
                let n_act = match mode {
                    Step::Dense => EXPERTS,
                    Step::Sparse(n) => n,
                };
                let sets: Vec<Vec<usize>> = (0..LAYERS).map(|_| pick(&mut rng, &all, n_act)).collect();
                let (s, sc, bw) = pair_stream(&o, &big, |k| decode_step(k, &layers, hm, &sets, mode, &mut bufs));
                let w_layer = (ATTN_ROWS * HIDDEN + n_act * 2 * EXPERT_SIZE * HIDDEN) as f64;
                let weights = LAYERS as f64 * (w_layer + (EXPERTS * HIDDEN) as f64) + (VOCAB * HIDDEN) as f64;
                let bytes =
                    LAYERS as f64 * (w_layer * bpw + (EXPERTS * HIDDEN * 4) as f64) + (VOCAB * HIDDEN) as f64 * bpw;
                let label = match mode {
                    Step::Dense => "decode step, Small shapes, dense (48/48 experts)".to_string(),
                    Step::Sparse(n) => {
                        format!("decode step, Small shapes, sparse {n}/48 experts ({:.0}%)", n as f64 / 0.48)
                    }
                };
                let mut r = row("decode", &label, dt, weights, 1.0, s, sc);
                r.bytes = bytes;
                r.simd_gbs = bytes / (s * 1e6);
                r.extra.insert("tokensPerSecond".into(), (1000.0 / s).into());
                r.extra.insert("streamGBs".into(), bw.into());
                if mode == Step::Dense {
                    dense_ms = s;
                } else {
                    r.extra.insert("denseOverSparse".into(), (dense_ms / s).into());
                }
                rows.push(r);
            }

            // Chunk verification inside the model: the same 8 tokens × 10 experts (union of 14 per
            // layer) through all 16 layers' FFNs, so every layer's experts come from memory as in
            // decoding, against one token through the same 16 layers.
            let kt = 8usize;
            // Per layer: the 8 tokens' active sets, their union, the scores (k × experts).
            type Chunk = (Vec<Vec<usize>>, Vec<u16>, Vec<f32>);
            let per_layer: Vec<Chunk> = (0..LAYERS)
                .map(|_| {
                    let pool = pick(&mut rng, &all, 14);
                    let sets: Vec<Vec<usize>> = (0..kt).map(|_| pick(&mut rng, &pool, 10)).collect();
                    let mut union: Vec<u16> = sets.iter().flatten().map(|&e| e as u16).collect();
                    union.sort_unstable();
                    union.dedup();
                    let mut scores = vec![0.0f32; kt * EXPERTS];
                    for (t, set) in sets.iter().enumerate() {
                        for &e in set {
                            scores[t * EXPERTS + e] = 0.5;
                        }
                    }
                    (sets, union, scores)
                })
                .collect();
            let xs = rng.vec(kt * HIDDEN);
            let ts = time_alternating(
                &mut [
                    &mut || {
                        for (layer, (_, union, scores)) in layers.iter().zip(&per_layer) {
                            let (up, down) = (layer.up.mat(ffn_rows, HIDDEN), layer.down.mat(ffn_rows, HIDDEN));
                            let mut u = vec![0.0f32; kt * union.len() * EXPERT_SIZE];
                            let mut ys = vec![0.0f32; kt * HIDDEN];
                            (SIMD.chunk_up)(up, EXPERT_SIZE, union, &xs, scores, EXPERTS, &mut u);
                            (SIMD.chunk_down)(down, EXPERT_SIZE, union, &u, &mut ys);
                            core::hint::black_box(&ys);
                        }
                    },
                    &mut || {
                        for (layer, (sets, _, _)) in layers.iter().zip(&per_layer) {
                            let (up, down) = (layer.up.mat(ffn_rows, HIDDEN), layer.down.mat(ffn_rows, HIDDEN));
                            let mut out = [0.0f32; HIDDEN];
                            sparse_ffn(&SIMD, up, down, &xs[..HIDDEN], &sets[0], &mut out);
                            core::hint::black_box(&out);
                        }
                    },
                ],
                o.rounds,
            );
            let (chunk_ms, one_ms) = (ts[0] / LAYERS as f64, ts[1] / LAYERS as f64);
            let mean_union = per_layer.iter().map(|p| p.1.len()).sum::<usize>() as f64 / LAYERS as f64;
            let label = format!(
                "chunk of 8 tokens × 10 experts, union {mean_union:.0} of 48, per layer over 16 layers (weights from memory)"
            );
            let mut r = row("chunk", &label, dt, w_ffn * mean_union / EXPERTS as f64, 1.0, chunk_ms, None);
            r.flops = 2.0 * (kt * 10 * 2 * EXPERT_SIZE * HIDDEN) as f64;
            r.simd_gflops = r.flops / (chunk_ms * 1e6);
            r.extra.insert("oneTokenMs".into(), one_ms.into());
            r.extra.insert("chunkOverOneToken".into(), (chunk_ms / one_ms).into());
            rows.push(r);
        }
    }

    let bw1 = stream_gbs(&o, &big);
    let peak1 = peak_gflops(&o);
    let (bw, peak) = ((bw0 + bw1) / 2.0, (peak0 + peak1) / 2.0);
    // Roofline: the time the weights' bytes need at the measured bandwidth, or their flops at the
    // measured peak, whichever is larger; the fraction is that bound over the measured time.
    for r in rows.iter_mut() {
        let row_bw = r.extra.get("streamGBs").and_then(|v| v.as_f64()).unwrap_or(bw);
        let bound_ms = (r.bytes / (row_bw * 1e6)).max(r.flops / (peak * 1e6));
        r.extra.insert("rooflineFraction".into(), (bound_ms / r.simd_ms).into());
        r.extra.insert("peakFraction".into(), (r.simd_gflops / peak).into());
    }
    let machine = serde_json::json!({
        "streamGBs": bw, "streamGBsRuns": [bw0, bw1],
        "simdPeakGflops": peak, "simdPeakGflopsRuns": [peak0, peak1],
    });
    let out = serde_json::json!({ "machine": machine, "rows": rows });
    out.serialize(&serde_wasm_bindgen::Serializer::json_compatible()).map_err(|e| JsValue::from_str(&e.to_string()))
}

/// "Chunk mode" end to end through a loaded model (exported as `benchSpans`, driven by
/// `bench/run.mjs`): `ids[..prompt]` fill the KV cache (untimed), then the rest runs in spans of `k`
/// tokens, timed, with the logits of every position. Sparse k = 1 is decoding one token at a time;
/// sparse k = 8 is `forward_chunk`, verifying 8-token drafts that are all accepted (each expert of
/// a span's union read once): the upper bound of speculative decoding with a perfect draft; `dense`
/// computes every expert. Returns `{ tokens, ms, msPerToken, tokensPerSecond, tls, cls8 }` with the
/// timed tokens' TLS and CLS_8 (`metrics::sparsity`).
#[wasm_bindgen(js_name = benchSpans)]
pub fn bench_spans(
    engine: &crate::wasm::Engine,
    ids: &[u32],
    prompt: usize,
    k: usize,
    dense: bool,
) -> Result<JsValue, JsValue> {
    let model = engine.cpu_model()?;
    let err = |e: crate::Error| JsValue::from_str(&e.to_string());
    if prompt == 0 || prompt >= ids.len() || k == 0 {
        return Err(JsValue::from_str("benchSpans: needs 0 < prompt < ids.length and k > 0"));
    }
    let mode = if dense { FfnMode::Dense } else { FfnMode::Sparse };
    let mut cache = model.new_cache().map_err(err)?;
    model.forward(&mut cache, &ids[..prompt], mode, Logits::Last).map_err(err)?;
    let mut active: Vec<Vec<Vec<u16>>> = Vec::new();
    let t0 = now_ms();
    for span in ids[prompt..].chunks(k) {
        let out = if dense {
            model.forward(&mut cache, span, FfnMode::Dense, Logits::All)
        } else {
            model.forward_chunk(&mut cache, span, Logits::All)
        }
        .map_err(err)?;
        core::hint::black_box(&out.logits);
        active.extend(out.active());
    }
    let ms = now_ms() - t0;
    let tokens = active.len();
    let sp = crate::metrics::sparsity(&[active], model.config().num_experts(), &[8]);
    let out = serde_json::json!({
        "tokens": tokens,
        "ms": ms,
        "msPerToken": ms / tokens as f64,
        "tokensPerSecond": tokens as f64 * 1000.0 / ms,
        "tls": sp.tls,
        "cls8": sp.cls.get(&8).copied().flatten(),
    });
    out.serialize(&serde_wasm_bindgen::Serializer::json_compatible()).map_err(|e| JsValue::from_str(&e.to_string()))
}

/// Median milliseconds of one SIMD GEMV `[rows, cols] · x` of `dtype` weights (random), for
/// timing against a peer runtime in alternation from JS.
#[wasm_bindgen(js_name = benchGemv)]
pub struct BenchGemv {
    w: Owned,
    rows: usize,
    cols: usize,
    x: Vec<f32>,
    y: Vec<f32>,
}

#[wasm_bindgen(js_class = benchGemv)]
impl BenchGemv {
    #[wasm_bindgen(constructor)]
    pub fn new(rows: usize, cols: usize, dtype: &str) -> BenchGemv {
        let mut rng = Rng(rows as u64 * 31 + cols as u64);
        BenchGemv {
            w: Owned::random(dtype, rows * cols, 0.05, &mut rng),
            rows,
            cols,
            x: rng.vec(cols),
            y: vec![0.0; rows],
        }
    }
    /// Runs the GEMV `calls` times; returns milliseconds per call.
    pub fn run(&mut self, calls: usize) -> f64 {
        let t = now_ms();
        for _ in 0..calls {
            simd128::matvec(self.w.mat(self.rows, self.cols), &self.x, &mut self.y);
        }
        core::hint::black_box(&self.y);
        (now_ms() - t) / calls.max(1) as f64
    }
}

/// One BlockFFN layer at Small shapes (48 experts × 64, hidden 768, `dtype` weights, random) for
/// timing from JS in alternation with another module (the baseline and relaxed-SIMD builds in one
/// process): `"sparse"` is one token through 10 experts, `"chunk"` 8 tokens × 10 experts verified
/// together over their union of 14.
#[wasm_bindgen(js_name = benchFfn)]
pub struct BenchFfn {
    up: Owned,
    down: Owned,
    chunk: bool,
    xs: Vec<f32>,
    sets: Vec<Vec<usize>>,
    union: Vec<u16>,
    scores: Vec<f32>,
}

#[wasm_bindgen(js_class = benchFfn)]
impl BenchFfn {
    #[wasm_bindgen(constructor)]
    pub fn new(dtype: &str, kind: &str) -> Result<BenchFfn, JsValue> {
        if !matches!(dtype, "f32" | "f16" | "q8") || !matches!(kind, "sparse" | "chunk") {
            return Err(JsValue::from_str("benchFfn: dtype f32 | f16 | q8, kind sparse | chunk"));
        }
        let mut rng = Rng(0xffe);
        let rows = EXPERTS * EXPERT_SIZE;
        let (up, down) =
            (Owned::random(dtype, rows * HIDDEN, 0.05, &mut rng), Owned::random(dtype, rows * HIDDEN, 0.05, &mut rng));
        let all: Vec<usize> = (0..EXPERTS).collect();
        let pool = pick(&mut rng, &all, 14);
        let sets: Vec<Vec<usize>> = (0..8).map(|_| pick(&mut rng, &pool, 10)).collect();
        let mut union: Vec<u16> = sets.iter().flatten().map(|&e| e as u16).collect();
        union.sort_unstable();
        union.dedup();
        let mut scores = vec![0.0f32; 8 * EXPERTS];
        for (t, s) in sets.iter().enumerate() {
            for &e in s {
                scores[t * EXPERTS + e] = 0.5;
            }
        }
        Ok(BenchFfn { up, down, chunk: kind == "chunk", xs: rng.vec(8 * HIDDEN), sets, union, scores })
    }

    /// Runs the layer `calls` times; returns milliseconds per call.
    pub fn run(&mut self, calls: usize) -> f64 {
        let rows = EXPERTS * EXPERT_SIZE;
        let (up, down) = (self.up.mat(rows, HIDDEN), self.down.mat(rows, HIDDEN));
        let t = now_ms();
        for _ in 0..calls {
            if self.chunk {
                let mut u = vec![0.0f32; 8 * self.union.len() * EXPERT_SIZE];
                let mut ys = vec![0.0f32; 8 * HIDDEN];
                simd128::chunk_up(up, EXPERT_SIZE, &self.union, &self.xs, &self.scores, EXPERTS, &mut u);
                simd128::chunk_down(down, EXPERT_SIZE, &self.union, &u, &mut ys);
                core::hint::black_box(&ys);
            } else {
                let mut out = [0.0f32; HIDDEN];
                sparse_ffn(&SIMD, up, down, &self.xs[..HIDDEN], &self.sets[0], &mut out);
                core::hint::black_box(&out);
            }
        }
        (now_ms() - t) / calls.max(1) as f64
    }
}
