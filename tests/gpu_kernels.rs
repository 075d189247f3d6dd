//! Every GPU kernel (src/gpu/ops, WGSL in src/gpu/shaders) against its scalar twin in
//! `kernels::scalar` on fresh random inputs (the seed is printed; BLOCKFFN_SEED=N repeats a run).
//! Tolerance: f32 sums in another order differ by at most a few ulps of Σ|terms|; the bound used is
//! 1e-5 · Σ|w_j x_j| per output (matvec), 1e-5 relative elsewhere; q8 quantization must be equal.
//!
//! Needs a GPU adapter (natively: Mesa lavapipe is enough). Without one the tests print why and
//! pass, unless BLOCKFFN_REQUIRE_GPU=1 (scripts/test.sh sets it), which makes that a failure.
#![cfg(feature = "gpu")]

use blockffn::config::RouterNorm;
use blockffn::gpu::ops::attn_scores::MlaShape;
use blockffn::gpu::ops::quantize_q8::Q8Vector;
use blockffn::gpu::ops::rope::rope_table;
use blockffn::gpu::ops::route::Routed;
use blockffn::gpu::ops::{
    AddScaled, AttnMix, AttnScores, ChunkDown, ChunkUp, Embed, Matvec, MlaAbsorb, MlaOut, QuantizeQ8, RmsNorm, Rope,
    Route, SiluScaled, Softmax,
};
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
        sm.encode(&g, &mut enc, n, 1, &sb);
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

