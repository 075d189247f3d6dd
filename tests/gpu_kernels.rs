//! Every GPU kernel (src/gpu/ops, WGSL in src/gpu/shaders) against its scalar twin in
//! `kernels::scalar` (or the CPU code it mirrors: cpu::mla, cpu::gqa, cpu::block_ffn, sampling) on
//! fresh random inputs (the seed is printed; BLOCKFFN_SEED=N repeats a run). Each kernel's `Cmd` is
//! built once and run through `ops::run` for spans of k tokens at positions pos0.., as the backend
//! runs them: k ∈ {1, 3, 7} with pos0 > 0 where the kernel reads the span's place (attention).
//!
//! Tolerance: f32 sums in another order differ by at most a few ulps of Σ|terms|; the bound used is
//! 1e-5 · Σ|w_j x_j| per output (matvec, mla_out on the GPU's own c̄), 1e-5 relative elsewhere
//! (rmsnorm, softmax, silu, route), 1e-5 · Σ|terms| with the router logit's rounding carried over
//! for the FFN layer, 1e-5 · (a norm bound of the output) for the attention chains (plus, for a q8
//! kv_b, one quantization step of c̄ per term: an ulp of difference may round it the other way).
//! Equal: q8 quantization, gathers, RoPE, copies, the router's active sets and masks, argmax, the
//! dense FFN vs the sparse one, a token run alone vs within a span. Beyond the numbers, what a
//! kernel must not write (rows past the grid, score entries past a query's position, cache rows
//! past the span) is filled with NaN first and checked untouched; a read of it would also show as
//! NaN downstream.
//!
//! Needs a GPU adapter (natively: Mesa lavapipe is enough). Without one the tests print why and
//! pass, unless BLOCKFFN_REQUIRE_GPU=1 (scripts/test.sh sets it), which makes that a failure.
#![cfg(feature = "gpu")]

use blockffn::config::{Router, RouterNorm};
use blockffn::gpu::ops::attn_scores::MlaShape;
use blockffn::gpu::ops::chunk_up::Over;
use blockffn::gpu::ops::quantize_q8::Q8Vector;
use blockffn::gpu::ops::rmsnorm::NormRows;
use blockffn::gpu::ops::rope::{rope_table, RopeSlices};
use blockffn::gpu::ops::route::{RouteParams, Routed, MAX_EXPERTS};
use blockffn::gpu::ops::{
    AddScaled, Argmax, AttnMix, AttnScores, ChunkDown, ChunkUp, Cmd, Embed, Matvec, MlaAbsorb, MlaOut, QuantizeQ8,
    RmsNorm, Rope, Route, SiluScaled, Softmax, Span, StepBuf, StoreRows, Tokens,
};
use blockffn::gpu::{Gpu, GpuMat};
use blockffn::kernels::scalar;
use blockffn::sampling::{apply_repetition_penalty, argmax};
use blockffn::tensor::{quantize_q8, Mat, Q8_BLOCK};
use half::{bf16, f16};
use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

// ---------------------------------------------------------------------------------------------
// Shared helpers.

/// The device and the step uniform every span-reading kernel binds (binding 10).
struct Dev {
    g: Gpu,
    step: StepBuf,
}

impl Dev {
    /// Writes the span and runs the commands in order, in one compute pass of one submission.
    fn run(&self, span: Span, parts: &[&[Cmd]]) {
        let cmds: Vec<&Cmd> = parts.iter().flat_map(|p| p.iter()).collect();
        blockffn::gpu::ops::run(&self.g, &self.step, &span, &cmds);
    }
}

fn dev() -> Option<Dev> {
    match Gpu::new_blocking() {
        Ok(g) => {
            eprintln!("GPU: {} ({:?}, {:?})", g.info.name, g.info.device_type, g.info.backend);
            let step = StepBuf::new(&g);
            Some(Dev { g, step })
        }
        Err(e) if std::env::var("BLOCKFFN_REQUIRE_GPU").as_deref() != Ok("1") => {
            eprintln!("skipped: {e}");
            None
        }
        Err(e) => panic!("BLOCKFFN_REQUIRE_GPU=1 but {e}"),
    }
}

fn rng(test: &str) -> ChaCha8Rng {
    let seed = std::env::var("BLOCKFFN_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(1)
    });
    eprintln!("{test}: BLOCKFFN_SEED={seed}");
    ChaCha8Rng::seed_from_u64(seed)
}

fn uniform(r: &mut ChaCha8Rng, n: usize, scale: f32) -> Vec<f32> {
    (0..n).map(|_| ((r.next_u32() >> 8) as f32 / (1u32 << 24) as f32 * 2.0 - 1.0) * scale).collect()
}

/// A uniform index below `n`.
fn below(r: &mut ChaCha8Rng, n: usize) -> usize {
    (r.next_u64() % n as u64) as usize
}

fn upload(g: &Gpu, v: &[f32]) -> wgpu::Buffer {
    g.storage("test", bytemuck::cast_slice(v))
}

fn upload_u32(g: &Gpu, v: &[u32]) -> wgpu::Buffer {
    g.storage("test", bytemuck::cast_slice(v))
}

/// A buffer of `n` NaNs: what a kernel must not write, checked with [`untouched`] afterwards.
fn nans(g: &Gpu, n: usize) -> wgpu::Buffer {
    upload(g, &vec![f32::NAN; n])
}

/// `v` padded with NaN to `n` values.
fn nan_padded(v: &[f32], n: usize) -> Vec<f32> {
    let mut out = v.to_vec();
    out.resize(n, f32::NAN);
    out
}

/// Overwrites the start of `b` with `v` (queued; applies to the next submission).
fn write<T: bytemuck::Pod>(g: &Gpu, b: &wgpu::Buffer, v: &[T]) {
    g.queue.write_buffer(b, 0, bytemuck::cast_slice(v));
}

fn read(g: &Gpu, b: &wgpu::Buffer, n: usize) -> Vec<f32> {
    g.read_f32(b, n).expect("readback")
}

fn read_u32(g: &Gpu, b: &wgpu::Buffer, n: usize) -> Vec<u32> {
    read(g, b, n).iter().map(|v| v.to_bits()).collect()
}

fn untouched(what: &str, v: &[f32]) {
    if let Some(i) = v.iter().position(|x| !x.is_nan()) {
        panic!("{what}: value {i} of {} was written ({}), it should be left alone", v.len(), v[i]);
    }
}

/// `Σ_j |w_rj · x_j|` per row, the scale of a reordered sum's rounding error.
fn magnitudes(w: &[f32], x: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    (0..rows).map(|r| (0..cols).map(|c| (w[r * cols + c] * x[c]).abs()).sum()).collect()
}

/// |got − want| ≤ bound, elementwise.
fn assert_within(what: &str, got: &[f32], want: &[f32], bound: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    let mut worst = 0.0f32;
    for (i, ((&g, &w), &b)) in got.iter().zip(want).zip(bound).enumerate() {
        let d = (g - w).abs();
        assert!(d <= b + f32::MIN_POSITIVE, "{what}[{i}]: GPU {g} vs CPU {w} (|Δ| {d}, bound {b})");
        worst = worst.max(d / b.max(f32::MIN_POSITIVE));
    }
    eprintln!("{what}: {} values, worst |Δ| / bound = {worst:.2e}", got.len());
}

/// |got − want| ≤ 1e-5 · scale, elementwise (scale: Σ|terms| or |want| with a floor).
fn assert_close(what: &str, got: &[f32], want: &[f32], scale: &[f32]) {
    let bound: Vec<f32> = scale.iter().map(|s| 1e-5 * s).collect();
    assert_within(what, got, want, &bound);
}

/// 1e-5 relative, with `floor` under |want|.
fn assert_rel(what: &str, got: &[f32], want: &[f32], floor: f32) {
    let scale: Vec<f32> = want.iter().map(|v| v.abs().max(floor)).collect();
    assert_close(what, got, want, &scale);
}

fn norm(v: &[f32]) -> f32 {
    v.iter().map(|x| x * x).sum::<f32>().sqrt()
}

/// Weights of `rows × cols` from one f32 draw, stored in every dtype ("f32", "f16", "bf16", "q8").
struct Stored {
    f: Vec<f32>,
    h: Vec<f16>,
    b: Vec<bf16>,
    q: (Vec<i8>, Vec<f32>),
    rows: usize,
    cols: usize,
}

const DTYPES: [&str; 4] = ["f32", "f16", "bf16", "q8"];

