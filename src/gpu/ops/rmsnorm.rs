//! RMSNorm of one vector on the GPU (`rmsnorm.wgsl`), the twin of `kernels::scalar::rmsnorm`.

use crate::gpu::context::{bind, Gpu};

use super::dispatch;

const SOURCE: &str = include_str!("../shaders/rmsnorm.wgsl");

pub struct RmsNorm {
    pipeline: wgpu::ComputePipeline,
}

impl RmsNorm {
    pub fn new(gpu: &Gpu) -> RmsNorm {
        RmsNorm { pipeline: gpu.pipeline("rmsnorm", SOURCE, "rmsnorm") }
    }

    /// Records `out[..n] = rmsnorm(x[..n]) · w[..n]`.
    pub fn encode(
        &self,
        gpu: &Gpu,
        enc: &mut wgpu::CommandEncoder,
        n: usize,
        eps: f32,
        x: &wgpu::Buffer,
        w: &wgpu::Buffer,
        out: &wgpu::Buffer,
    ) {
        let params = gpu.uniform("rmsnorm.params", &[n as u32, eps.to_bits(), 0, 0]);
        let b = bind(gpu, &self.pipeline, &[&params, x, w, out]);
        dispatch(enc, &self.pipeline, &b, 1);
    }
}