/// The reference router decision (cpu::block_ffn::route for the ReLU router, written out).
fn route_ref(a: &[f32], norm: RouterNorm, g: &[f32], eps: f32, norm_scale: f32) -> (Vec<f32>, Vec<u32>) {
    let ne = a.len();
    let mut s: Vec<f32> = a.iter().map(|&v| if v > 0.0 { v } else { 0.0 }).collect();
    let active: Vec<u32> = (0..ne as u32).filter(|&e| a[e as usize] > 0.0).collect();
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

fn read_u32(g: &Gpu, b: &wgpu::Buffer, n: usize) -> Vec<u32> {
    g.read_f32(b, n).expect("readback").iter().map(|v| v.to_bits()).collect()
}

#[test]
fn route_matches_the_cpu_router_for_every_norm() {
    let Some(g) = gpu() else { return };
    let route = Route::new(&g);
    let mut r = rng("route");
    for ne in [32, 48, 70] {
        let a = uniform(&mut r, ne, 3.0);
        let gw = uniform(&mut r, ne, 1.0); // norm weights may be negative: activity is never read from them
        for norm in [RouterNorm::Rms, RouterNorm::Sum, RouterNorm::None] {
            let (ab, gb) = (upload(&g, &a), upload(&g, &gw));
            let out = Routed::new(&g, ne);
            let mut enc = g.device.create_command_encoder(&Default::default());
            route.encode(&g, &mut enc, &ab, norm, Some(&gb), 1e-6, 1.3, &out);
            g.queue.submit([enc.finish()]);
            let (want_s, want_active) = route_ref(&a, norm, &gw, 1e-6, 1.3);
            let active = read_u32(&g, &out.active, 1 + ne);
            assert_eq!(&active[1..1 + active[0] as usize], &want_active[..], "{norm:?} ne {ne}: active list");
            let mask = read_u32(&g, &out.mask, ne.div_ceil(32));
            for e in 0..ne {
                assert_eq!(mask[e / 32] >> (e % 32) & 1 == 1, a[e] > 0.0, "{norm:?}: mask bit {e}");
            }
            let scale: Vec<f32> = want_s.iter().map(|v| v.abs().max(1e-3)).collect();
            assert_close(&format!("route {norm:?} ne {ne}"), &g.read_f32(&out.scores, ne).unwrap(), &want_s, &scale);
        }
    }
}

/// One BlockFFN layer for one token, all on the GPU (router matvec → route → chunk_up over the
/// compacted union → chunk_down), against the scalar chain; the active set must be identical.
#[test]
fn sparse_ffn_layer_matches_the_scalar_chunk_kernels() {
    let Some(g) = gpu() else { return };
    let (mv, route, up_k, down_k) = (Matvec::new(&g), Route::new(&g), ChunkUp::new(&g), ChunkDown::new(&g));
    let mut r = rng("sparse ffn layer");
    let (h, ne, de) = (256, 48, 32);
    let x = uniform(&mut r, h, 2.0);
    let wr = uniform(&mut r, ne * h, 0.2);
    let gw = uniform(&mut r, ne, 1.0);
    let upf = uniform(&mut r, ne * de * h, 0.1);
    let downf = uniform(&mut r, ne * de * h, 0.1);
    for dtype in ["f32", "f16", "bf16", "q8"] {
        // Both sides see the same stored weights.
        let (hu, hd): (Vec<f16>, Vec<f16>) =
            (upf.iter().map(|&v| f16::from_f32(v)).collect(), downf.iter().map(|&v| f16::from_f32(v)).collect());
        let (bu, bd): (Vec<bf16>, Vec<bf16>) =
            (upf.iter().map(|&v| bf16::from_f32(v)).collect(), downf.iter().map(|&v| bf16::from_f32(v)).collect());
        let (qu, su) = quantize_q8(&upf).unwrap();
        let (qd, sd) = quantize_q8(&downf).unwrap();
        let rows = ne * de;
        let (up, down) = match dtype {
            "f32" => (Mat::F32 { data: &upf, rows, cols: h }, Mat::F32 { data: &downf, rows, cols: h }),
            "f16" => (Mat::F16 { data: &hu, rows, cols: h }, Mat::F16 { data: &hd, rows, cols: h }),
            "bf16" => (Mat::BF16 { data: &bu, rows, cols: h }, Mat::BF16 { data: &bd, rows, cols: h }),
            _ => (Mat::Q8 { data: &qu, scales: &su, rows, cols: h }, Mat::Q8 { data: &qd, scales: &sd, rows, cols: h }),
        };

        // CPU: scalar router matvec, the reference routing, scalar chunk kernels (k = 1).
        let mut a = vec![0.0; ne];
        scalar::matvec(Mat::F32 { data: &wr, rows: ne, cols: h }, &x, &mut a);
        let (scores, active) = route_ref(&a, RouterNorm::Rms, &gw, 1e-6, 1.0);
        let union: Vec<u16> = active.iter().map(|&e| e as u16).collect();
        let mut u = vec![0.0; union.len() * de];
        scalar::chunk_up(up, de, &union, &x, &scores, ne, &mut u);
        let mut y = vec![0.0; h];
        scalar::chunk_down(down, de, &union, &u, &mut y);

        // GPU: the same four steps in one submission.
        let gr = GpuMat::upload(&g, "router", Mat::F32 { data: &wr, rows: ne, cols: h }).unwrap();
        let (gup, gdown) = (GpuMat::upload(&g, "up", up).unwrap(), GpuMat::upload(&g, "down", down).unwrap());
        let (xb, gb, ab) = (upload(&g, &x), upload(&g, &gw), g.storage_f32("a", ne));
        let routed = Routed::new(&g, ne);
        let (ub, yb, q8) = (g.storage_f32("u", ne * de), g.storage_f32("y", h), Q8Vector::new(&g, h));
        let mut enc = g.device.create_command_encoder(&Default::default());
        mv.encode(&g, &mut enc, &gr, &xb, &ab, None).unwrap();
        route.encode(&g, &mut enc, &ab, RouterNorm::Rms, Some(&gb), 1e-6, 1.0, &routed);
        up_k.encode(&g, &mut enc, &gup, de, ne, 1, &xb, &routed.scores, &routed.active, &ub, Some(&q8)).unwrap();
        down_k.encode(&g, &mut enc, &gdown, de, 1, &ub, &routed.active, &yb).unwrap();
        g.queue.submit([enc.finish()]);

        let got_active = read_u32(&g, &routed.active, 1 + ne);
        assert_eq!(&got_active[1..1 + got_active[0] as usize], &active[..], "{dtype}: active experts");
        let gu = g.read_f32(&ub, union.len() * de).unwrap();
        // Scale of each u: Σ |up_r · x| · |score| (silu' ≤ 1.1 carries the dot product's rounding
        // over), plus |u| times the score's relative uncertainty: the router logit a_e is itself a
        // reordered sum, so its relative error is up to Σ|w_r,e · x| / |a_e| (in 1e-5 units).
        let rel: Vec<f32> = (0..ne)
            .map(|e| (0..h).map(|c| (wr[e * h + c] * x[c]).abs()).sum::<f32>() / a[e].abs().max(f32::MIN_POSITIVE))
            .collect();
        let mut row = vec![0.0f32; h];
        let mut uscale = vec![0.0f32; u.len()];
        for (j, &e) in union.iter().enumerate() {
            for rr in 0..de {
                scalar::row_to_f32(up, e as usize * de + rr, &mut row);
                let m: f32 = row.iter().zip(&x).map(|(a, b)| (a * b).abs()).sum();
                uscale[j * de + rr] = 1.1 * m * scores[e as usize].abs() + u[j * de + rr].abs() * rel[e as usize];
            }
        }
        assert_close(&format!("{dtype} chunk_up"), &gu, &u, &uscale);
        // Scale of each output: Σ |u_r · down_r[i]| over the union's rows.
        let mut dense_down = vec![0.0f32; h];
        let mut yscale = vec![0.0f32; h];
        for (j, &e) in union.iter().enumerate() {
            for rr in 0..de {
                scalar::row_to_f32(down, e as usize * de + rr, &mut dense_down);
                for i in 0..h {
                    yscale[i] += (u[j * de + rr] * dense_down[i]).abs() * (1.0 + rel[e as usize]);
                }
            }
        }
        assert_close(
            &format!("{dtype} ffn layer ({} of {ne} experts)", union.len()),
            &g.read_f32(&yb, h).unwrap(),
            &y,
            &yscale,
        );
    }
}

fn norm(v: &[f32]) -> f32 {
    v.iter().map(|x| x * x).sum::<f32>().sqrt()
}

/// Weights of `rows × cols` in `dtype` ("f32", "f16", "bf16", "q8"), their f32 values, and the Mat.
struct Stored {
    f: Vec<f32>,
    h: Vec<f16>,
    b: Vec<bf16>,
    q: (Vec<i8>, Vec<f32>),
    rows: usize,
    cols: usize,
}

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
}