impl Stored {
    fn new(r: &mut ChaCha8Rng, rows: usize, cols: usize, scale: f32) -> Stored {
        let f = uniform(r, rows * cols, scale);
        Stored {
            h: f.iter().map(|&v| f16::from_f32(v)).collect(),
            b: f.iter().map(|&v| bf16::from_f32(v)).collect(),
            q: quantize_q8(&f).expect("finite"),
            f,
            rows,
            cols,
        }
    }
    fn mat(&self, dtype: &str) -> Mat<'_> {
        let (rows, cols) = (self.rows, self.cols);
        match dtype {
            "f32" => Mat::F32 { data: &self.f, rows, cols },
            "f16" => Mat::F16 { data: &self.h, rows, cols },
            "bf16" => Mat::BF16 { data: &self.b, rows, cols },
            _ => Mat::Q8 { data: &self.q.0, scales: &self.q.1, rows, cols },
        }
    }
    /// The stored values in f32 (the error scale of products with them).
    fn values(&self, dtype: &str) -> Vec<f32> {
        match dtype {
            "f32" => self.f.clone(),
            "f16" => self.h.iter().map(|v| v.to_f32()).collect(),
            "bf16" => self.b.iter().map(|v| v.to_f32()).collect(),
            _ => self.q.0.iter().enumerate().map(|(i, &v)| v as f32 * self.q.1[i / Q8_BLOCK]).collect(),
        }
    }
}

/// The causal entries of attention rows `[k, heads, t_len]` (query i sees pos0 + i + 1
/// positions), and the others.
fn causal_split(v: &[f32], heads: usize, pos0: usize, t_len: usize) -> (Vec<f32>, Vec<f32>) {
    let (mut seen, mut rest) = (vec![], vec![]);
    for (row, vals) in v.chunks_exact(t_len).enumerate() {
        let n = pos0 + row / heads + 1;
        seen.extend_from_slice(&vals[..n]);
        rest.extend_from_slice(&vals[n..]);
    }
    (seen, rest)
}

/// Compares causal attention rows with the tolerance `bound` (per value) and checks the entries
/// past each query's position are left unwritten.
fn check_causal(what: &str, got: &[f32], want: &[f32], heads: usize, pos0: usize, t_len: usize, bound: f32) {
    let (g_seen, g_rest) = causal_split(got, heads, pos0, t_len);
    let (w_seen, _) = causal_split(want, heads, pos0, t_len);
    assert_close(what, &g_seen, &w_seen, &vec![bound; w_seen.len()]);
    untouched(&format!("{what} past the query's position"), &g_rest);
}

// ---------------------------------------------------------------------------------------------
// Row kernels: matvec, quantize_q8, rmsnorm, softmax, silu.

/// Runs the GPU matvec of `w` (stored values `wf`, for the error scale) over the tokens `tokens`
/// selects of `span` against scalar::matvec per token: token t reads `xs[t · cols ..]` and writes
/// `y[t · y_stride ..][..rows]`; everything else of `y` must stay untouched.
#[allow(clippy::too_many_arguments)]
fn check_matvec(
    d: &Dev,
    mv: &Matvec,
    what: &str,
    w: Mat,
    wf: &[f32],
    xs: &[f32],
    span: Span,
    tokens: Tokens,
    y_stride: usize,
    max_bytes: Option<u64>,
) {
    let g = &d.g;
    let (rows, cols) = (w.rows(), w.cols());
    let gw = match max_bytes {
        Some(m) => GpuMat::upload_limited(g, what, w, m).expect("upload"),
        None => GpuMat::upload(g, what, w).expect("upload"),
    };
    if let Some(m) = max_bytes {
        assert!(gw.parts.len() > 1, "{what}: a {m}-byte limit should split {rows} rows");
    }
    let (xb, yb, q8) = (upload(g, xs), nans(g, span.k * y_stride), Q8Vector::new(g, cols, span.k));
    let cmds = mv.cmds(g, &gw, &xb, &yb, y_stride, tokens, Some(&q8)).expect("cmds");
    d.run(span, &[&cmds]);
    let got = read(g, &yb, span.k * y_stride);
    let n = tokens.count(&span) as usize;
    let (mut gy, mut want, mut scale, mut rest) = (vec![], vec![0.0; n * rows], vec![], vec![]);
    for t in 0..span.k {
        let row = &got[t * y_stride..(t + 1) * y_stride];
        if t < n {
            let x = &xs[t * cols..(t + 1) * cols];
            scalar::matvec(w, x, &mut want[t * rows..(t + 1) * rows]);
            scale.extend(magnitudes(wf, x, rows, cols));
            gy.extend_from_slice(&row[..rows]);
            rest.extend_from_slice(&row[rows..]);
        } else {
            rest.extend_from_slice(row);
        }
    }
    assert_close(&format!("{what}, {n} of {} tokens", span.k), &gy, &want, &scale);
    untouched(&format!("{what}: y outside the rows and tokens"), &rest);
}

#[test]
fn matvec_every_dtype_matches_scalar() {
    let Some(d) = dev() else { return };
    let mv = Matvec::new(&d.g);
    let mut r = rng("matvec");
    // Model-like shapes, a ragged one (rows not a multiple of the 4 per workgroup, cols not of 256;
    // outputs at a stride), a split one (parts of 7 rows), and the LM head's token selection
    // (Tokens::Head: the last k − head_from tokens, read and written from row 0).
    let head = Span { pos0: 9, k: 4, head_from: 1 };
    let cases = [
        (768, 768, None, Span::new(0, 1), Tokens::Span, 768),
        (256, 1024, None, Span::new(5, 3), Tokens::Span, 256),
        (37, 96, None, Span::new(5, 3), Tokens::Span, 42),
        (61, 320, Some(7), Span::new(5, 3), Tokens::Span, 61),
        (37, 96, None, head, Tokens::Head, 37),
    ];
    for (rows, cols, limit, span, tokens, y_stride) in cases {
        let w = Stored::new(&mut r, rows, cols, 0.5);
        let xs = uniform(&mut r, span.k * cols, 2.0);
        for dtype in DTYPES {
            let elem = match dtype {
                "f32" => 4,
                "q8" => 1,
                _ => 2,
            };
            let lim = limit.map(|n: u64| n * cols as u64 * elem);
            let what = format!("{dtype} {rows}x{cols} ({tokens:?})");
            check_matvec(&d, &mv, &what, w.mat(dtype), &w.values(dtype), &xs, span, tokens, y_stride, lim);
        }
    }
}

#[test]
fn q8_matvec_with_a_non_finite_input_takes_the_exact_path_like_the_cpu() {
    let Some(d) = dev() else { return };
    let g = &d.g;
    let mv = Matvec::new(g);
    let mut r = rng("q8 non-finite");
    let (rows, cols) = (16, 128);
    let w = Stored::new(&mut r, rows, cols, 0.5);
    let m = w.mat("q8");
    // Two tokens: the first with an infinity (the exact dequantized path), the second finite (the
    // quantized path): the choice is per token.
    let mut xs = uniform(&mut r, 2 * cols, 2.0);
    xs[77] = f32::INFINITY;
    let gw = GpuMat::upload(g, "w", m).expect("upload");
    let (xb, yb, q8) = (upload(g, &xs), g.storage_f32("y", 2 * rows), Q8Vector::new(g, cols, 2));
    let cmds = mv.cmds(g, &gw, &xb, &yb, rows, Tokens::Span, Some(&q8)).expect("cmds");
    d.run(Span::new(0, 2), &[&cmds]);
    let got = read(g, &yb, 2 * rows);
    let mut want = vec![0.0; 2 * rows];
    scalar::matvec(m, &xs[..cols], &mut want[..rows]);
    scalar::matvec(m, &xs[cols..], &mut want[rows..]);
    for (i, (a, b)) in got[..rows].iter().zip(&want[..rows]).enumerate() {
        assert!(a == b || (a.is_nan() && b.is_nan()), "row {i}: GPU {a} vs CPU {b}");
    }
    let scale = magnitudes(&w.values("q8"), &xs[cols..], rows, cols);
    assert_close("q8, the finite token of the span", &got[rows..], &want[rows..], &scale);
}

