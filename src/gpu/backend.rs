//! The GPU [`Backend`]: the decoder's steps as the kernels of [`super::ops`], every command bound
//! to its buffers once (at load time, or when a cache is made) so a forward is only dispatches.
//! A span of k ≤ [`MAX_SPAN`] tokens is one compute pass in one submission: the host writes the
//! ids and the span uniform, records, submits, and reads back the expert bitmasks with the token
//! id picked on the GPU (greedy) or the requested logits. Routing, the union of active experts and
//! the sparse FFN never leave the device.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use crate::backend::{Backend, SeqCache, StepTimes};
use crate::config::{Attention, Ffn, MlaDims, ModelConfig, Router, RouterNorm};
use crate::experts::{words_for, ExpertMasks};
use crate::kernels::rope_inv_freq;
use crate::layout::{Part, RoleMap};
use crate::model::{FfnMode, PREFILL_BLOCK};
use crate::tensor::DType;
use crate::weights::{TensorInfo, WeightStore};
use crate::{Error, Result};

use super::ops::attn_scores::MlaShape;
use super::ops::chunk_up::Over;
use super::ops::quantize_q8::Q8Vector;
use super::ops::rmsnorm::NormRows;
use super::ops::rope::{rope_table, RopeSlices};
use super::ops::route::{RouteParams, Routed, MAX_EXPERTS};
use super::ops::{
    AddScaled, Argmax, AttnMix, AttnScores, ChunkDown, ChunkUp, Cmd, Embed, Matvec, MlaAbsorb, MlaOut, RmsNorm, Rope,
    Route, SiluScaled, Softmax, Span, StepBuf, StoreRows, Tokens,
};
use super::{Gpu, GpuMat};

/// Most tokens one forward holds: a prefill block or a draft to verify.
pub const MAX_SPAN: usize = PREFILL_BLOCK;

/// eps of MLA's q_a / kv_a norms (fixed in the reference code), as in `cpu::mla`.
const MLA_NORM_EPS: f32 = 1e-6;

/// Every kernel's pipelines, created once.
struct Kernels {
    matvec: Matvec,
    rmsnorm: RmsNorm,
    add: AddScaled,
    silu: SiluScaled,
    softmax: Softmax,
    rope: Rope,
    store: StoreRows,
    embed: Embed,
    argmax: Argmax,
    scores: AttnScores,
    mix: AttnMix,
    absorb: MlaAbsorb,
    mla_out: MlaOut,
    route: Route,
    up: ChunkUp,
    down: ChunkDown,
}

impl Kernels {
    fn new(gpu: &Gpu) -> Kernels {
        Kernels {
            matvec: Matvec::new(gpu),
            rmsnorm: RmsNorm::new(gpu),
            add: AddScaled::new(gpu),
            silu: SiluScaled::new(gpu),
            softmax: Softmax::new(gpu),
            rope: Rope::new(gpu),
            store: StoreRows::new(gpu),
            embed: Embed::new(gpu),
            argmax: Argmax::new(gpu),
            scores: AttnScores::new(gpu),
            mix: AttnMix::new(gpu),
            absorb: MlaAbsorb::new(gpu),
            mla_out: MlaOut::new(gpu),
            route: Route::new(gpu),
            up: ChunkUp::new(gpu),
            down: ChunkDown::new(gpu),
        }
    }
}

enum AttnW {
    Mla { q_a: Option<(GpuMat, wgpu::Buffer)>, q_b: GpuMat, kv_a: GpuMat, kv_a_norm: wgpu::Buffer, kv_b: GpuMat, o: GpuMat },
    Gqa { q: GpuMat, k: GpuMat, v: GpuMat, o: GpuMat },
}

struct LayerW {
    input_norm: wgpu::Buffer,
    attn: AttnW,
}

/// Activations and scratch of one span, `MAX_SPAN` tokens wide, shared by every layer.
struct Scratch {
    ids: wgpu::Buffer,
    h: wgpu::Buffer,
    x: wgpu::Buffer,
    y: wgpu::Buffer,
    /// MLA: `[k, q_lora]` twice (projection, norm); `[k, heads, qhd]` queries; `[k, r + rope]`.
    cq: wgpu::Buffer,
    cqn: wgpu::Buffer,
    q: wgpu::Buffer,
    kv: wgpu::Buffer,
    /// MLA: `[k, r]` normed latents before they enter the cache; GQA: `[k, kv_heads, hd]` values.
    c: wgpu::Buffer,
    q_abs: wgpu::Buffer,
    /// `[k, heads, context]` attention scores, then probabilities.
    s: wgpu::Buffer,
    cbar: wgpu::Buffer,
    o: wgpu::Buffer,
    /// Router logits `[k, ne]`; FFN hidden `[k, ne · de]` (or the dense width); dense gate.
    a: wgpu::Buffer,
    u: wgpu::Buffer,
    g: wgpu::Buffer,
    routed: Option<Routed>,
    /// chunk_down's per-expert partial sums, `[ne, k, H]`.
    part: wgpu::Buffer,
    /// `[ne, 0, 1, …, ne − 1]`: dense mode's "union".
    all: wgpu::Buffer,
    /// `[k, layers, words]`: every token's expert bitmasks, the layout of [`ExpertMasks`].
    masks: wgpu::Buffer,
    logits: wgpu::Buffer,
    /// (vocab, penalty) of argmax, written per call; the context's ids as bits; (id, non-finite).
    argmax_params: wgpu::Buffer,
    seen: wgpu::Buffer,
    picked: wgpu::Buffer,
    readback: wgpu::Buffer,
    rope: wgpu::Buffer,
    q8: Vec<Q8Vector>,
}