const DTYPES: [&str; 4] = ["f32", "f16", "bf16", "q8"];

#[test]
fn embed_rope_and_residual_match_scalar() {
    let Some(g) = gpu() else { return };
    let (emb, rope, add) = (Embed::new(&g), Rope::new(&g), AddScaled::new(&g));
    let mut r = rng("embed/rope/residual");
    let (vocab, hsz) = (50, 96);
    let table = Stored::new(&mut r, vocab, hsz, 1.0);
    let ids: Vec<u32> = vec![3, 49, 0, 17];
    for dtype in DTYPES {
        let m = table.mat(dtype);
        let gm = GpuMat::upload(&g, "embed", m).unwrap();
        let (idb, hb) = (g.storage("ids", bytemuck::cast_slice(&ids)), g.storage_f32("h", ids.len() * hsz));
        let mut enc = g.device.create_command_encoder(&Default::default());
        emb.encode(&g, &mut enc, &gm, 12.0, ids.len(), &idb, &hb).unwrap();
        g.queue.submit([enc.finish()]);
        let got = g.read_f32(&hb, ids.len() * hsz).unwrap();
        let mut want = vec![0.0; ids.len() * hsz];
        for (row, &id) in want.chunks_exact_mut(hsz).zip(&ids) {
            scalar::row_to_f32(m, id as usize, row);
            row.iter_mut().for_each(|v| *v *= 12.0);
        }
        assert_eq!(got, want, "{dtype} embed: a gather and one multiply must be exact");
    }

    // RoPE: 5 heads of 32 at stride 40 from offset 8, at a large position (table-based cos/sin).
    let inv = scalar::rope_inv_freq(32, 10000.0);
    let tb = upload(&g, &rope_table(&inv, 1024));
    let x = uniform(&mut r, 8 + 5 * 40, 2.0);
    let xb = upload(&g, &x);
    let y = uniform(&mut r, x.len(), 1.0);
    let (yb, hb) = (upload(&g, &y), upload(&g, &x));
    let mut enc = g.device.create_command_encoder(&Default::default());
    rope.encode(&g, &mut enc, &tb, &xb, 5, 32, 40, 8, 1000);
    add.encode(&g, &mut enc, x.len(), 0.3, &yb, &hb);
    g.queue.submit([enc.finish()]);
    let mut want = x.clone();
    for h in 0..5 {
        scalar::rope_rotate_half(&mut want[8 + h * 40..8 + h * 40 + 32], &inv, 1000);
    }
    assert_eq!(g.read_f32(&xb, x.len()).unwrap(), want, "rope: the same f32 cos/sin and two products each");
    let want: Vec<f32> = x.iter().zip(&y).map(|(h, y)| h + y * 0.3).collect();
    assert_eq!(g.read_f32(&hb, x.len()).unwrap(), want, "h += y · s");
}

