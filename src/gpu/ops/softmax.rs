//! In-place softmax of one vector on the GPU (`softmax.wgsl`), the twin of `kernels::scalar::softmax`.

use crate::gpu::context::{bind, Gpu};

use super::dispatch;

const SOURCE: &str = include_str!("../shaders/softmax.wgsl");

pub struct Softmax {
    pipeline: wgpu::ComputePipeline,
}

impl Softmax {
    pub fn new(gpu: &Gpu) -> Softmax {
        Softmax { pipeline: gpu.pipeline("softmax", SOURCE, "softmax") }
    }

    /// Records `x[..n] = softmax(x[..n])`.
    pub fn encode(&self, gpu: &Gpu, enc: &mut wgpu::CommandEncoder, n: usize, x: &wgpu::Buffer) {
        let params = gpu.uniform("softmax.params", &[n as u32, 0, 0, 0]);
        let b = bind(gpu, &self.pipeline, &[&params, x]);
        dispatch(enc, &self.pipeline, &b, 1);
    }
}