impl Scratch {
    fn q8(&self, n: usize) -> Option<&Q8Vector> {
        self.q8.iter().find(|v| v.n == n)
    }
}

/// Only one forward at a time may use the shared scratch: a span's [`GpuActs`] holds this.
#[derive(Default)]
struct Busy {
    taken: Mutex<bool>,
    freed: Condvar,
}

struct BusyGuard(Arc<Busy>);

impl BusyGuard {
    /// Waits for the running span natively (eval's threads); in a browser nothing can wait (one
    /// thread), so a second span while one awaits its readback is refused.
    fn take(b: &Arc<Busy>) -> Result<BusyGuard> {
        let mut t = b.taken.lock().unwrap_or_else(|e| e.into_inner());
        while *t {
            if cfg!(target_arch = "wasm32") {
                return Err(Error::InvalidInput(
                    "the GPU is still running another step of this model; await it before starting the next".into(),
                ));
            }
            t = b.freed.wait(t).unwrap_or_else(|e| e.into_inner());
        }
        *t = true;
        Ok(BusyGuard(b.clone()))
    }
}

impl Drop for BusyGuard {
    fn drop(&mut self) {
        *self.0.taken.lock().unwrap_or_else(|e| e.into_inner()) = false;
        self.0.freed.notify_one();
    }
}

/// The commands of one layer that do not touch a cache.
struct LayerCmds {
    ffn_sparse: Vec<Cmd>,
    ffn_dense: Vec<Cmd>,
}

pub struct GpuBackend {
    gpu: Gpu,
    config: ModelConfig,
    k: Kernels,
    step: StepBuf,
    sc: Scratch,
    layers: Vec<LayerW>,
    embed_cmd: Cmd,
    layer_cmds: Vec<LayerCmds>,
    head_cmds: Vec<Cmd>,
    argmax_cmd: Cmd,
    /// Positions a cache holds (the rope table's and the score rows' length).
    context: usize,
    weight_bytes: u64,
    busy: Arc<Busy>,
    dispatches: AtomicUsize,
    profile: Option<Profile>,
    // Kept alive with the bind groups that use them.
    _mats: Vec<GpuMat>,
    _bufs: Vec<wgpu::Buffer>,
}

/// Timestamps around every step of a span (BLOCKFFN_GPU_PROFILE=1): query 0 before the embedding,
/// 1 + 2l before layer l's attention, 2 + 2l before its FFN, 1 + 2L before the head, 2 + 2L at the end.
struct Profile {
    set: wgpu::QuerySet,
    resolved: wgpu::Buffer,
    count: u32,
    last: Mutex<Option<StepTimes>>,
}

/// The span being recorded: one compute pass of one command encoder.
pub struct GpuActs {
    span: Span,
    enc: Option<wgpu::CommandEncoder>,
    pass: Option<wgpu::ComputePass<'static>>,
    dispatches: usize,
    _busy: BusyGuard,
}

impl GpuActs {
    fn stamp(&mut self, p: &Option<Profile>, i: usize) {
        if let (Some(p), Some(pass)) = (p, self.pass.as_mut()) {
            pass.write_timestamp(&p.set, i as u32);
        }
    }

    fn record(&mut self, cmds: &[Cmd]) {
        if let Some(pass) = self.pass.as_mut() {
            for c in cmds {
                self.dispatches += usize::from(c.record(pass, &self.span));
            }
        }
    }
}

/// One sequence's KV cache on the GPU, `context` positions allocated up front, with the
/// attention commands bound to it.
pub struct GpuCache {
    len: usize,
    attn: Vec<Vec<Cmd>>,
    _bufs: Vec<wgpu::Buffer>,
}

impl SeqCache for GpuCache {
    fn len(&self) -> usize {
        self.len
    }
    /// Rows past `len` are simply overwritten by the next span.
    fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }
    fn advance(&mut self, k: usize) {
        self.len += k;
    }
}

/// The widths of a span's activations, per token.
struct Widths {
    /// The FFN's intermediate width (all experts side by side).
    ffn: usize,
    expert: usize,
    q: usize,
    kv: usize,
    o: usize,
    /// MLA's absorbed query (`heads · kv_lora_rank`); 0 for GQA.
    absorb: usize,
    /// Floats one position takes in a layer's cache.
    cache_row: usize,
}