#[test]
fn mla_attention_over_the_cache_matches_the_scalar_steps() {
    let Some(g) = gpu() else { return };
    let (absorb, scores_k, smax, mix, out_k) =
        (MlaAbsorb::new(&g), AttnScores::new(&g), Softmax::new(&g), AttnMix::new(&g), MlaOut::new(&g));
    let mut r = rng("mla attention");
    let d = MlaShape { heads: 4, nope: 16, rope: 8, vdim: 16, r: 64 };
    let (qhd, t_len) = (d.nope + d.rope, 9);
    let scale = 1.0 / (qhd as f32).sqrt();
    let kv_b = Stored::new(&mut r, d.heads * (d.nope + d.vdim), d.r, 0.3);
    let q = uniform(&mut r, d.heads * qhd, 1.0);
    let latent = uniform(&mut r, t_len * d.r, 1.0);
    let k_pe = uniform(&mut r, t_len * d.rope, 1.0);
    for dtype in DTYPES {
        let m = kv_b.mat(dtype);
        // CPU, head by head, as cpu::mla does it.
        let (mut qabs, mut s_all, mut p_all, mut cbar_all, mut o_all) = (vec![], vec![], vec![], vec![], vec![]);
        for h in 0..d.heads {
            let rows = h * (d.nope + d.vdim);
            let qh = &q[h * qhd..(h + 1) * qhd];
            let mut qa = vec![0.0; d.r];
            scalar::axpy_rows(m.row_range(rows, rows + d.nope), &qh[..d.nope], &mut qa);
            let (mut s, mut pe) = (vec![0.0; t_len], vec![0.0; t_len]);
            scalar::matvec(Mat::F32 { data: &latent, rows: t_len, cols: d.r }, &qa, &mut s);
            scalar::matvec(Mat::F32 { data: &k_pe, rows: t_len, cols: d.rope }, &qh[d.nope..], &mut pe);
            s.iter_mut().zip(&pe).for_each(|(a, b)| *a = (*a + b) * scale);
            s_all.extend_from_slice(&s);
            scalar::softmax(&mut s);
            let mut cbar = vec![0.0; d.r];
            scalar::axpy_rows_dense(Mat::F32 { data: &latent, rows: t_len, cols: d.r }, &s, &mut cbar);
            let mut oh = vec![0.0; d.vdim];
            scalar::matvec(m.row_range(rows + d.nope, rows + d.nope + d.vdim), &cbar, &mut oh);
            qabs.extend(qa);
            p_all.extend(s);
            cbar_all.extend(cbar);
            o_all.extend(oh);
        }
        // GPU: five dispatches for all heads.
        let gm = GpuMat::upload(&g, "kv_b", m).unwrap();
        let (qb, lb, pb) = (upload(&g, &q), upload(&g, &latent), upload(&g, &k_pe));
        let (qab, sb, cb, ob) = (
            g.storage_f32("qabs", d.heads * d.r),
            g.storage_f32("s", d.heads * t_len),
            g.storage_f32("cbar", d.heads * d.r),
            g.storage_f32("o", d.heads * d.vdim),
        );
        let q8 = Q8Vector::new(&g, d.heads * d.r);
        let mut enc = g.device.create_command_encoder(&Default::default());
        absorb.encode(&g, &mut enc, &gm, d, &qb, &qab).unwrap();
        scores_k.encode_mla(&g, &mut enc, d, t_len, scale, &qab, &qb, &lb, &pb, &sb);
        g.queue.submit([enc.finish()]);
        let got_s = g.read_f32(&sb, d.heads * t_len).unwrap();
        let mut enc = g.device.create_command_encoder(&Default::default());
        smax.encode(&g, &mut enc, t_len, d.heads, &sb);
        mix.encode_mla(&g, &mut enc, d.heads, d.r, t_len, &sb, &lb, &cb);
        out_k.encode(&g, &mut enc, &gm, d, &cb, &ob, Some(&q8)).unwrap();
        g.queue.submit([enc.finish()]);

        let bound = |v: &[f32], s: f32| vec![s; v.len()];
        assert_close(
            &format!("{dtype} q_abs"),
            &g.read_f32(&qab, qabs.len()).unwrap(),
            &qabs,
            &bound(&qabs, norm(&q) * norm(&kv_b.f)),
        );
        assert_close(
            &format!("{dtype} scores"),
            &got_s,
            &s_all,
            &bound(&s_all, (norm(&qabs) * norm(&latent) + norm(&q) * norm(&k_pe)) * scale),
        );
        assert_close(&format!("{dtype} probs"), &g.read_f32(&sb, p_all.len()).unwrap(), &p_all, &bound(&p_all, 1.0));
        assert_close(
            &format!("{dtype} c̄"),
            &g.read_f32(&cb, cbar_all.len()).unwrap(),
            &cbar_all,
            &bound(&cbar_all, norm(&latent)),
        );
        assert_close(
            &format!("{dtype} o"),
            &g.read_f32(&ob, o_all.len()).unwrap(),
            &o_all,
            &bound(&o_all, norm(&cbar_all) * norm(&kv_b.f)),
        );
    }
}

