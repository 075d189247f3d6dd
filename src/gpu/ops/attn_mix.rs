//! The probability-weighted sum of cached rows, every head at once (`attn_mix.wgsl`).

use crate::gpu::context::{bind, Gpu};

use super::{dispatch_2d, groups};

const SOURCE: &str = include_str!("../shaders/attn_mix.wgsl");

pub struct AttnMix {
    mla: wgpu::ComputePipeline,
    gqa: wgpu::ComputePipeline,
}

impl AttnMix {
    pub fn new(gpu: &Gpu) -> AttnMix {
        AttnMix { mla: gpu.pipeline("mla_mix", SOURCE, "mla_mix"), gqa: gpu.pipeline("gqa_mix", SOURCE, "gqa_mix") }
    }

    /// `out[h] = Σ_t probs[h, t] · latent[t]` (`[heads, r]`).
    #[allow(clippy::too_many_arguments)]
    pub fn encode_mla(
        &self,
        gpu: &Gpu,
        enc: &mut wgpu::CommandEncoder,
        heads: usize,
        r: usize,
        t_len: usize,
        probs: &wgpu::Buffer,
        latent: &wgpu::Buffer,
        out: &wgpu::Buffer,
    ) {
        let params = gpu.uniform("mla_mix.params", &[t_len as u32, heads as u32, r as u32, 0]);
        let b = bind(gpu, &self.mla, &[&params, probs, latent, out]);
        dispatch_2d(enc, &self.mla, &b, groups(r, 64), heads as u32);
    }

    /// `out[h] = Σ_t probs[h, t] · v[t, h / group]` (`[heads, hd]`).
    #[allow(clippy::too_many_arguments)]
    pub fn encode_gqa(
        &self,
        gpu: &Gpu,
        enc: &mut wgpu::CommandEncoder,
        heads: usize,
        kv_heads: usize,
        hd: usize,
        t_len: usize,
        probs: &wgpu::Buffer,
        v: &wgpu::Buffer,
        out: &wgpu::Buffer,
    ) {
        let params = gpu.uniform("gqa_mix.params", &[t_len as u32, heads as u32, hd as u32, kv_heads as u32]);
        let b = bind(gpu, &self.gqa, &[&params, probs, v, out]);
        dispatch_2d(enc, &self.gqa, &b, groups(hd, 64), heads as u32);
    }
}