impl Widths {
    fn of(cfg: &ModelConfig) -> Widths {
        let heads = cfg.num_attention_heads;
        let (ffn, expert) = match cfg.ffn {
            Ffn::Block { num_experts, expert_size, .. } => (num_experts * expert_size, expert_size),
            Ffn::Dense { intermediate_size, .. } => (intermediate_size, 0),
        };
        match &cfg.attention {
            Attention::Mla(d) => {
                let row = d.kv_lora_rank + d.qk_rope_head_dim;
                Widths { ffn, expert, q: heads * d.q_head_dim(), kv: row, o: heads * d.v_head_dim, absorb: heads * d.kv_lora_rank, cache_row: row }
            }
            Attention::Vanilla { num_key_value_heads, head_dim } => {
                let kv = num_key_value_heads * head_dim;
                Widths { ffn, expert, q: heads * head_dim, kv, o: heads * head_dim, absorb: 0, cache_row: 2 * kv }
            }
        }
    }
}

fn gpu_dtype_bytes(t: &TensorInfo) -> u64 {
    let per = match t.dtype {
        DType::F32 => 4,
        DType::F16 | DType::BF16 => 2,
        DType::I8 => 1,
    };
    let scales = if t.dtype == DType::I8 { t.numel() / crate::tensor::Q8_BLOCK * 4 } else { 0 };
    (t.numel() * per + scales) as u64
}

impl GpuBackend {
    /// Uploads the model to `gpu`: checks every tensor against the config (as the CPU backend
    /// does) and every buffer against the device's limits before anything is uploaded, then binds
    /// every command. `store` is consumed: the host copy is freed once the weights are on the GPU.
    /// Checks every tensor and buffer the model needs against `gpu`'s limits, uploading nothing
    /// (`OutOfMemory` or `Unsupported` with the reason): [`GpuBackend::new`] runs it first, and a
    /// caller choosing a backend runs it while it still holds the weights for the CPU.
    pub fn check_fits(gpu: &Gpu, config: &ModelConfig, store: &WeightStore) -> Result<()> {
        let roles = RoleMap::new(config, store)?;
        let cfg = config;
        let (heads, vocab, nl) = (cfg.num_attention_heads, cfg.vocab_size, cfg.num_hidden_layers);
        let context = cfg.max_position_embeddings;
        let ne = cfg.num_experts();
        if ne > MAX_EXPERTS {
            return Err(Error::Unsupported(format!("{ne} experts per layer: the GPU router holds at most {MAX_EXPERTS}")));
        }
        let t = |layer: Option<usize>, part: Part| roles.get(layer, part);
        // Sizes first: nothing is uploaded unless everything fits.
        let max = gpu.max_binding();
        let one_part = |name: &str, info: &TensorInfo| -> Result<()> {
            if gpu_dtype_bytes(info) > max {
                return Err(Error::OutOfMemory(format!(
                    "{name} ({} bytes) exceeds this GPU's largest storage binding ({max} bytes) and cannot be split; \
                     use a smaller dtype (q8) or the CPU backend",
                    gpu_dtype_bytes(info)
                )));
            }
            Ok(())
        };
        one_part("the embedding table", &t(None, Part::Embed)?)?;
        for l in 0..nl {
            if let Attention::Mla(_) = cfg.attention {
                one_part(&format!("layer {l}'s kv_b_proj"), &t(Some(l), Part::KvB)?)?;
            }
            if ne > 0 {
                one_part(&format!("layer {l}'s expert up projection"), &t(Some(l), Part::Up)?)?;
                one_part(&format!("layer {l}'s expert down projection"), &t(Some(l), Part::DownT)?)?;
            }
        }
        let w = Widths::of(cfg);
        let scratch_floats = [
            MAX_SPAN * heads * context,
            MAX_SPAN * w.ffn,
            MAX_SPAN * vocab,
            context * w.cache_row,
            ne * MAX_SPAN * cfg.hidden_size,
        ];
        for n in scratch_floats {
            if (n * 4) as u64 > max {
                return Err(Error::OutOfMemory(format!(
                    "a {}-byte activation or cache buffer exceeds this GPU's largest storage binding ({max} bytes); \
                     use the CPU backend",
                    n * 4
                )));
            }
        }
        Ok(())
    }