#[test]
fn quantize_q8_equals_the_cpu_quantization() {
    let Some(d) = dev() else { return };
    let g = &d.g;
    let qz = QuantizeQ8::new(g);
    let mut r = rng("quantize_q8");
    let (n, k) = (2048, 3);
    let mut x = uniform(&mut r, k * n, 3.0);
    // Exact halves (scale 127 / 127 = 1): rounded away from zero, not to even.
    x[64..69].copy_from_slice(&[127.0, 2.5, -3.5, 0.5, -0.5]);
    x[n + 32..n + 64].fill(0.0); // an all-zero block: scale 0
    x[2 * n + 5 * 32 + 7] = f32::NAN; // a non-finite block: scale −1 (the exact-path marker)
    let xb = upload(g, &x);
    let out = Q8Vector::new(g, n, k);
    let cmd = [qz.cmd(g, &xb, &out, Tokens::Span)];
    d.run(Span::new(3, k), &[&cmd]);
    let s = read(g, &out.scales, k * n / 32);
    let words = read_u32(g, &out.q, k * n / 4);
    let q: Vec<i8> = words.iter().flat_map(|w| w.to_le_bytes()).map(|b| b as i8).collect();
    let mut differ = 0;
    for (b, block) in x.chunks_exact(Q8_BLOCK).enumerate() {
        match quantize_q8(block) {
            Some((want_q, want_s)) => {
                assert_eq!(s[b], want_s[0], "block {b}: scale");
                differ += q[b * 32..(b + 1) * 32].iter().zip(&want_q).filter(|(a, b)| a != b).count();
            }
            None => assert_eq!(s[b], -1.0, "block {b} has a non-finite value: scale −1"),
        }
    }
    assert_eq!(differ, 0, "{differ} of {} quantized values differ", k * n);
}

#[test]
fn rmsnorm_softmax_silu_match_scalar() {
    let Some(d) = dev() else { return };
    let g = &d.g;
    let step = &d.step.buffer;
    let (rn, sm, si) = (RmsNorm::new(g), Softmax::new(g), SiluScaled::new(g));
    let mut r = rng("rmsnorm/softmax/silu");
    // Three tokens; the final norm's layout reads from head_from = 1 on.
    let span = Span { pos0: 4, k: 3, head_from: 1 };
    let k = span.k;
    for n in [256, 1000, 2048] {
        let x = uniform(&mut r, k * n, 4.0);
        let w = uniform(&mut r, n, 1.5);
        let gate = uniform(&mut r, k * n, 4.0);
        // The final norm: strided input rows from head_from on, output ÷ div at another stride.
        let (in_s, out_s, div) = (n + 7, n + 3, 2.5);
        let xs = uniform(&mut r, k * in_s, 4.0);
        let head_rows = NormRows { n, in_stride: in_s, out_stride: out_s, div, tokens: Tokens::Head };
        let (xb, wb, ob, xsb, hb) = (upload(g, &x), upload(g, &w), nans(g, k * n), upload(g, &xs), nans(g, k * out_s));
        let (sb, lb, xgb, gb) = (upload(g, &x), upload(g, &x), upload(g, &x), upload(g, &gate));
        let cmds = [
            rn.cmd(g, NormRows::dense(n), 1e-6, &xb, &wb, &ob, step),
            rn.cmd(g, head_rows, 1e-6, &xsb, &wb, &hb, step),
            sm.cmd_rows(g, n, k, &sb, step),
            si.cmd(g, n, 0.37, &lb),
            si.cmd_gate(g, n, &xgb, &gb),
        ];
        d.run(span, &[&cmds]);

        let mut want = vec![0.0; k * n];
        for (xr, o) in x.chunks_exact(n).zip(want.chunks_exact_mut(n)) {
            scalar::rmsnorm(xr, &w, 1e-6, o);
        }
        assert_rel(&format!("rmsnorm {n}"), &read(g, &ob, k * n), &want, 1e-3);

        let got = read(g, &hb, k * out_s);
        let (mut gh, mut want, mut rest) = (vec![], vec![0.0; (k - 1) * n], vec![]);
        for t in 0..k - 1 {
            scalar::rmsnorm(&xs[(t + 1) * in_s..][..n], &w, 1e-6, &mut want[t * n..(t + 1) * n]);
            gh.extend_from_slice(&got[t * out_s..][..n]);
            rest.extend_from_slice(&got[t * out_s + n..(t + 1) * out_s]);
        }
        want.iter_mut().for_each(|v| *v /= div);
        rest.extend_from_slice(&got[(k - 1) * out_s..]);
        assert_rel(&format!("rmsnorm {n}, head rows ÷ {div}"), &gh, &want, 1e-3);
        untouched(&format!("rmsnorm {n}, head rows: beyond the rows"), &rest);

        let mut want = x.clone();
        want.chunks_exact_mut(n).for_each(scalar::softmax);
        assert_rel(&format!("softmax {k}×{n}"), &read(g, &sb, k * n), &want, 1e-6);

        let mut want = x.clone();
        scalar::silu_scaled(&mut want, 0.37);
        assert_rel(&format!("silu_scaled {k}×{n}"), &read(g, &lb, k * n), &want, 1e-3);

        // cpu::dense_ffn's gated product.
        let want: Vec<f32> = x.iter().zip(&gate).map(|(&a, &b)| a * scalar::silu(b)).collect();
        assert_rel(&format!("silu_gate {k}×{n}"), &read(g, &xgb, k * n), &want, 1e-3);
    }
}

#[test]
fn a_row_larger_than_the_binding_limit_is_a_typed_error() {
    let Some(d) = dev() else { return };
    let w = vec![0.0f32; 64];
    let e = GpuMat::upload_limited(&d.g, "w", Mat::F32 { data: &w, rows: 1, cols: 64 }, 128).err().expect("refused");
    assert_eq!(e.code(), "OutOfMemory", "{e}");
}

// ---------------------------------------------------------------------------------------------
// Embedding, RoPE, the residual, cache writes.

#[test]
fn embed_rope_and_residual_match_scalar() {
    let Some(d) = dev() else { return };
    let g = &d.g;
    let step = &d.step.buffer;
    let (emb, rope, add) = (Embed::new(g), Rope::new(g), AddScaled::new(g));
    let mut r = rng("embed/rope/residual");
    let (vocab, hsz) = (50, 96);
    let table = Stored::new(&mut r, vocab, hsz, 1.0);
    let ids: Vec<u32> = vec![3, 49, 0, 17];
    for dtype in DTYPES {
        let m = table.mat(dtype);
        let gm = GpuMat::upload(g, "embed", m).unwrap();
        let (idb, hb) = (upload_u32(g, &ids), nans(g, ids.len() * hsz));
        let cmd = [emb.cmd(g, &gm, 12.0, ids.len(), &idb, &hb).unwrap()];
        let mut want = vec![0.0; ids.len() * hsz];
        for (row, &id) in want.chunks_exact_mut(hsz).zip(&ids) {
            scalar::row_to_f32(m, id as usize, row);
            row.iter_mut().for_each(|v| *v *= 12.0);
        }
        d.run(Span::new(0, ids.len()), &[&cmd]);
        assert_eq!(read(g, &hb, want.len()), want, "{dtype} embed: a gather and one multiply must be exact");
        // The same command for a shorter span writes only its tokens.
        write(g, &hb, &vec![f32::NAN; want.len()]);
        d.run(Span::new(7, 2), &[&cmd]);
        let got = read(g, &hb, want.len());
        assert_eq!(got[..2 * hsz], want[..2 * hsz], "{dtype} embed, 2 tokens");
        untouched(&format!("{dtype} embed, 2 tokens: the rest"), &got[2 * hsz..]);
    }

    // RoPE: 3 tokens at positions 1000.. (table-based cos/sin), each with 5 heads of 32 at stride
    // 40 from offset 8, tokens 211 apart.
    let (k, pos0, heads, dim, stride, base, token_stride) = (3, 1000, 5, 32, 40, 8, 211);
    let inv = scalar::rope_inv_freq(dim, 10000.0);
    let tb = upload(g, &rope_table(&inv, 1024));
    let x = uniform(&mut r, k * token_stride, 2.0);
    let y = uniform(&mut r, x.len(), 1.0);
    let (xb, yb, hb) = (upload(g, &x), upload(g, &y), upload(g, &x));
    let sl = RopeSlices { heads, dim, stride, base, token_stride };
    let cmds = [rope.cmd(g, &tb, &xb, sl, step), add.cmd(g, token_stride, 0.3, &yb, &hb)];
    d.run(Span::new(pos0, k), &[&cmds]);
    let mut want = x.clone();
    for t in 0..k {
        for h in 0..heads {
            let o = base + t * token_stride + h * stride;
            scalar::rope_rotate_half(&mut want[o..o + dim], &inv, pos0 + t);
        }
    }
    assert_eq!(read(g, &xb, x.len()), want, "rope: the same f32 cos/sin and two products each");
    let want: Vec<f32> = x.iter().zip(&y).map(|(h, y)| h + y * 0.3).collect();
    assert_eq!(read(g, &hb, x.len()), want, "h += y · s");
}

