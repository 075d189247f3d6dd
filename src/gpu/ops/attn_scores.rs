//! Attention scores of one query token over the cache, every head at once (`attn_scores.wgsl`).

use crate::gpu::context::{bind, bind_at, Gpu};

use super::{dispatch_2d, groups};

const SOURCE: &str = include_str!("../shaders/attn_scores.wgsl");

pub struct AttnScores {
    mla: wgpu::ComputePipeline,
    gqa: wgpu::ComputePipeline,
}

/// MLA shapes: `r` = kv_lora_rank, `rope`, `nope`, `qhd` = nope + rope.
#[derive(Clone, Copy, Debug)]
pub struct MlaShape {
    pub heads: usize,
    pub nope: usize,
    pub rope: usize,
    pub vdim: usize,
    pub r: usize,
}

impl AttnScores {
    pub fn new(gpu: &Gpu) -> AttnScores {
        AttnScores {
            mla: gpu.pipeline("mla_scores", SOURCE, "mla_scores"),
            gqa: gpu.pipeline("gqa_scores", SOURCE, "gqa_scores"),
        }
    }

    /// `s[h, t] = (q_abs[h] · latent[t] + q_pe[h] · k_pe[t]) · scale` for t < `t_len`.
    #[allow(clippy::too_many_arguments)]
    pub fn encode_mla(
        &self,
        gpu: &Gpu,
        enc: &mut wgpu::CommandEncoder,
        d: MlaShape,
        t_len: usize,
        scale: f32,
        q_abs: &wgpu::Buffer,
        q: &wgpu::Buffer,
        latent: &wgpu::Buffer,
        k_pe: &wgpu::Buffer,
        s: &wgpu::Buffer,
    ) {
        let qhd = d.nope + d.rope;
        let params = gpu.uniform(
            "mla_scores.params",
            &[t_len as u32, d.heads as u32, d.r as u32, d.rope as u32, qhd as u32, d.nope as u32, scale.to_bits(), 0],
        );
        let b = bind(gpu, &self.mla, &[&params, q_abs, q, latent, k_pe, s]);
        dispatch_2d(enc, &self.mla, &b, groups(t_len, 64), d.heads as u32);
    }

    /// `s[h, t] = k[t, h / group] · q[h] · scale` for t < `t_len`.
    #[allow(clippy::too_many_arguments)]
    pub fn encode_gqa(
        &self,
        gpu: &Gpu,
        enc: &mut wgpu::CommandEncoder,
        heads: usize,
        kv_heads: usize,
        hd: usize,
        t_len: usize,
        scale: f32,
        q: &wgpu::Buffer,
        k: &wgpu::Buffer,
        s: &wgpu::Buffer,
    ) {
        let params = gpu.uniform(
            "gqa_scores.params",
            &[t_len as u32, heads as u32, hd as u32, kv_heads as u32, 0, 0, scale.to_bits(), 0],
        );
        let b = bind_at(gpu, &self.gqa, &[(0, &params), (1, q), (3, k), (5, s)]);
        dispatch_2d(enc, &self.gqa, &b, groups(t_len, 64), heads as u32);
    }
}