    pub fn new(gpu: Gpu, config: ModelConfig, store: WeightStore) -> Result<GpuBackend> {
        Self::check_fits(&gpu, &config, &store)?;
        let roles = RoleMap::new(&config, &store)?;
        let cfg = &config;
        let (hsz, heads, vocab, nl) = (cfg.hidden_size, cfg.num_attention_heads, cfg.vocab_size, cfg.num_hidden_layers);
        let context = cfg.max_position_embeddings;
        let ne = cfg.num_experts();
        let t = |layer: Option<usize>, part: Part| roles.get(layer, part);
        let Widths { ffn: ffn_width, expert: de, q: q_width, kv: kv_width, o: o_width, absorb: absorb_width, .. } =
            Widths::of(cfg);
        let weight_bytes = store.total_bytes() as u64;
        let profile = gpu.timestamps.then(|| {
            let count = (2 * nl + 3) as u32;
            Profile {
                set: gpu.device.create_query_set(&wgpu::QuerySetDescriptor {
                    label: Some("profile"),
                    ty: wgpu::QueryType::Timestamp,
                    count,
                }),
                resolved: gpu.device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("profile.resolved"),
                    size: count as u64 * 8,
                    usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
                    mapped_at_creation: false,
                }),
                count,
                last: Mutex::new(None),
            }
        });

        let k = Kernels::new(&gpu);
        let step = StepBuf::new(&gpu);
        let f32buf = |label: &str, info: &TensorInfo| gpu.storage(label, bytemuck::cast_slice(store.f32s(info)));
        let mut mats = Vec::new();
        let mut mats_f32 = Vec::new();
        let mat = |label: &str, info: &TensorInfo| GpuMat::upload(&gpu, label, store.mat(info));

        let embed = mat("embed", &t(None, Part::Embed)?)?;
        let lm_head = if cfg.tie_word_embeddings { None } else { Some(mat("lm_head", &t(None, Part::LmHead)?)?) };
        let final_norm = f32buf("final_norm", &t(None, Part::FinalNorm)?);

        let words = words_for(ne);
        let st = |label: &str, n: usize| gpu.storage_f32(label, n);
        let qr = match &cfg.attention {
            Attention::Mla(d) => d.q_lora_rank.unwrap_or(0),
            Attention::Vanilla { .. } => 0,
        };
        let inv_freq = rope_inv_freq(rope_dim(cfg), cfg.rope_theta);
        let mut q8_sizes = vec![hsz, o_width, ffn_width];
        if qr > 0 {
            q8_sizes.push(qr);
        }
        if absorb_width > 0 {
            q8_sizes.push(absorb_width);
        }
        q8_sizes.sort_unstable();
        q8_sizes.dedup();
        let mut all = vec![ne as u32];
        all.extend(0..ne as u32);
        let sc = Scratch {
            ids: st("ids", MAX_SPAN),
            h: st("h", MAX_SPAN * hsz),
            x: st("x", MAX_SPAN * hsz),
            y: st("y", MAX_SPAN * hsz),
            cq: st("cq", MAX_SPAN * qr),
            cqn: st("cqn", MAX_SPAN * qr),
            q: st("q", MAX_SPAN * q_width),
            kv: st("kv", MAX_SPAN * kv_width),
            c: st("c", MAX_SPAN * kv_width),
            q_abs: st("q_abs", MAX_SPAN * absorb_width),
            s: st("scores", MAX_SPAN * heads * context),
            cbar: st("cbar", MAX_SPAN * absorb_width),
            o: st("o", MAX_SPAN * o_width),
            a: st("router", MAX_SPAN * ne),
            u: st("ffn.u", MAX_SPAN * ffn_width),
            g: st("ffn.g", if ne == 0 { MAX_SPAN * ffn_width } else { 1 }),
            routed: (ne > 0).then(|| Routed::new(&gpu, ne, MAX_SPAN)),
            part: st("chunk_down.partial", super::ops::chunk_down::partial_len(ne, MAX_SPAN, hsz)),
            all: gpu.storage("all experts", bytemuck::cast_slice(&all)),
            masks: st("masks", MAX_SPAN * nl * words),
            logits: st("logits", MAX_SPAN * vocab),
            argmax_params: gpu.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("argmax.params"),
                size: 16,
                usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            }),
            seen: st("seen", vocab.div_ceil(32)),
            picked: st("picked", 2),
            readback: gpu.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("readback"),
                size: ((2 + MAX_SPAN * nl * words + MAX_SPAN * vocab + 2 * (2 * nl + 3)) * 4) as u64,
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            }),
            rope: gpu.storage("rope", bytemuck::cast_slice(&rope_table(&inv_freq, context))),
            q8: q8_sizes.iter().map(|&n| Q8Vector::new(&gpu, n, MAX_SPAN)).collect(),
        };

        let embed_cmd = k.embed.cmd(&gpu, &embed, cfg.scale_emb, MAX_SPAN, &sc.ids, &sc.h)?;
        let res = cfg.residual_scale();
        let sb = &step.buffer;
        let mut layers = Vec::with_capacity(nl);
        let mut layer_cmds = Vec::with_capacity(nl);
        for l in 0..nl {
            let li = Some(l);
            let attn = match &cfg.attention {
                Attention::Mla(d) => AttnW::Mla {
                    q_a: match d.q_lora_rank {
                        Some(_) => Some((mat("q_a", &t(li, Part::QA)?)?, f32buf("q_a_norm", &t(li, Part::QANorm)?))),
                        None => None,
                    },
                    q_b: mat("q_b", &t(li, if d.q_lora_rank.is_some() { Part::QB } else { Part::Q })?)?,
                    kv_a: mat("kv_a", &t(li, Part::KvA)?)?,
                    kv_a_norm: f32buf("kv_a_norm", &t(li, Part::KvANorm)?),
                    kv_b: mat("kv_b", &t(li, Part::KvB)?)?,
                    o: mat("o", &t(li, Part::O)?)?,
                },
                Attention::Vanilla { .. } => AttnW::Gqa {
                    q: mat("q", &t(li, Part::Q)?)?,
                    k: mat("k", &t(li, Part::K)?)?,
                    v: mat("v", &t(li, Part::V)?)?,
                    o: mat("o", &t(li, Part::O)?)?,
                },
            };
            let post_norm = f32buf("post_norm", &t(li, Part::PostNorm)?);
            let norm = || k.rmsnorm.cmd(&gpu, NormRows::dense(hsz), cfg.rms_norm_eps, &sc.h, &post_norm, &sc.x, sb);
            let add = || k.add.cmd(&gpu, hsz, res, &sc.y, &sc.h);
            let (ffn_sparse, ffn_dense) = match cfg.ffn {
                Ffn::Block { router, norm_scale, .. } => {
                    let routed = sc.routed.as_ref().ok_or_else(|| Error::InvalidCheckpoint("no router scratch".into()))?;
                    let router_w = mat("router", &t(li, Part::Router)?)?;
                    let g = match router {
                        Router::Relu(RouterNorm::Rms) => Some(f32buf("router_norm", &t(li, Part::RouterNorm)?)),
                        _ => None,
                    };
                    let up = mat("up", &t(li, Part::Up)?)?;
                    let down = mat("down_t", &t(li, Part::DownT)?)?;
                    let p = RouteParams { router, eps: cfg.rms_norm_eps, norm_scale, layer: l, layers: nl };
                    let ffn = |over: Over, list: &wgpu::Buffer| -> Result<Vec<Cmd>> {
                        let mut v = vec![norm()];
                        v.extend(k.matvec.cmds(&gpu, &router_w, &sc.x, &sc.a, ne, Tokens::Span, sc.q8(hsz))?);
                        v.push(k.route.cmd(&gpu, &sc.a, p, g.as_ref(), routed, &sc.masks, sb)?);
                        v.extend(k.up.cmds(&gpu, &up, de, ne, over, &sc.x, &routed.scores, list, &sc.u, sc.q8(hsz))?);
                        v.extend(k.down.cmd(&gpu, &down, de, MAX_SPAN, over, &sc.u, list, &sc.part, &sc.y)?);
                        v.push(add());
                        Ok(v)
                    };
                    let out = (ffn(Over::Union, &routed.active)?, ffn(Over::All, &sc.all)?);
                    mats.extend([router_w, up, down]);
                    out
                }
                Ffn::Dense { gated, intermediate_size: n } => {
                    let up = mat("dense_up", &t(li, Part::DenseUp)?)?;
                    let down = mat("dense_down", &t(li, Part::DenseDown)?)?;
                    let mut v = vec![norm()];
                    v.extend(k.matvec.cmds(&gpu, &up, &sc.x, &sc.u, n, Tokens::Span, sc.q8(hsz))?);
                    if gated {
                        let gate = mat("gate", &t(li, Part::Gate)?)?;
                        v.extend(k.matvec.cmds(&gpu, &gate, &sc.x, &sc.g, n, Tokens::Span, sc.q8(hsz))?);
                        v.push(k.silu.cmd_gate(&gpu, n, &sc.u, &sc.g));
                        mats.push(gate);
                    } else {
                        v.push(k.silu.cmd(&gpu, n, 1.0, &sc.u));
                    }
                    v.extend(k.matvec.cmds(&gpu, &down, &sc.u, &sc.y, hsz, Tokens::Span, sc.q8(n))?);
                    v.push(add());
                    mats.extend([up, down]);
                    (v, Vec::new())
                }
            };
            layers.push(LayerW { input_norm: f32buf("input_norm", &t(li, Part::InputNorm)?), attn });
            mats_f32.push(post_norm);
            layer_cmds.push(LayerCmds { ffn_sparse, ffn_dense });
        }

        let xh = &sc.x;
        let div = cfg.logit_divisor();
        let rows = NormRows { n: hsz, in_stride: hsz, out_stride: hsz, div, tokens: Tokens::Head };
        let mut head_cmds = vec![k.rmsnorm.cmd(&gpu, rows, cfg.rms_norm_eps, &sc.h, &final_norm, xh, sb)];
        let head_w = lm_head.as_ref().unwrap_or(&embed);
        head_cmds.extend(k.matvec.cmds(&gpu, head_w, xh, &sc.logits, vocab, Tokens::Head, sc.q8(hsz))?);
        let argmax_cmd = k.argmax.cmd(&gpu, &sc.argmax_params, &sc.logits, &sc.seen, &sc.ids, &sc.picked);
        mats.push(embed);
        mats.extend(lm_head);
        drop(store);
        Ok(GpuBackend {
            gpu,
            config,
            k,
            step,
            sc,
            layers,
            embed_cmd,
            layer_cmds,
            head_cmds,
            argmax_cmd,
            context,
            weight_bytes,
            busy: Arc::new(Busy::default()),
            dispatches: AtomicUsize::new(0),
            profile,
            _mats: mats,
            _bufs: mats_f32,
        })
    }

    pub fn gpu(&self) -> &Gpu {
        &self.gpu
    }

    /// Bytes of weights uploaded (the runtime file size).
    pub fn weight_bytes(&self) -> u64 {
        self.weight_bytes
    }

    /// Ends the span's pass, copies `copies` (source, offset, words) into the readback buffer in
    /// order, submits, and returns the words read back.
    async fn submit(&self, a: &mut GpuActs, copies: &[(&wgpu::Buffer, u64, usize)]) -> Result<Vec<u32>> {
        self.gpu.check_lost()?;
        self.step.write(&self.gpu, &a.span);
        a.stamp(&self.profile, 2 * self.config.num_hidden_layers + 2);
        drop(a.pass.take());
        let mut enc = a.enc.take().ok_or_else(|| Error::DeviceLost("the span was already submitted".into()))?;
        let mut copies = copies.to_vec();
        if let Some(p) = &self.profile {
            enc.resolve_query_set(&p.set, 0..p.count, &p.resolved, 0);
            copies.push((&p.resolved, 0, 2 * p.count as usize));
        }
        let mut off = 0u64;
        for &(src, src_off, words) in &copies {
            if words > 0 {
                enc.copy_buffer_to_buffer(src, src_off, &self.sc.readback, off, (words * 4) as u64);
                off += (words * 4) as u64;
            }
        }
        self.gpu.queue.submit([enc.finish()]);
        self.dispatches.store(a.dispatches, Ordering::Relaxed);
        if off == 0 {
            return Ok(Vec::new());
        }
        let out = self.gpu.map_read(&self.sc.readback, off).await?;
        if let Some(p) = &self.profile {
            let n = 2 * p.count as usize;
            let ticks: Vec<u64> = out[out.len().saturating_sub(n)..]
                .chunks_exact(2)
                .map(|w| w[0] as u64 | (w[1] as u64) << 32)
                .collect();
            let period = self.gpu.queue.get_timestamp_period() as f64;
            let d = |i: usize| ticks.get(i + 1).zip(ticks.get(i)).map_or(0.0, |(b, a)| b.saturating_sub(*a) as f64 * period);
            let nl = self.config.num_hidden_layers;
            let times = StepTimes {
                embed_ns: d(0),
                attention_ns: (0..nl).map(|l| d(1 + 2 * l)).collect(),
                ffn_ns: (0..nl).map(|l| d(2 + 2 * l)).collect(),
                head_ns: d(1 + 2 * nl),
            };
            *p.last.lock().unwrap_or_else(|e| e.into_inner()) = Some(times);
        }
        Ok(out)
    }

    /// The masks' share of a readback: `k · layers · words` words.
    fn mask_words(&self, k: usize) -> usize {
        k * self.config.num_hidden_layers * words_for(self.config.num_experts())
    }

    fn attn_cmds(&self, l: usize, latent_or_k: &wgpu::Buffer, pe_or_v: &wgpu::Buffer) -> Result<Vec<Cmd>> {
        let (gpu, k, sc, cfg) = (&self.gpu, &self.k, &self.sc, &self.config);
        let sb = &self.step.buffer;
        let hsz = cfg.hidden_size;
        let heads = cfg.num_attention_heads;
        let w = &self.layers[l];
        let mut v = vec![k.rmsnorm.cmd(gpu, NormRows::dense(hsz), cfg.rms_norm_eps, &sc.h, &w.input_norm, &sc.x, sb)];
        match (&w.attn, &cfg.attention) {
            (AttnW::Mla { q_a, q_b, kv_a, kv_a_norm, kv_b, o }, Attention::Mla(d)) => {
                let MlaDims { kv_lora_rank: r, qk_nope_head_dim: nope, qk_rope_head_dim: rope, v_head_dim: vdim, .. } = *d;
                let qhd = nope + rope;
                let shape = MlaShape { heads, nope, rope, vdim, r };
                match q_a {
                    Some((qa, qa_norm)) => {
                        let qr = qa.rows;
                        v.extend(k.matvec.cmds(gpu, qa, &sc.x, &sc.cq, qr, Tokens::Span, sc.q8(hsz))?);
                        v.push(k.rmsnorm.cmd(gpu, NormRows::dense(qr), MLA_NORM_EPS, &sc.cq, qa_norm, &sc.cqn, sb));
                        v.extend(k.matvec.cmds(gpu, q_b, &sc.cqn, &sc.q, heads * qhd, Tokens::Span, sc.q8(qr))?);
                    }
                    None => v.extend(k.matvec.cmds(gpu, q_b, &sc.x, &sc.q, heads * qhd, Tokens::Span, sc.q8(hsz))?),
                }
                v.extend(k.matvec.cmds(gpu, kv_a, &sc.x, &sc.kv, r + rope, Tokens::Span, sc.q8(hsz))?);
                let rows = NormRows { n: r, in_stride: r + rope, out_stride: r, div: 1.0, tokens: Tokens::Span };
                v.push(k.rmsnorm.cmd(gpu, rows, MLA_NORM_EPS, &sc.kv, kv_a_norm, &sc.c, sb));
                let k_pe = RopeSlices { heads: 1, dim: rope, stride: rope, base: r, token_stride: r + rope };
                v.push(k.rope.cmd(gpu, &sc.rope, &sc.kv, k_pe, sb));
                v.push(k.store.cmd(gpu, r, r, 0, &sc.c, latent_or_k, sb));
                v.push(k.store.cmd(gpu, rope, r + rope, r, &sc.kv, pe_or_v, sb));
                let q_pe = RopeSlices { heads, dim: rope, stride: qhd, base: nope, token_stride: heads * qhd };
                v.push(k.rope.cmd(gpu, &sc.rope, &sc.q, q_pe, sb));
                v.push(k.absorb.cmd(gpu, kv_b, shape, &sc.q, &sc.q_abs)?);
                let scale = 1.0 / (qhd as f32).sqrt();
                v.push(k.scores.cmd_mla(gpu, shape, scale, &sc.q_abs, &sc.q, latent_or_k, pe_or_v, &sc.s, sb));
                v.push(k.softmax.cmd_causal(gpu, heads, &sc.s, sb));
                v.push(k.mix.cmd_mla(gpu, heads, r, &sc.s, latent_or_k, &sc.cbar, sb));
                v.extend(k.mla_out.cmds(gpu, kv_b, shape, &sc.cbar, &sc.o, sc.q8(heads * r))?);
                v.extend(k.matvec.cmds(gpu, o, &sc.o, &sc.y, hsz, Tokens::Span, sc.q8(heads * vdim))?);
            }
            (AttnW::Gqa { q, k: kw, v: vw, o }, Attention::Vanilla { num_key_value_heads: kvh, head_dim: hd }) => {
                let (kvh, hd) = (*kvh, *hd);
                let kvw = kvh * hd;
                v.extend(k.matvec.cmds(gpu, q, &sc.x, &sc.q, heads * hd, Tokens::Span, sc.q8(hsz))?);
                v.extend(k.matvec.cmds(gpu, kw, &sc.x, &sc.kv, kvw, Tokens::Span, sc.q8(hsz))?);
                v.extend(k.matvec.cmds(gpu, vw, &sc.x, &sc.c, kvw, Tokens::Span, sc.q8(hsz))?);
                let qs = RopeSlices { heads, dim: hd, stride: hd, base: 0, token_stride: heads * hd };
                v.push(k.rope.cmd(gpu, &sc.rope, &sc.q, qs, sb));
                let ks = RopeSlices { heads: kvh, dim: hd, stride: hd, base: 0, token_stride: kvw };
                v.push(k.rope.cmd(gpu, &sc.rope, &sc.kv, ks, sb));
                v.push(k.store.cmd(gpu, kvw, kvw, 0, &sc.kv, latent_or_k, sb));
                v.push(k.store.cmd(gpu, kvw, kvw, 0, &sc.c, pe_or_v, sb));
                let scale = 1.0 / (hd as f32).sqrt();
                v.push(k.scores.cmd_gqa(gpu, heads, kvh, hd, scale, &sc.q, latent_or_k, &sc.s, sb));
                v.push(k.softmax.cmd_causal(gpu, heads, &sc.s, sb));
                v.push(k.mix.cmd_gqa(gpu, heads, kvh, hd, &sc.s, pe_or_v, &sc.o, sb));
                v.extend(k.matvec.cmds(gpu, o, &sc.o, &sc.y, hsz, Tokens::Span, sc.q8(heads * hd))?);
            }
            _ => return Err(Error::InvalidCheckpoint("attention weights do not match the config".into())),
        }
        v.push(k.add.cmd(gpu, hsz, cfg.residual_scale(), &sc.y, &sc.h));
        Ok(v)
    }
}