#[test]
fn store_rows_appends_the_span_at_its_positions() {
    let Some(d) = dev() else { return };
    let g = &d.g;
    let store = StoreRows::new(g);
    let mut r = rng("store_rows");
    // Rows of 24 taken from offset 8 of 40-value token rows (as the k_pe slice of MLA's ckv).
    let (n, src_stride, src_off, cap, max_k) = (24, 40, 8, 16, 7);
    let (srcb, dstb) = (g.storage_f32("src", max_k * src_stride), nans(g, cap * n));
    let cmd = [store.cmd(g, n, src_stride, src_off, &srcb, &dstb, &d.step.buffer)];
    for (pos0, k) in [(0, 1), (0, 3), (5, 7), (9, 7), (15, 1)] {
        let src = uniform(&mut r, k * src_stride, 1.0);
        write(g, &srcb, &src);
        write(g, &dstb, &vec![f32::NAN; cap * n]);
        d.run(Span::new(pos0, k), &[&cmd]);
        let got = read(g, &dstb, cap * n);
        for t in 0..k {
            let row = &got[(pos0 + t) * n..(pos0 + t + 1) * n];
            assert_eq!(row, &src[t * src_stride + src_off..][..n], "pos0 {pos0} k {k}: row {}", pos0 + t);
        }
        untouched(&format!("pos0 {pos0} k {k}: rows before the span"), &got[..pos0 * n]);
        untouched(&format!("pos0 {pos0} k {k}: rows after the span"), &got[(pos0 + k) * n..]);
    }
}

// ---------------------------------------------------------------------------------------------
// The router and the sparse FFN.

const SENTINEL: u32 = 0xa5a5_a5a5;

/// The reference router decision for one token (cpu::block_ffn::route, written out): its scores
/// (0 for inactive experts) and active experts, ascending.
fn route_ref(a: &[f32], router: Router, g: &[f32], eps: f32, norm_scale: f32) -> (Vec<f32>, Vec<u16>) {
    let ne = a.len();
    let norm = match router {
        Router::TopK { k } => {
            let mut s = a.to_vec();
            scalar::softmax(&mut s);
            let mut order: Vec<usize> = (0..ne).collect();
            order.sort_by(|&x, &y| s[y].total_cmp(&s[x]).then(x.cmp(&y)));
            let mut keep: Vec<u16> = order[..k].iter().map(|&e| e as u16).collect();
            keep.sort_unstable();
            for (e, v) in s.iter_mut().enumerate() {
                if !keep.contains(&(e as u16)) {
                    *v = 0.0;
                }
            }
            return (s, keep);
        }
        Router::Relu(norm) => norm,
    };
    let mut s: Vec<f32> = a.iter().map(|&v| if v > 0.0 { v } else { 0.0 }).collect();
    let active: Vec<u16> = (0..ne as u16).filter(|&e| a[e as usize] > 0.0).collect();
    match norm {
        RouterNorm::Rms => {
            let ms = s.iter().map(|v| v * v).sum::<f32>() / ne as f32;
            let inv = 1.0 / (ms + eps).sqrt();
            s.iter_mut().zip(g).for_each(|(v, &w)| *v = *v * inv * w);
        }
        RouterNorm::Sum => {
            let d = s.iter().sum::<f32>() * norm_scale + 1e-5;
            s.iter_mut().for_each(|v| *v /= d);
        }
        RouterNorm::None => {}
    }
    (s, active)
}

/// Router logits for `k` tokens of `ne` experts. ReLU: uniform, with token 0's expert 0 exactly 0
/// (inactive) and token 1 all ≤ 0 (no expert). TopK: distinct logits 0.05 apart (no near-ties
/// that rounding could reorder) with one exact tie at the cut, which the lower id must win.
fn router_logits(r: &mut ChaCha8Rng, k: usize, ne: usize, router: Router) -> Vec<f32> {
    let mut a = Vec::with_capacity(k * ne);
    for t in 0..k {
        let mut row = match router {
            Router::TopK { .. } => {
                let mut perm: Vec<usize> = (0..ne).collect();
                for i in (1..ne).rev() {
                    perm.swap(i, below(r, i + 1));
                }
                perm.iter().map(|&p| p as f32 * 0.05 - 2.0).collect()
            }
            Router::Relu(_) => uniform(r, ne, 3.0),
        };
        match router {
            Router::TopK { k: top } => {
                let mut order: Vec<usize> = (0..ne).collect();
                order.sort_by(|&x, &y| row[y].total_cmp(&row[x]));
                row[order[top]] = row[order[top - 1]];
            }
            Router::Relu(_) if t == 0 => row[0] = 0.0,
            Router::Relu(_) if t == 1 => row.iter_mut().for_each(|v| *v = -v.abs()),
            Router::Relu(_) => {}
        }
        a.extend(row);
    }
    a
}

fn mask_bits(active: &[u16], words: usize) -> Vec<u32> {
    let mut m = vec![0u32; words];
    for &e in active {
        m[e as usize / 32] |= 1 << (e % 32);
    }
    m
}

#[test]
fn route_matches_the_cpu_router_for_every_router() {
    let Some(d) = dev() else { return };
    let g = &d.g;
    let route = Route::new(g);
    let mut r = rng("route");
    let (layers, max_k) = (3, 7);
    let routers = [
        Router::Relu(RouterNorm::Rms),
        Router::Relu(RouterNorm::Sum),
        Router::Relu(RouterNorm::None),
        Router::TopK { k: 6 },
    ];
    for ne in [32, 48, 70, MAX_EXPERTS] {
        let words = ne.div_ceil(32);
        let gw = uniform(&mut r, ne, 1.0); // norm weights may be negative: activity is never read from them
        let (ab, gb) = (g.storage_f32("a", max_k * ne), upload(g, &gw));
        let out = Routed::new(g, ne, max_k);
        let masks = upload_u32(g, &vec![SENTINEL; max_k * layers * words]);
        for (i, router) in routers.into_iter().enumerate() {
            let layer = i % layers;
            let p = RouteParams { router, eps: 1e-6, norm_scale: 1.3, layer, layers };
            let cmd = [route.cmd(g, &ab, p, Some(&gb), &out, &masks, &d.step.buffer).expect("route")];
            for k in [1, 3, 7] {
                let what = format!("{router:?} ne {ne} k {k}");
                let a = router_logits(&mut r, k, ne, router);
                write(g, &ab, &a);
                write(g, &masks, &vec![SENTINEL; max_k * layers * words]);
                d.run(Span::new(2 * k, k), &[&cmd]);

                let mut want_s = vec![];
                let mut want_masks = vec![SENTINEL; max_k * layers * words];
                let mut actives = vec![];
                for t in 0..k {
                    let (s, active) = route_ref(&a[t * ne..(t + 1) * ne], router, &gw, 1e-6, 1.3);
                    let o = (t * layers + layer) * words;
                    want_masks[o..o + words].copy_from_slice(&mask_bits(&active, words));
                    want_s.extend(s);
                    actives.push(active);
                }
                let lists: Vec<&[u16]> = actives.iter().map(|v| v.as_slice()).collect();
                let union: Vec<u32> = scalar::union_sorted(&lists).iter().map(|&e| e as u32).collect();
                let active = read_u32(g, &out.active, 1 + ne);
                assert_eq!(&active[1..1 + active[0] as usize], &union[..], "{what}: the span's union");
                assert_eq!(read_u32(g, &masks, want_masks.len()), want_masks, "{what}: token masks of layer {layer}");
                assert_rel(&format!("route {what}"), &read(g, &out.scores, k * ne), &want_s, 1e-3);
            }
        }
    }
    let big = Routed::new(g, MAX_EXPERTS + 1, 1);
    let p = RouteParams { router: Router::Relu(RouterNorm::None), eps: 1e-6, norm_scale: 1.0, layer: 0, layers: 1 };
    let e = route.cmd(g, &big.scores, p, None, &big, &big.scores, &d.step.buffer).err().expect("refused");
    assert_eq!(e.code(), "Unsupported", "{e}");
}

/// One token through the sparse FFN as cpu::block_ffn::forward_sparse does it: per active expert,
/// matvec of its up rows, silu_scaled by its score, axpy_rows of its down rows.
fn sparse_ref(up: Mat, down: Mat, de: usize, x: &[f32], scores: &[f32], active: &[u16]) -> Vec<f32> {
    let (mut y, mut u) = (vec![0.0; x.len()], vec![0.0; de]);
    for &e in active {
        let (r0, r1) = (e as usize * de, (e as usize + 1) * de);
        scalar::matvec(up.row_range(r0, r1), x, &mut u);
        scalar::silu_scaled(&mut u, scores[e as usize]);
        scalar::axpy_rows(down.row_range(r0, r1), &u, &mut y);
    }
    y
}

