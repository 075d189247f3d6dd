//! The residual update `h += y · s` on the GPU (`add_scaled.wgsl`).

use crate::gpu::context::{bind, Gpu};

use super::{dispatch, groups};

const SOURCE: &str = include_str!("../shaders/add_scaled.wgsl");

pub struct AddScaled {
    pipeline: wgpu::ComputePipeline,
}

impl AddScaled {
    pub fn new(gpu: &Gpu) -> AddScaled {
        AddScaled { pipeline: gpu.pipeline("add_scaled", SOURCE, "add_scaled") }
    }

    /// Records `h[..n] += y[..n] · s`.
    pub fn encode(
        &self,
        gpu: &Gpu,
        enc: &mut wgpu::CommandEncoder,
        n: usize,
        s: f32,
        y: &wgpu::Buffer,
        h: &wgpu::Buffer,
    ) {
        let params = gpu.uniform("add_scaled.params", &[n as u32, s.to_bits(), 0, 0]);
        let b = bind(gpu, &self.pipeline, &[&params, y, h]);
        dispatch(enc, &self.pipeline, &b, groups(n, 256));
    }
}