fn rope_dim(cfg: &ModelConfig) -> usize {
    match &cfg.attention {
        Attention::Mla(d) => d.qk_rope_head_dim,
        Attention::Vanilla { head_dim, .. } => *head_dim,
    }
}

impl Backend for GpuBackend {
    type Acts = GpuActs;
    type Cache = GpuCache;

    fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// Allocates the whole context's cache (the model's `max_position_embeddings`) at once, so a
    /// long generation never fails half-way for memory.
    fn new_cache(&self) -> Result<GpuCache> {
        let (ctx, cfg) = (self.context, &self.config);
        let (a, b) = match &cfg.attention {
            Attention::Mla(d) => (ctx * d.kv_lora_rank, ctx * d.qk_rope_head_dim),
            Attention::Vanilla { num_key_value_heads, head_dim } => {
                (ctx * num_key_value_heads * head_dim, ctx * num_key_value_heads * head_dim)
            }
        };
        let mut bufs = Vec::new();
        let mut attn = Vec::new();
        for l in 0..cfg.num_hidden_layers {
            let (x, y) = (self.gpu.storage_f32("cache.a", a), self.gpu.storage_f32("cache.b", b));
            attn.push(self.attn_cmds(l, &x, &y)?);
            bufs.extend([x, y]);
        }
        Ok(GpuCache { len: 0, attn, _bufs: bufs })
    }

