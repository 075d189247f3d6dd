//! The residual update `h += y · s` on the GPU (`add_scaled.wgsl`), for the span's tokens.

use crate::gpu::context::{bind, Gpu};

use super::{groups, Cmd};

const SOURCE: &str = include_str!("../shaders/add_scaled.wgsl");

pub struct AddScaled {
    pipeline: wgpu::ComputePipeline,
}

impl AddScaled {
    pub fn new(gpu: &Gpu) -> AddScaled {
        AddScaled { pipeline: gpu.pipeline("add_scaled", SOURCE, "add_scaled") }
    }

    /// `h[t][..n] += y[t][..n] · s` for every token of the span.
    pub fn cmd(&self, gpu: &Gpu, n: usize, s: f32, y: &wgpu::Buffer, h: &wgpu::Buffer) -> Cmd {
        let params = gpu.uniform("add_scaled.params", &[n as u32, s.to_bits(), 0, 0]);
        let b = bind(gpu, &self.pipeline, &[&params, y, h]);
        let gx = groups(n, 256);
        Cmd::new(&self.pipeline, b, move |sp| [gx, sp.k as u32, 1])
    }
}
