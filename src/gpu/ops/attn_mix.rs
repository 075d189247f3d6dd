//! The probability-weighted sum of cached rows, every head and query at once (`attn_mix.wgsl`).

use crate::gpu::context::{bind_at, Gpu};

use super::{groups, Cmd, STEP_WGSL};

const SOURCE: &str = include_str!("../shaders/attn_mix.wgsl");

pub struct AttnMix {
    mla: wgpu::ComputePipeline,
    gqa: wgpu::ComputePipeline,
}

impl AttnMix {
    pub fn new(gpu: &Gpu) -> AttnMix {
        let src = [STEP_WGSL, SOURCE].concat();
        AttnMix { mla: gpu.pipeline("mla_mix", &src, "mla_mix"), gqa: gpu.pipeline("gqa_mix", &src, "gqa_mix") }
    }

    /// `out[i, h] = Σ_{t ≤ pos0 + i} probs[i, h, t] · latent[t]` (`[k, heads, r]`).
    #[allow(clippy::too_many_arguments)]
    pub fn cmd_mla(
        &self,
        gpu: &Gpu,
        heads: usize,
        r: usize,
        probs: &wgpu::Buffer,
        latent: &wgpu::Buffer,
        out: &wgpu::Buffer,
        step: &wgpu::Buffer,
    ) -> Cmd {
        let params = gpu.uniform("mla_mix.params", &[0, heads as u32, r as u32, 0]);
        let b = bind_at(gpu, &self.mla, &[(0, &params), (1, probs), (2, latent), (3, out), (10, step)]);
        let (gx, h) = (groups(r, 64), heads as u32);
        Cmd::new(&self.mla, b, move |s| [gx, h, s.k as u32])
    }

    /// `out[i, h] = Σ_{t ≤ pos0 + i} probs[i, h, t] · v[t, h / group]` (`[k, heads, hd]`).
    #[allow(clippy::too_many_arguments)]
    pub fn cmd_gqa(
        &self,
        gpu: &Gpu,
        heads: usize,
        kv_heads: usize,
        hd: usize,
        probs: &wgpu::Buffer,
        v: &wgpu::Buffer,
        out: &wgpu::Buffer,
        step: &wgpu::Buffer,
    ) -> Cmd {
        let params = gpu.uniform("gqa_mix.params", &[0, heads as u32, hd as u32, kv_heads as u32]);
        let b = bind_at(gpu, &self.gqa, &[(0, &params), (1, probs), (2, v), (3, out), (10, step)]);
        let (gx, h) = (groups(hd, 64), heads as u32);
        Cmd::new(&self.gqa, b, move |s| [gx, h, s.k as u32])
    }
}
