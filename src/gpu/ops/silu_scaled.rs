//! Activations on the GPU (`silu_scaled.wgsl`) for the span's tokens: `x = silu(x) · scale`, the
//! twin of `kernels::scalar::silu_scaled`, and the gated dense FFN's `x = x · silu(g)`.

use crate::gpu::context::{bind_at, Gpu};

use super::{groups, Cmd};

const SOURCE: &str = include_str!("../shaders/silu_scaled.wgsl");

pub struct SiluScaled {
    scaled: wgpu::ComputePipeline,
    gate: wgpu::ComputePipeline,
}

impl SiluScaled {
    pub fn new(gpu: &Gpu) -> SiluScaled {
        SiluScaled {
            scaled: gpu.pipeline("silu_scaled", SOURCE, "silu_scaled"),
            gate: gpu.pipeline("silu_gate", SOURCE, "silu_gate"),
        }
    }

    /// `x[t][..n] = silu(x[t][..n]) · scale`.
    pub fn cmd(&self, gpu: &Gpu, n: usize, scale: f32, x: &wgpu::Buffer) -> Cmd {
        let params = gpu.uniform("silu_scaled.params", &[n as u32, scale.to_bits(), 0, 0]);
        let b = bind_at(gpu, &self.scaled, &[(0, &params), (1, x)]);
        let gx = groups(n, 256);
        Cmd::new(&self.scaled, b, move |s| [gx, s.k as u32, 1])
    }

    /// `x[t][..n] *= silu(g[t][..n])`.
    pub fn cmd_gate(&self, gpu: &Gpu, n: usize, x: &wgpu::Buffer, g: &wgpu::Buffer) -> Cmd {
        let params = gpu.uniform("silu_gate.params", &[n as u32, 0, 0, 0]);
        let b = bind_at(gpu, &self.gate, &[(0, &params), (1, x), (2, g)]);
        let gx = groups(n, 256);
        Cmd::new(&self.gate, b, move |s| [gx, s.k as u32, 1])
    }
}
