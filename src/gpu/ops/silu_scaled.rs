//! `x = silu(x) · scale` on the GPU (`silu_scaled.wgsl`), the twin of `kernels::scalar::silu_scaled`.

use crate::gpu::context::{bind, Gpu};

use super::{dispatch, groups};

const SOURCE: &str = include_str!("../shaders/silu_scaled.wgsl");

pub struct SiluScaled {
    pipeline: wgpu::ComputePipeline,
}

impl SiluScaled {
    pub fn new(gpu: &Gpu) -> SiluScaled {
        SiluScaled { pipeline: gpu.pipeline("silu_scaled", SOURCE, "silu_scaled") }
    }

    /// Records `x[..n] = silu(x[..n]) · scale`.
    pub fn encode(&self, gpu: &Gpu, enc: &mut wgpu::CommandEncoder, n: usize, scale: f32, x: &wgpu::Buffer) {
        let params = gpu.uniform("silu_scaled.params", &[n as u32, scale.to_bits(), 0, 0]);
        let b = bind(gpu, &self.pipeline, &[&params, x]);
        dispatch(enc, &self.pipeline, &b, groups(n, 256));
    }
}
