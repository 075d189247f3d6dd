//! Every GPU kernel (src/gpu/ops, WGSL in src/gpu/shaders) against its scalar twin in
//! `kernels::scalar` on fresh random inputs (the seed is printed; BLOCKFFN_SEED=N repeats a run).
//! Tolerance: f32 sums in another order differ by at most a few ulps of Σ|terms|; the bound used is
//! 1e-5 · Σ|w_j x_j| per output (matvec), 1e-5 relative elsewhere; q8 quantization must be equal.
//!
//! Needs a GPU adapter (natively: Mesa lavapipe is enough). Without one the tests print why and
//! pass, unless BLOCKFFN_REQUIRE_GPU=1 (scripts/test.sh sets it), which makes that a failure.
#![cfg(feature = "gpu")]

use blockffn::gpu::ops::quantize_q8::Q8Vector;
use blockffn::gpu::ops::{Matvec, QuantizeQ8, RmsNorm, SiluScaled, Softmax};
use blockffn::gpu::{Gpu, GpuMat};
use blockffn::kernels::scalar;
use blockffn::tensor::{quantize_q8, Mat};
use half::{bf16, f16};
use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn gpu() -> Option<Gpu> {
    match Gpu::new_blocking() {
        Ok(g) => {
            eprintln!("GPU: {} ({:?}, {:?})", g.info.name, g.info.device_type, g.info.backend);
            Some(g)
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

fn upload(g: &Gpu, v: &[f32]) -> wgpu::Buffer {
    g.storage("test", bytemuck::cast_slice(v))
}

/// `Σ_j |w_rj · x_j|` per row, the scale of a reordered sum's rounding error.
fn magnitudes(w: &[f32], x: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    (0..rows).map(|r| (0..cols).map(|c| (w[r * cols + c] * x[c]).abs()).sum()).collect()
}

fn assert_close(what: &str, got: &[f32], want: &[f32], scale: &[f32]) {
    assert_eq!(got.len(), want.len());
    let mut worst = 0.0f32;
    for (i, ((&g, &w), &s)) in got.iter().zip(want).zip(scale).enumerate() {
        let d = (g - w).abs();
        assert!(d <= 1e-5 * s + f32::MIN_POSITIVE, "{what}[{i}]: GPU {g} vs CPU {w} (|Δ| {d}, bound {})", 1e-5 * s);
        worst = worst.max(d / s.max(f32::MIN_POSITIVE));
    }
    eprintln!("{what}: {} values, worst |Δ| / Σ|terms| = {worst:.2e}", got.len());
}

/// Runs the GPU matvec of `w` (its f32 values `wf` for the error scale) against scalar::matvec.
fn check_matvec(g: &Gpu, mv: &Matvec, what: &str, w: Mat, wf: &[f32], x: &[f32], max_bytes: Option<u64>) {
    let (rows, cols) = (w.rows(), w.cols());
    let gw = match max_bytes {
        Some(m) => GpuMat::upload_limited(g, what, w, m).expect("upload"),
        None => GpuMat::upload(g, what, w).expect("upload"),
    };
    if let Some(m) = max_bytes {
        assert!(gw.parts.len() > 1, "{what}: a {m}-byte limit should split {rows} rows");
    }
    let xb = upload(g, x);
    let yb = g.storage_f32("y", rows);
    let q8 = Q8Vector::new(g, cols);
    let mut enc = g.device.create_command_encoder(&Default::default());
    mv.encode(g, &mut enc, &gw, &xb, &yb, Some(&q8)).expect("encode");
    g.queue.submit([enc.finish()]);
    let got = g.read_f32(&yb, rows).expect("readback");
    let mut want = vec![0.0; rows];
    scalar::matvec(w, x, &mut want);
    assert_close(what, &got, &want, &magnitudes(wf, x, rows, cols));
}

#[test]
fn matvec_every_dtype_matches_scalar() {
    let Some(g) = gpu() else { return };
    let mv = Matvec::new(&g);
    let mut r = rng("matvec");
    // Model-like shapes, a ragged one (rows not a multiple of the 4 per workgroup, cols not of 256),
    // and a split one (parts of 7 rows).
    for (rows, cols, limit) in [(768, 768, None), (256, 1024, None), (37, 96, None), (61, 320, Some(7))] {
        let wf = uniform(&mut r, rows * cols, 0.5);
        let x = uniform(&mut r, cols, 2.0);
        let lim = |elem: u64| limit.map(|n: u64| n * cols as u64 * elem);
        check_matvec(&g, &mv, &format!("f32 {rows}x{cols}"), Mat::F32 { data: &wf, rows, cols }, &wf, &x, lim(4));
        let h: Vec<f16> = wf.iter().map(|&v| f16::from_f32(v)).collect();
        let hf: Vec<f32> = h.iter().map(|v| v.to_f32()).collect();
        check_matvec(&g, &mv, &format!("f16 {rows}x{cols}"), Mat::F16 { data: &h, rows, cols }, &hf, &x, lim(2));
        let b: Vec<bf16> = wf.iter().map(|&v| bf16::from_f32(v)).collect();
        let bf: Vec<f32> = b.iter().map(|v| v.to_f32()).collect();
        check_matvec(&g, &mv, &format!("bf16 {rows}x{cols}"), Mat::BF16 { data: &b, rows, cols }, &bf, &x, lim(2));
        let (q, s) = quantize_q8(&wf).expect("finite");
        let qf: Vec<f32> = q.iter().enumerate().map(|(i, &v)| v as f32 * s[i / 32]).collect();
        let m = Mat::Q8 { data: &q, scales: &s, rows, cols };
        check_matvec(&g, &mv, &format!("q8 {rows}x{cols}"), m, &qf, &x, lim(1));
    }
}

#[test]
fn q8_matvec_with_a_non_finite_input_takes_the_exact_path_like_the_cpu() {
    let Some(g) = gpu() else { return };
    let mv = Matvec::new(&g);
    let mut r = rng("q8 non-finite");
    let (rows, cols) = (16, 128);
    let wf = uniform(&mut r, rows * cols, 0.5);
    let (q, s) = quantize_q8(&wf).expect("finite");
    let mut x = uniform(&mut r, cols, 2.0);
    x[77] = f32::INFINITY;
    let gw = GpuMat::upload(&g, "w", Mat::Q8 { data: &q, scales: &s, rows, cols }).expect("upload");
    let (xb, yb, q8) = (upload(&g, &x), g.storage_f32("y", rows), Q8Vector::new(&g, cols));
    let mut enc = g.device.create_command_encoder(&Default::default());
    mv.encode(&g, &mut enc, &gw, &xb, &yb, Some(&q8)).expect("encode");
    g.queue.submit([enc.finish()]);
    let got = g.read_f32(&yb, rows).expect("readback");
    let mut want = vec![0.0; rows];
    scalar::matvec(Mat::Q8 { data: &q, scales: &s, rows, cols }, &x, &mut want);
    for (i, (a, b)) in got.iter().zip(&want).enumerate() {
        assert!(a == b || (a.is_nan() && b.is_nan()), "row {i}: GPU {a} vs CPU {b}");
    }
}

#[test]
fn quantize_q8_equals_the_cpu_quantization() {
    let Some(g) = gpu() else { return };
    let qz = QuantizeQ8::new(&g);
    let mut r = rng("quantize_q8");
    let n = 4096;
    let mut x = uniform(&mut r, n, 3.0);
    x[32..64].fill(0.0); // an all-zero block: scale 0
    let (want_q, want_s) = quantize_q8(&x).expect("finite");
    let xb = upload(&g, &x);
    let out = Q8Vector::new(&g, n);
    let mut enc = g.device.create_command_encoder(&Default::default());
    qz.encode(&g, &mut enc, &xb, &out);
    g.queue.submit([enc.finish()]);
    let s = g.read_f32(&out.scales, n / 32).expect("readback");
    let words = g.read_f32(&out.q, n / 4).expect("readback");
    let q: Vec<i8> = words.iter().flat_map(|w| w.to_bits().to_le_bytes()).map(|b| b as i8).collect();
    assert_eq!(s, want_s, "block scales");
    let differ = q.iter().zip(&want_q).filter(|(a, b)| a != b).count();
    assert_eq!(differ, 0, "{differ} of {n} quantized values differ");
}

#[test]
fn rmsnorm_softmax_silu_match_scalar() {
    let Some(g) = gpu() else { return };
    let (rn, sm, si) = (RmsNorm::new(&g), Softmax::new(&g), SiluScaled::new(&g));
    let mut r = rng("rmsnorm/softmax/silu");
    for n in [256, 1000, 2048] {
        let x = uniform(&mut r, n, 4.0);
        let w = uniform(&mut r, n, 1.5);
        let (xb, wb, ob) = (upload(&g, &x), upload(&g, &w), g.storage_f32("out", n));
        let sb = upload(&g, &x);
        let lb = upload(&g, &x);
        let mut enc = g.device.create_command_encoder(&Default::default());
        rn.encode(&g, &mut enc, n, 1e-6, &xb, &wb, &ob);
        sm.encode(&g, &mut enc, n, &sb);
        si.encode(&g, &mut enc, n, 0.37, &lb);
        g.queue.submit([enc.finish()]);

        let mut want = vec![0.0; n];
        scalar::rmsnorm(&x, &w, 1e-6, &mut want);
        let scale: Vec<f32> = want.iter().map(|v| v.abs().max(1e-3)).collect();
        assert_close(&format!("rmsnorm {n}"), &g.read_f32(&ob, n).unwrap(), &want, &scale);

        let mut want = x.clone();
        scalar::softmax(&mut want);
        let scale: Vec<f32> = want.iter().map(|v| v.abs().max(1e-6)).collect();
        assert_close(&format!("softmax {n}"), &g.read_f32(&sb, n).unwrap(), &want, &scale);

        let mut want = x.clone();
        scalar::silu_scaled(&mut want, 0.37);
        let scale: Vec<f32> = want.iter().map(|v| v.abs().max(1e-3)).collect();
        assert_close(&format!("silu_scaled {n}"), &g.read_f32(&lb, n).unwrap(), &want, &scale);
    }
}

#[test]
fn a_row_larger_than_the_binding_limit_is_a_typed_error() {
    let Some(g) = gpu() else { return };
    let w = vec![0.0f32; 64];
    let e = GpuMat::upload_limited(&g, "w", Mat::F32 { data: &w, rows: 1, cols: 64 }, 128).err().expect("refused");
    assert_eq!(e.code(), "OutOfMemory", "{e}");
}