    fn embed(&self, ids: &[u32]) -> Result<GpuActs> {
        if ids.is_empty() || ids.len() > MAX_SPAN {
            return Err(Error::InvalidInput(format!(
                "the GPU runs spans of 1 to {MAX_SPAN} tokens at once, not {} (Model::forward splits prompts into blocks)",
                ids.len()
            )));
        }
        self.gpu.check_lost()?;
        let busy = BusyGuard::take(&self.busy)?;
        self.gpu.queue.write_buffer(&self.sc.ids, 0, bytemuck::cast_slice(ids));
        let mut enc = self.gpu.device.create_command_encoder(&Default::default());
        let pass = enc.begin_compute_pass(&Default::default()).forget_lifetime();
        let mut a =
            GpuActs { span: Span::new(0, ids.len()), enc: Some(enc), pass: Some(pass), dispatches: 0, _busy: busy };
        a.stamp(&self.profile, 0);
        a.record(std::slice::from_ref(&self.embed_cmd));
        Ok(a)
    }

    fn attention(&self, l: usize, cache: &mut GpuCache, h: &mut GpuActs) -> Result<()> {
        if l == 0 {
            h.span.pos0 = cache.len;
        }
        let cmds = cache.attn.get(l).ok_or_else(|| Error::InvalidInput(format!("no layer {l}")))?;
        h.stamp(&self.profile, 1 + 2 * l);
        h.record(cmds);
        Ok(())
    }

