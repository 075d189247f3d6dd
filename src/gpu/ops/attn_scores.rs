//! Attention scores of the span's queries over the cache, every head at once (`attn_scores.wgsl`).

use crate::gpu::context::{bind_at, Gpu};

use super::{groups, Cmd, STEP_WGSL};

const SOURCE: &str = include_str!("../shaders/attn_scores.wgsl");

pub struct AttnScores {
    mla: wgpu::ComputePipeline,
    gqa: wgpu::ComputePipeline,
}

/// MLA shapes: `r` = kv_lora_rank, `rope`, `nope`, `vdim`.
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
        let src = [STEP_WGSL, SOURCE].concat();
        AttnScores { mla: gpu.pipeline("mla_scores", &src, "mla_scores"), gqa: gpu.pipeline("gqa_scores", &src, "gqa_scores") }
    }

    /// `s[i, h, t] = (q_abs[i, h] · latent[t] + q_pe[i, h] · k_pe[t]) · scale` for t ≤ pos0 + i.
    #[allow(clippy::too_many_arguments)]
    pub fn cmd_mla(
        &self,
        gpu: &Gpu,
        d: MlaShape,
        scale: f32,
        q_abs: &wgpu::Buffer,
        q: &wgpu::Buffer,
        latent: &wgpu::Buffer,
        k_pe: &wgpu::Buffer,
        s: &wgpu::Buffer,
        step: &wgpu::Buffer,
    ) -> Cmd {
        let qhd = d.nope + d.rope;
        let params = gpu.uniform(
            "mla_scores.params",
            &[0, d.heads as u32, d.r as u32, d.rope as u32, qhd as u32, d.nope as u32, scale.to_bits(), 0],
        );
        let b = bind_at(
            gpu,
            &self.mla,
            &[(0, &params), (1, q_abs), (2, q), (3, latent), (4, k_pe), (5, s), (10, step)],
        );
        let heads = d.heads as u32;
        Cmd::new(&self.mla, b, move |sp| [groups(sp.t_len(), 64), heads, sp.k as u32])
    }

    /// `s[i, h, t] = k[t, h / group] · q[i, h] · scale` for t ≤ pos0 + i.
    #[allow(clippy::too_many_arguments)]
    pub fn cmd_gqa(
        &self,
        gpu: &Gpu,
        heads: usize,
        kv_heads: usize,
        hd: usize,
        scale: f32,
        q: &wgpu::Buffer,
        k: &wgpu::Buffer,
        s: &wgpu::Buffer,
        step: &wgpu::Buffer,
    ) -> Cmd {
        let params =
            gpu.uniform("gqa_scores.params", &[0, heads as u32, hd as u32, kv_heads as u32, 0, 0, scale.to_bits(), 0]);
        let b = bind_at(gpu, &self.gqa, &[(0, &params), (1, q), (3, k), (5, s), (10, step)]);
        let h = heads as u32;
        Cmd::new(&self.gqa, b, move |sp| [groups(sp.t_len(), 64), h, sp.k as u32])
    }
}