/// One BlockFFN layer for a span of k tokens, all on the GPU in one submission (router matvec →
/// route → chunk_up over the compacted union → chunk_down, and the dense variant over every
/// expert), against the scalar chain (chunk_up / chunk_down, themselves bit-identical to the
/// per-token sparse path); the active set must be identical, the dense result bit-identical to the
/// union's, and each token run alone on the GPU bit-identical to its row of the span.
#[test]
fn sparse_ffn_layer_matches_the_scalar_chunk_kernels() {
    let Some(d) = dev() else { return };
    let g = &d.g;
    let step = &d.step.buffer;
    let (mv, route, up_k, down_k) = (Matvec::new(g), Route::new(g), ChunkUp::new(g), ChunkDown::new(g));
    let mut r = rng("sparse ffn layer");
    let (h, ne, de, max_k) = (256, 48, 32, 7);
    let wr = Stored::new(&mut r, ne, h, 0.2);
    let router = Mat::F32 { data: &wr.f, rows: ne, cols: h };
    let gw = uniform(&mut r, ne, 1.0);
    let up = Stored::new(&mut r, ne * de, h, 0.1);
    let down = Stored::new(&mut r, ne * de, h, 0.1);
    // Each token is re-drawn while a router logit is within 1e-4 · Σ|terms| of 0: a reordered sum
    // is within 256 · 2^-24 · Σ|terms| of the exact one, so no sign (no active set) can then differ.
    let logit_margin = |x: &[f32]| {
        (0..ne).all(|e| {
            let row = &wr.f[e * h..(e + 1) * h];
            scalar::dot(row, x).abs() > 1e-4 * row.iter().zip(x).map(|(a, b)| (a * b).abs()).sum::<f32>()
        })
    };
    let mut xs_all = vec![];
    while xs_all.len() < max_k * h {
        let x = uniform(&mut r, h, 2.0);
        if logit_margin(&x) {
            xs_all.extend(x);
        }
    }
    let p = RouteParams { router: Router::Relu(RouterNorm::Rms), eps: 1e-6, norm_scale: 1.0, layer: 0, layers: 1 };
    let every: Vec<u32> = std::iter::once(ne as u32).chain(0..ne as u32).collect();
    for dtype in DTYPES {
        let (upm, downm) = (up.mat(dtype), down.mat(dtype));
        let gr = GpuMat::upload(g, "router", router).unwrap();
        let (gup, gdown) = (GpuMat::upload(g, "up", upm).unwrap(), GpuMat::upload(g, "down", downm).unwrap());
        let (xb, gb, ab) = (g.storage_f32("xs", max_k * h), upload(g, &gw), g.storage_f32("a", max_k * ne));
        let (routed, masks) = (Routed::new(g, ne, max_k), g.storage_f32("masks", max_k * ne.div_ceil(32)));
        let (ub, yb, q8) =
            (g.storage_f32("u", max_k * ne * de), g.storage_f32("y", max_k * h), Q8Vector::new(g, h, max_k));
        let (listb, u_all, y_all) =
            (upload_u32(g, &every), g.storage_f32("u all", max_k * ne * de), g.storage_f32("y all", max_k * h));
        let logits = mv.cmds(g, &gr, &xb, &ab, ne, Tokens::Span, None).unwrap();
        let decide = [route.cmd(g, &ab, p, Some(&gb), &routed, &masks, step).unwrap()];
        let up_union =
            up_k.cmds(g, &gup, de, ne, Over::Union, &xb, &routed.scores, &routed.active, &ub, Some(&q8)).unwrap();
        let partial = g.storage_f32("partial", blockffn::gpu::ops::chunk_down::partial_len(ne, max_k, h));
        let down_union = down_k.cmd(g, &gdown, de, max_k, Over::Union, &ub, &routed.active, &partial, &yb).unwrap();
        let up_dense = up_k.cmds(g, &gup, de, ne, Over::All, &xb, &routed.scores, &listb, &u_all, Some(&q8)).unwrap();
        let down_dense = down_k.cmd(g, &gdown, de, max_k, Over::All, &u_all, &listb, &partial, &y_all).unwrap();
        for k in [1, 3, 7] {
            let what = format!("{dtype} k {k}");
            let xs = &xs_all[..k * h];
            write(g, &xb, xs);
            d.run(Span::new(11, k), &[&logits, &decide, &up_union, &down_union, &up_dense, &down_dense]);

            // CPU: scalar router matvec, the reference routing, scalar chunk kernels.
            let mut a = vec![0.0; k * ne];
            scalar::matmul(router, xs, &mut a);
            let (mut scores, mut actives) = (vec![], vec![]);
            for t in 0..k {
                let (s, active) = route_ref(&a[t * ne..(t + 1) * ne], p.router, &gw, 1e-6, 1.0);
                scores.extend(s);
                actives.push(active);
            }
            let lists: Vec<&[u16]> = actives.iter().map(|v| v.as_slice()).collect();
            let union = scalar::union_sorted(&lists);
            let nu = union.len();
            let mut u = vec![0.0; k * nu * de];
            scalar::chunk_up(upm, de, &union, xs, &scores, ne, &mut u);
            let mut y = vec![0.0; k * h];
            scalar::chunk_down(downm, de, &union, &u, &mut y);
            for t in 0..k {
                let alone = sparse_ref(upm, downm, de, &xs[t * h..(t + 1) * h], &scores[t * ne..], &actives[t]);
                assert_eq!(alone, y[t * h..(t + 1) * h], "{what}: scalar chunk vs per-token sparse, token {t}");
            }

            let got_active = read_u32(g, &routed.active, 1 + ne);
            let union32: Vec<u32> = union.iter().map(|&e| e as u32).collect();
            assert_eq!(&got_active[1..1 + got_active[0] as usize], &union32[..], "{what}: active experts");
            let (gu, gy) = (read(g, &ub, k * nu * de), read(g, &yb, k * h));

            // Scale of each u: Σ |up_r · x| · |score| (silu' ≤ 1.1 carries the dot product's
            // rounding over), plus |u| times the score's relative uncertainty: the router logit
            // a_e is itself a reordered sum, so its relative error is up to Σ|w_r,e · x| / |a_e|
            // (in 1e-5 units). A token that did not pick the expert gets exact zeros (scale 0).
            let rel: Vec<f32> = (0..k * ne)
                .map(|i| {
                    let (t, e) = (i / ne, i % ne);
                    let m: f32 = (0..h).map(|c| (wr.f[e * h + c] * xs[t * h + c]).abs()).sum();
                    m / a[i].abs().max(f32::MIN_POSITIVE)
                })
                .collect();
            let mut row = vec![0.0f32; h];
            let mut uscale = vec![0.0f32; u.len()];
            let mut yscale = vec![0.0f32; k * h];
            for (j, &e) in union.iter().enumerate() {
                let e = e as usize;
                for rr in 0..de {
                    scalar::row_to_f32(upm, e * de + rr, &mut row);
                    for t in 0..k {
                        let m: f32 = row.iter().zip(&xs[t * h..(t + 1) * h]).map(|(a, b)| (a * b).abs()).sum();
                        let i = (t * nu + j) * de + rr;
                        uscale[i] = 1.1 * m * scores[t * ne + e].abs() + u[i].abs() * rel[t * ne + e];
                    }
                    // Scale of each output: Σ |u_r · down_r[i]| over the union's rows.
                    scalar::row_to_f32(downm, e * de + rr, &mut row);
                    for t in 0..k {
                        let c = u[(t * nu + j) * de + rr];
                        for (ys, &dv) in yscale[t * h..(t + 1) * h].iter_mut().zip(&row) {
                            *ys += (c * dv).abs() * (1.0 + rel[t * ne + e]);
                        }
                    }
                }
            }
            assert_close(&format!("{what} chunk_up"), &gu, &u, &uscale);
            assert_close(&format!("{what} ffn layer ({nu} of {ne} experts in the union)"), &gy, &y, &yscale);

            // Dense (every expert, zero scores computed too): the same nonzero terms in the same
            // order, so the same bits.
            let (gu_all, gy_all) = (read(g, &u_all, k * ne * de), read(g, &y_all, k * h));
            assert_eq!(gy_all, gy, "{what}: Over::All vs Over::Union output");
            for t in 0..k {
                for e in 0..ne {
                    let dense = &gu_all[(t * ne + e) * de..][..de];
                    match union.iter().position(|&x| x as usize == e) {
                        Some(j) => {
                            assert_eq!(dense, &gu[(t * nu + j) * de..][..de], "{what}: dense u, token {t} expert {e}")
                        }
                        None => assert!(dense.iter().all(|&v| v == 0.0), "{what}: dense u of unused expert {e}"),
                    }
                }
            }

            // Each token alone (a span of one at its position): the same bits as its row of the span.
            for t in 0..k {
                write(g, &xb, &xs[t * h..(t + 1) * h]);
                d.run(Span::new(11 + t, 1), &[&logits, &decide, &up_union, &down_union]);
                let one = read_u32(g, &routed.active, 1 + ne);
                let mine: Vec<u32> = actives[t].iter().map(|&e| e as u32).collect();
                assert_eq!(&one[1..1 + one[0] as usize], &mine[..], "{what}: token {t} alone, active experts");
                let u1 = read(g, &ub, mine.len() * de);
                for (j1, &e) in mine.iter().enumerate() {
                    let j = union32.iter().position(|&x| x == e).unwrap();
                    assert_eq!(u1[j1 * de..][..de], gu[(t * nu + j) * de..][..de], "{what}: token {t} alone, u of {e}");
                }
                assert_eq!(read(g, &yb, h), gy[t * h..(t + 1) * h], "{what}: token {t} alone vs in the span");
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Attention chains over a cache that already holds pos0 positions, for spans of 1, 3, 7 tokens.

/// The spans each attention chain runs in order, after PRELOAD cached positions.
const PRELOAD: usize = 5;
const SPANS: [(usize, usize); 3] = [(5, 1), (6, 3), (9, 7)];
const T_MAX: usize = 16;
const MAX_K: usize = 7;

/// What cpu::mla::forward_span computes between the projections, for one span.
struct MlaRef {
    /// The queries after RoPE, `[k, heads, qhd]`.
    q: Vec<f32>,
    qabs: Vec<f32>,
    /// `[k, heads, t_len]` scores before / after the softmax, NaN past each query's position.
    scores: Vec<f32>,
    probs: Vec<f32>,
    cbar: Vec<f32>,
    o: Vec<f32>,
}

/// cpu::mla::forward_span's attention, token by token, from the queries `q` and the kv_a outputs
/// `ckv` (`[k, r + rope]`, before the norm and RoPE) of the span at `pos0`; appends to the caches.
#[allow(clippy::too_many_arguments)]
fn mla_ref(
    kv_b: Mat,
    d: MlaShape,
    norm_w: &[f32],
    inv: &[f32],
    pos0: usize,
    q: &[f32],
    ckv: &[f32],
    latent: &mut Vec<f32>,
    k_pe: &mut Vec<f32>,
) -> MlaRef {
    let (heads, nope, rope, vdim, r) = (d.heads, d.nope, d.rope, d.vdim, d.r);
    let qhd = nope + rope;
    let k = ckv.len() / (r + rope);
    let t_len = pos0 + k;
    let scale = 1.0 / (qhd as f32).sqrt();
    let mut out = MlaRef {
        q: q.to_vec(),
        qabs: vec![0.0; k * heads * r],
        scores: vec![f32::NAN; k * heads * t_len],
        probs: vec![f32::NAN; k * heads * t_len],
        cbar: vec![0.0; k * heads * r],
        o: vec![0.0; k * heads * vdim],
    };
    for i in 0..k {
        let pos = pos0 + i;
        let row = &ckv[i * (r + rope)..(i + 1) * (r + rope)];
        let mut c = vec![0.0; r];
        scalar::rmsnorm(&row[..r], norm_w, 1e-6, &mut c);
        let mut pe = row[r..].to_vec();
        scalar::rope_rotate_half(&mut pe, inv, pos);
        latent.extend_from_slice(&c);
        k_pe.extend_from_slice(&pe);
        let n = pos + 1;
        let cache_c = Mat::F32 { data: &latent[..n * r], rows: n, cols: r };
        let cache_pe = Mat::F32 { data: &k_pe[..n * rope], rows: n, cols: rope };
        for h in 0..heads {
            let qi = i * heads + h;
            let qh = &mut out.q[qi * qhd..(qi + 1) * qhd];
            scalar::rope_rotate_half(&mut qh[nope..], inv, pos);
            let rows = h * (nope + vdim);
            let qa = &mut out.qabs[qi * r..(qi + 1) * r];
            scalar::axpy_rows(kv_b.row_range(rows, rows + nope), &qh[..nope], qa);
            let (mut s, mut pe_s) = (vec![0.0; n], vec![0.0; n]);
            scalar::matvec(cache_c, qa, &mut s);
            scalar::matvec(cache_pe, &qh[nope..], &mut pe_s);
            s.iter_mut().zip(&pe_s).for_each(|(a, b)| *a = (*a + b) * scale);
            out.scores[qi * t_len..][..n].copy_from_slice(&s);
            scalar::softmax(&mut s);
            out.probs[qi * t_len..][..n].copy_from_slice(&s);
            let cb = &mut out.cbar[qi * r..(qi + 1) * r];
            scalar::axpy_rows_dense(cache_c, &s, cb);
            scalar::matvec(kv_b.row_range(rows + nope, rows + nope + vdim), cb, &mut out.o[qi * vdim..(qi + 1) * vdim]);
        }
    }
    out
}

/// MLA attention for spans at pos0 > 0, all on the GPU in one submission per span (kv_a norm,
/// RoPE of k_pe, both cache appends, RoPE of q, mla_absorb, attn_scores, causal softmax, attn_mix,
/// mla_out), the commands built once and reused for every span, against cpu::mla's token-by-token
/// computation; every intermediate checked.
#[test]
fn mla_attention_over_the_cache_matches_the_scalar_steps() {
    let Some(dv) = dev() else { return };
    let g = &dv.g;
    let step = &dv.step.buffer;
    let (rn, rope_k, store) = (RmsNorm::new(g), Rope::new(g), StoreRows::new(g));
    let (absorb, scores_k, smax, mix, out_k) =
        (MlaAbsorb::new(g), AttnScores::new(g), Softmax::new(g), AttnMix::new(g), MlaOut::new(g));
    let mut r = rng("mla attention");
    let d = MlaShape { heads: 4, nope: 16, rope: 8, vdim: 16, r: 64 };
    let (heads, nope, rope, vdim, lr) = (d.heads, d.nope, d.rope, d.vdim, d.r);
    let qhd = nope + rope;
    let scale = 1.0 / (qhd as f32).sqrt();
    let kv_b = Stored::new(&mut r, heads * (nope + vdim), lr, 0.3);
    let norm_w = uniform(&mut r, lr, 1.5);
    let inv = scalar::rope_inv_freq(rope, 10000.0);
    // The cache before the first span, and each span's inputs.
    let latent0 = uniform(&mut r, PRELOAD * lr, 1.0);
    let k_pe0 = uniform(&mut r, PRELOAD * rope, 1.0);
    let inputs: Vec<(Vec<f32>, Vec<f32>)> = SPANS
        .iter()
        .map(|&(_, k)| (uniform(&mut r, k * heads * qhd, 1.0), uniform(&mut r, k * (lr + rope), 2.0)))
        .collect();
    for dtype in DTYPES {
        let m = kv_b.mat(dtype);
        let gm = GpuMat::upload(g, "kv_b", m).unwrap();
        let (qb, ckvb, nwb) =
            (g.storage_f32("q", MAX_K * heads * qhd), g.storage_f32("ckv", MAX_K * (lr + rope)), upload(g, &norm_w));
        let cnew = g.storage_f32("c", MAX_K * lr);
        let (latb, kpeb) = (upload(g, &nan_padded(&latent0, T_MAX * lr)), upload(g, &nan_padded(&k_pe0, T_MAX * rope)));
        let (qab, sb) = (g.storage_f32("qabs", MAX_K * heads * lr), g.storage_f32("s", MAX_K * heads * T_MAX));
        let (cb, ob) = (g.storage_f32("cbar", MAX_K * heads * lr), g.storage_f32("o", MAX_K * heads * vdim));
        let q8 = Q8Vector::new(g, heads * lr, MAX_K);
        let tb = upload(g, &rope_table(&inv, T_MAX));
        let kv_norm = NormRows { n: lr, in_stride: lr + rope, out_stride: lr, div: 1.0, tokens: Tokens::Span };
        let k_pe_slice = RopeSlices { heads: 1, dim: rope, stride: rope, base: lr, token_stride: lr + rope };
        let q_pe_slices = RopeSlices { heads, dim: rope, stride: qhd, base: nope, token_stride: heads * qhd };
        let pre = [
            rn.cmd(g, kv_norm, 1e-6, &ckvb, &nwb, &cnew, step),
            rope_k.cmd(g, &tb, &ckvb, k_pe_slice, step),
            store.cmd(g, lr, lr, 0, &cnew, &latb, step),
            store.cmd(g, rope, lr + rope, lr, &ckvb, &kpeb, step),
            rope_k.cmd(g, &tb, &qb, q_pe_slices, step),
            absorb.cmd(g, &gm, d, &qb, &qab).unwrap(),
        ];
        let scores = [scores_k.cmd_mla(g, d, scale, &qab, &qb, &latb, &kpeb, &sb, step)];
        let post = [smax.cmd_causal(g, heads, &sb, step), mix.cmd_mla(g, heads, lr, &sb, &latb, &cb, step)];
        let out = out_k.cmds(g, &gm, d, &cb, &ob, Some(&q8)).unwrap();

        let (mut latent, mut k_pe) = (latent0.clone(), k_pe0.clone());
        for (&(pos0, k), (q, ckv)) in SPANS.iter().zip(&inputs) {
            let what = format!("{dtype} pos0 {pos0} k {k}");
            let t_len = pos0 + k;
            let want = mla_ref(m, d, &norm_w, &inv, pos0, q, ckv, &mut latent, &mut k_pe);
            write(g, &qb, q);
            write(g, &ckvb, ckv);
            write(g, &sb, &vec![f32::NAN; MAX_K * heads * T_MAX]);
            dv.run(Span::new(pos0, k), &[&pre, &scores, &post, &out]);
            let (got_q, got_lat, got_pe) =
                (read(g, &qb, q.len()), read(g, &latb, T_MAX * lr), read(g, &kpeb, T_MAX * rope));
            let (qabs, probs) = (read(g, &qab, want.qabs.len()), read(g, &sb, k * heads * t_len));
            let (cbar, got_o) = (read(g, &cb, want.cbar.len()), read(g, &ob, want.o.len()));
            // The scores, which the softmax overwrote in place: the scores command alone again
            // (its inputs are intact).
            write(g, &sb, &vec![f32::NAN; MAX_K * heads * T_MAX]);
            dv.run(Span::new(pos0, k), &[&scores]);
            let got_s = read(g, &sb, k * heads * t_len);

            assert_eq!(got_q, want.q, "{what}: q after RoPE");
            assert_rel(&format!("{what} latent cache"), &got_lat[..t_len * lr], &latent, 1e-3);
            untouched(&format!("{what}: latent cache past the span"), &got_lat[t_len * lr..]);
            assert_eq!(got_pe[..t_len * rope], k_pe[..], "{what}: k_pe cache (RoPE and a copy: exact)");
            untouched(&format!("{what}: k_pe cache past the span"), &got_pe[t_len * rope..]);
            let bound = |v: &[f32], s: f32| vec![s; v.len()];
            assert_close(&format!("{what} q_abs"), &qabs, &want.qabs, &bound(&want.qabs, norm(q) * norm(&kv_b.f)));
            let s_bound = (norm(&want.qabs) * norm(&latent) + norm(q) * norm(&k_pe)) * scale;
            check_causal(&format!("{what} scores"), &got_s, &want.scores, heads, pos0, t_len, s_bound);
            check_causal(&format!("{what} probs"), &probs, &want.probs, heads, pos0, t_len, 1.0);
            assert_close(&format!("{what} c̄"), &cbar, &want.cbar, &bound(&want.cbar, norm(&latent)));

            // o: the kernel on its own input (scalar::matvec of each head's value rows times the
            // GPU's c̄, bound 1e-5 · Σ|terms|), and the chain against the CPU's o. For q8 the GPU's
            // c̄ is quantized, and an ulp of difference may round an entry to the next step: the
            // chain's bound then adds one step (its block's scale) times |w| per term.
            let wf = kv_b.values(dtype);
            let (mut twin, mut twin_scale, mut o_bound) = (vec![0.0; want.o.len()], vec![], vec![]);
            let chain_bound = 1e-5 * norm(&want.cbar) * norm(&kv_b.f);
            for qi in 0..k * heads {
                let rows = (qi % heads) * (nope + vdim) + nope;
                let c = &cbar[qi * lr..(qi + 1) * lr];
                scalar::matvec(m.row_range(rows, rows + vdim), c, &mut twin[qi * vdim..(qi + 1) * vdim]);
                twin_scale.extend(magnitudes(&wf[rows * lr..(rows + vdim) * lr], c, vdim, lr));
                let sx: Vec<f32> =
                    want.cbar[qi * lr..(qi + 1) * lr].chunks_exact(Q8_BLOCK).map(|b| norm_inf(b) / 127.0).collect();
                for i in 0..vdim {
                    let w_row = &wf[(rows + i) * lr..(rows + i + 1) * lr];
                    let one_step: f32 = w_row.iter().enumerate().map(|(j, w)| w.abs() * sx[j / Q8_BLOCK]).sum();
                    o_bound.push(chain_bound + if dtype == "q8" { one_step } else { 0.0 });
                }
            }
            assert_close(&format!("{what} o vs scalar::matvec of the GPU's c̄"), &got_o, &twin, &twin_scale);
            assert_within(&format!("{what} o"), &got_o, &want.o, &o_bound);
        }
    }
}

fn norm_inf(v: &[f32]) -> f32 {
    v.iter().fold(0.0f32, |m, x| m.max(x.abs()))
}

/// What cpu::gqa::forward_span computes between the projections, for one span.
struct GqaRef {
    /// The queries after RoPE, `[k, heads · hd]`.
    q: Vec<f32>,
    /// `[k, heads, t_len]` scores before / after the softmax, NaN past each query's position.
    scores: Vec<f32>,
    probs: Vec<f32>,
    o: Vec<f32>,
}

/// cpu::gqa::forward_span's attention, token by token, from the span's q, k, v projections
/// (before RoPE) at `pos0`; appends to the caches.
#[allow(clippy::too_many_arguments)]
fn gqa_ref(
    heads: usize,
    kv_heads: usize,
    hd: usize,
    inv: &[f32],
    pos0: usize,
    (q, kn, vn): (&[f32], &[f32], &[f32]),
    k_cache: &mut Vec<f32>,
    v_cache: &mut Vec<f32>,
) -> GqaRef {
    let (qw, kw) = (heads * hd, kv_heads * hd);
    let k = q.len() / qw;
    let t_len = pos0 + k;
    let (group, scale) = (heads / kv_heads, 1.0 / (hd as f32).sqrt());
    let mut out = GqaRef {
        q: q.to_vec(),
        scores: vec![f32::NAN; k * heads * t_len],
        probs: vec![f32::NAN; k * heads * t_len],
        o: vec![0.0; k * qw],
    };
    for i in 0..k {
        let pos = pos0 + i;
        let qi = &mut out.q[i * qw..(i + 1) * qw];
        for h in 0..heads {
            scalar::rope_rotate_half(&mut qi[h * hd..(h + 1) * hd], inv, pos);
        }
        let mut ki = kn[i * kw..(i + 1) * kw].to_vec();
        for h in 0..kv_heads {
            scalar::rope_rotate_half(&mut ki[h * hd..(h + 1) * hd], inv, pos);
        }
        k_cache.extend_from_slice(&ki);
        v_cache.extend_from_slice(&vn[i * kw..(i + 1) * kw]);
        for h in 0..heads {
            let kvh = h / group;
            let qh = &qi[h * hd..(h + 1) * hd];
            let mut s: Vec<f32> = (0..=pos)
                .map(|t| scalar::dot(&k_cache[t * kw + kvh * hd..t * kw + (kvh + 1) * hd], qh) * scale)
                .collect();
            let row = (i * heads + h) * t_len;
            out.scores[row..row + pos + 1].copy_from_slice(&s);
            scalar::softmax(&mut s);
            out.probs[row..row + pos + 1].copy_from_slice(&s);
            let oh = &mut out.o[i * qw + h * hd..i * qw + (h + 1) * hd];
            for (t, &p) in s.iter().enumerate() {
                for (acc, &vv) in oh.iter_mut().zip(&v_cache[t * kw + kvh * hd..t * kw + (kvh + 1) * hd]) {
                    *acc += p * vv;
                }
            }
        }
    }
    out
}

/// GQA attention for spans at pos0 > 0, all on the GPU in one submission per span (RoPE of q and
/// k, both cache appends, attn_scores, causal softmax, attn_mix), the commands built once, against
/// cpu::gqa's token-by-token computation.
#[test]
fn gqa_attention_over_the_cache_matches_the_scalar_steps() {
    let Some(dv) = dev() else { return };
    let g = &dv.g;
    let step = &dv.step.buffer;
    let (rope, store, scores_k, smax, mix) =
        (Rope::new(g), StoreRows::new(g), AttnScores::new(g), Softmax::new(g), AttnMix::new(g));
    let mut r = rng("gqa attention");
    let (heads, kv_heads, hd) = (6, 2, 16);
    let (qw, kw) = (heads * hd, kv_heads * hd);
    let scale = 1.0 / (hd as f32).sqrt();
    let inv = scalar::rope_inv_freq(hd, 10000.0);
    let (mut k_cache, mut v_cache) = (uniform(&mut r, PRELOAD * kw, 1.0), uniform(&mut r, PRELOAD * kw, 1.0));
    let (qb, kb, vb) = (g.storage_f32("q", MAX_K * qw), g.storage_f32("k", MAX_K * kw), g.storage_f32("v", MAX_K * kw));
    let (kcb, vcb) = (upload(g, &nan_padded(&k_cache, T_MAX * kw)), upload(g, &nan_padded(&v_cache, T_MAX * kw)));
    let (sb, ob, tb) = (
        g.storage_f32("s", MAX_K * heads * T_MAX),
        g.storage_f32("o", MAX_K * qw),
        upload(g, &rope_table(&inv, T_MAX)),
    );
    let pre = [
        rope.cmd(g, &tb, &qb, RopeSlices { heads, dim: hd, stride: hd, base: 0, token_stride: qw }, step),
        rope.cmd(g, &tb, &kb, RopeSlices { heads: kv_heads, dim: hd, stride: hd, base: 0, token_stride: kw }, step),
        store.cmd(g, kw, kw, 0, &kb, &kcb, step),
        store.cmd(g, kw, kw, 0, &vb, &vcb, step),
    ];
    let scores = [scores_k.cmd_gqa(g, heads, kv_heads, hd, scale, &qb, &kcb, &sb, step)];
    let post = [smax.cmd_causal(g, heads, &sb, step), mix.cmd_gqa(g, heads, kv_heads, hd, &sb, &vcb, &ob, step)];
    for (pos0, k) in SPANS {
        let what = format!("gqa pos0 {pos0} k {k}");
        let t_len = pos0 + k;
        let (q, kn, vn) = (uniform(&mut r, k * qw, 1.0), uniform(&mut r, k * kw, 1.0), uniform(&mut r, k * kw, 1.0));
        let want = gqa_ref(heads, kv_heads, hd, &inv, pos0, (&q, &kn, &vn), &mut k_cache, &mut v_cache);
        write(g, &qb, &q);
        write(g, &kb, &kn);
        write(g, &vb, &vn);
        write(g, &sb, &vec![f32::NAN; MAX_K * heads * T_MAX]);
        dv.run(Span::new(pos0, k), &[&pre, &scores, &post]);
        let (got_q, got_k, got_v) = (read(g, &qb, q.len()), read(g, &kcb, T_MAX * kw), read(g, &vcb, T_MAX * kw));
        let (probs, got_o) = (read(g, &sb, k * heads * t_len), read(g, &ob, want.o.len()));
        write(g, &sb, &vec![f32::NAN; MAX_K * heads * T_MAX]);
        dv.run(Span::new(pos0, k), &[&scores]);
        let got_s = read(g, &sb, k * heads * t_len);

        assert_eq!(got_q, want.q, "{what}: q after RoPE");
        assert_eq!(got_k[..t_len * kw], k_cache[..], "{what}: k cache (RoPE and a copy: exact)");
        assert_eq!(got_v[..t_len * kw], v_cache[..], "{what}: v cache (a copy)");
        untouched(&format!("{what}: k cache past the span"), &got_k[t_len * kw..]);
        untouched(&format!("{what}: v cache past the span"), &got_v[t_len * kw..]);
        let s_bound = norm(&want.q) * norm(&k_cache) * scale;
        check_causal(&format!("{what} scores"), &got_s, &want.scores, heads, pos0, t_len, s_bound);
        check_causal(&format!("{what} probs"), &probs, &want.probs, heads, pos0, t_len, 1.0);
        assert_close(&format!("{what} o"), &got_o, &want.o, &vec![norm(&v_cache); want.o.len()]);
    }
}

// ---------------------------------------------------------------------------------------------
// Greedy sampling.

/// The argmax command's buffers, written per case as the backend writes them per generation.
struct ArgmaxBufs {
    params: wgpu::Buffer,
    logits: wgpu::Buffer,
    seen: wgpu::Buffer,
    ids: wgpu::Buffer,
    out: wgpu::Buffer,
    cap: usize,
}

/// Runs the argmax command on `logits` with `context` penalised by `penalty`; returns (id, the
/// non-finite flag) after checking the id went to both outputs. The logits buffer's tail past the
/// vocabulary holds +∞, which must be ignored.
fn argmax_gpu(d: &Dev, cmd: &[Cmd], b: &ArgmaxBufs, logits: &[f32], context: &[u32], penalty: f32) -> (u32, u32) {
    let g = &d.g;
    let vocab = logits.len();
    let mut seen = vec![0u32; b.cap.div_ceil(32)];
    for &id in context {
        seen[id as usize / 32] |= 1 << (id % 32);
    }
    let mut l = logits.to_vec();
    l.resize(b.cap, f32::INFINITY);
    write(g, &b.logits, &l);
    write(g, &b.seen, &seen);
    write(g, &b.params, &[vocab as u32, penalty.to_bits(), 0, 0]);
    write(g, &b.ids, &[u32::MAX; 2]);
    write(g, &b.out, &[u32::MAX; 2]);
    d.run(Span::new(0, 1), &[cmd]);
    let (ids, out) = (read_u32(g, &b.ids, 2), read_u32(g, &b.out, 2));
    assert_eq!(ids[0], out[0], "the id in the next step's input and in the readback word");
    (out[0], out[1])
}

#[test]
fn argmax_matches_greedy_sampling_after_the_repetition_penalty() {
    let Some(d) = dev() else { return };
    let g = &d.g;
    let am = Argmax::new(g);
    let mut r = rng("argmax");
    let cap = 40_000;
    let b = ArgmaxBufs {
        params: g.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("argmax.params"),
            size: 16,
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        }),
        logits: g.storage_f32("logits", cap),
        seen: g.storage_f32("seen", cap.div_ceil(32)),
        ids: g.storage_f32("ids", 2),
        out: g.storage_f32("out", 2),
        cap,
    };
    let cmd = [am.cmd(g, &b.params, &b.logits, &b.seen, &b.ids, &b.out)];
    let cpu = |logits: &[f32], context: &[u32], penalty: f32| {
        let mut l = logits.to_vec();
        apply_repetition_penalty(&mut l, context, penalty);
        argmax(&l) as u32
    };
    // 7: most of the workgroup's threads see no logit.
    for vocab in [7, 256, 1000, 32_003] {
        for penalty in [1.0, 1.3, 0.75] {
            let what = format!("vocab {vocab} penalty {penalty}");
            // Random logits; the context (repeats included) holds the unpenalised winner.
            let logits = uniform(&mut r, vocab, 8.0);
            let mut context: Vec<u32> = (0..30).map(|_| below(&mut r, vocab) as u32).collect();
            context.push(cpu(&logits, &[], 1.0));
            let got = argmax_gpu(&d, &cmd, &b, &logits, &context, penalty);
            assert_eq!(got, (cpu(&logits, &context, penalty), 0), "{what}: random logits");

            // Ties: the maximum at three ids (in different threads' shares) → the lowest id.
            let mut tied = logits.clone();
            let ids: Vec<usize> = (0..3).map(|_| below(&mut r, vocab)).collect();
            ids.iter().for_each(|&i| tied[i] = 9.0);
            let lowest = *ids.iter().min().unwrap() as u32;
            assert_eq!(cpu(&tied, &[], penalty), lowest, "{what}: the CPU takes the first maximum");
            assert_eq!(argmax_gpu(&d, &cmd, &b, &tied, &[], penalty), (lowest, 0), "{what}: tie");

            // Non-finite logits: flagged (the host reports the damaged model; the id is moot).
            for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
                let mut l = logits.clone();
                l[below(&mut r, vocab)] = bad;
                assert_eq!(argmax_gpu(&d, &cmd, &b, &l, &context, penalty).1, 1, "{what}: a {bad} logit is flagged");
            }
        }
        // A tie made by the penalty (÷ 2 is exact): 20 seen at one id, 10 unseen at another → the
        // lower id, whichever of the two it is.
        if vocab >= 2 {
            let logits = uniform(&mut r, vocab, 8.0);
            let (a, c) = loop {
                let (a, c) = (below(&mut r, vocab), below(&mut r, vocab));
                if a != c {
                    break (a, c);
                }
            };
            let mut l = logits.clone();
            l[a] = 20.0;
            l[c] = 10.0;
            let want = a.min(c) as u32;
            assert_eq!(cpu(&l, &[a as u32], 2.0), want, "vocab {vocab}: the CPU on a penalty-made tie");
            assert_eq!(argmax_gpu(&d, &cmd, &b, &l, &[a as u32], 2.0), (want, 0), "vocab {vocab}: penalty-made tie");
        }
    }
}