    fn ffn(&self, l: usize, mode: FfnMode, h: &mut GpuActs, _experts: &mut ExpertMasks) -> Result<()> {
        let c = self.layer_cmds.get(l).ok_or_else(|| Error::InvalidInput(format!("no layer {l}")))?;
        h.stamp(&self.profile, 2 + 2 * l);
        h.record(if mode == FfnMode::Dense && !c.ffn_dense.is_empty() { &c.ffn_dense } else { &c.ffn_sparse });
        Ok(())
    }

    async fn head(&self, h: &mut GpuActs, from: usize, experts: &mut ExpertMasks) -> Result<Vec<Vec<f32>>> {
        let k = h.span.k;
        let vocab = self.config.vocab_size;
        h.span.head_from = from.min(k);
        let rows = h.span.head_rows();
        h.stamp(&self.profile, 1 + 2 * self.config.num_hidden_layers);
        if rows > 0 {
            h.record(&self.head_cmds);
        }
        let mw = self.mask_words(k);
        let words = self.submit(h, &[(&self.sc.masks, 0, mw), (&self.sc.logits, 0, rows * vocab)]).await?;
        fill_masks(experts, &words, mw)?;
        let logits: &[f32] = bytemuck::cast_slice(words.get(mw..mw + rows * vocab).unwrap_or_default());
        Ok(logits.chunks_exact(vocab).map(<[f32]>::to_vec).collect())
    }