#[test]
fn gqa_attention_over_the_cache_matches_the_scalar_steps() {
    let Some(g) = gpu() else { return };
    let (scores_k, smax, mix) = (AttnScores::new(&g), Softmax::new(&g), AttnMix::new(&g));
    let mut r = rng("gqa attention");
    let (heads, kv_heads, hd, t_len) = (6, 2, 16, 7);
    let kw = kv_heads * hd;
    let scale = 1.0 / (hd as f32).sqrt();
    let q = uniform(&mut r, heads * hd, 1.0);
    let k = uniform(&mut r, t_len * kw, 1.0);
    let v = uniform(&mut r, t_len * kw, 1.0);
    let mut want = vec![0.0; heads * hd];
    for h in 0..heads {
        let kvh = h / (heads / kv_heads);
        let mut s: Vec<f32> = (0..t_len)
            .map(|t| scalar::dot(&k[t * kw + kvh * hd..t * kw + (kvh + 1) * hd], &q[h * hd..(h + 1) * hd]) * scale)
            .collect();
        scalar::softmax(&mut s);
        for (t, &p) in s.iter().enumerate() {
            for (acc, &vv) in want[h * hd..(h + 1) * hd].iter_mut().zip(&v[t * kw + kvh * hd..t * kw + (kvh + 1) * hd])
            {
                *acc += p * vv;
            }
        }
    }
    let (qb, kb, vb) = (upload(&g, &q), upload(&g, &k), upload(&g, &v));
    let (sb, ob) = (g.storage_f32("s", heads * t_len), g.storage_f32("o", heads * hd));
    let mut enc = g.device.create_command_encoder(&Default::default());
    scores_k.encode_gqa(&g, &mut enc, heads, kv_heads, hd, t_len, scale, &qb, &kb, &sb);
    smax.encode(&g, &mut enc, t_len, heads, &sb);
    mix.encode_gqa(&g, &mut enc, heads, kv_heads, hd, t_len, &sb, &vb, &ob);
    g.queue.submit([enc.finish()]);
    assert_close("gqa o", &g.read_f32(&ob, want.len()).unwrap(), &want, &vec![norm(&v); want.len()]);
}
