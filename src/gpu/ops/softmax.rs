//! In-place softmax of rows of a matrix on the GPU (`softmax.wgsl`), the twin of `kernels::scalar::softmax`.

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

    /// Records the softmax of each of `rows` rows of `n` values of `x` (row i at i · n), in place.
    pub fn encode(&self, gpu: &Gpu, enc: &mut wgpu::CommandEncoder, n: usize, rows: usize, x: &wgpu::Buffer) {
        let params = gpu.uniform("softmax.params", &[n as u32, 0, 0, 0]);
        let b = bind(gpu, &self.pipeline, &[&params, x]);
        dispatch(enc, &self.pipeline, &b, rows as u32);
    }
}