    fn greedy_on_device(&self) -> bool {
        true
    }

    fn last_timings(&self) -> Option<StepTimes> {
        self.profile.as_ref().and_then(|p| p.last.lock().unwrap_or_else(|e| e.into_inner()).clone())
    }

    /// Dispatches recorded by the last span (its one submission).
    fn last_dispatches(&self) -> Option<usize> {
        Some(self.dispatches.load(Ordering::Relaxed))
    }

    async fn head_greedy(
        &self,
        h: &mut GpuActs,
        penalty: f32,
        context: &[u32],
        experts: &mut ExpertMasks,
    ) -> Result<u32> {
        let k = h.span.k;
        let vocab = self.config.vocab_size;
        h.span.head_from = k - 1;
        let q = &self.gpu.queue;
        q.write_buffer(&self.sc.argmax_params, 0, bytemuck::cast_slice(&[vocab as u32, penalty.to_bits(), 0, 0]));
        if penalty != 1.0 {
            let mut seen = vec![0u32; vocab.div_ceil(32)];
            for &id in context.iter().filter(|&&id| (id as usize) < vocab) {
                seen[id as usize / 32] |= 1 << (id % 32);
            }
            q.write_buffer(&self.sc.seen, 0, bytemuck::cast_slice(&seen));
        }
        h.stamp(&self.profile, 1 + 2 * self.config.num_hidden_layers);
        h.record(&self.head_cmds);
        h.record(std::slice::from_ref(&self.argmax_cmd));
        let mw = self.mask_words(k);
        let words = self.submit(h, &[(&self.sc.masks, 0, mw), (&self.sc.picked, 0, 2)]).await?;
        fill_masks(experts, &words, mw)?;
        let (id, nonfinite) = (words[mw], words[mw + 1]);
        if nonfinite != 0 {
            return Err(Error::InvalidCheckpoint(
                "the model computed a non-finite logit: its weights or config values overflow 32-bit floats; \
                 the package is damaged — convert or download it again"
                    .into(),
            ));
        }
        Ok(id)
    }
}

/// The span's expert bitmasks from the first `mw` words of a readback.
fn fill_masks(experts: &mut ExpertMasks, words: &[u32], mw: usize) -> Result<()> {
    let dst = experts.bits_mut();
    match words.get(..mw) {
        Some(src) if dst.len() == mw => {
            dst.copy_from_slice(src);
            Ok(())
        }
        _ => Err(Error::DeviceLost(format!("the GPU's readback holds {} words, expected {mw} of masks", words.len()))),
    }
}
