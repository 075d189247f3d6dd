//! q8 quantization of an activation vector on the GPU (`quantize_q8.wgsl`), the twin of
//! `tensor::quantize_q8`: what the q8 matvec multiplies the weights' int8 with.

use crate::gpu::context::{bind, Gpu};

use super::{dispatch, groups};

const SOURCE: &str = include_str!("../shaders/quantize_q8.wgsl");

/// Where a quantized vector of `n` values lives: `n / 4` words of int8 and `n / 32` scales.
pub struct Q8Vector {
    pub n: usize,
    pub q: wgpu::Buffer,
    pub scales: wgpu::Buffer,
}

impl Q8Vector {
    pub fn new(gpu: &Gpu, n: usize) -> Q8Vector {
        Q8Vector { n, q: gpu.storage_f32("qx", n / 4), scales: gpu.storage_f32("sx", n / 32) }
    }
}

pub struct QuantizeQ8 {
    pipeline: wgpu::ComputePipeline,
}

impl QuantizeQ8 {
    pub fn new(gpu: &Gpu) -> QuantizeQ8 {
        QuantizeQ8 { pipeline: gpu.pipeline("quantize_q8", SOURCE, "quantize_q8") }
    }

    /// Records `out = quantize(x)` for the first `out.n` values of `x` (`out.n` a multiple of 32).
    pub fn encode(&self, gpu: &Gpu, enc: &mut wgpu::CommandEncoder, x: &wgpu::Buffer, out: &Q8Vector) {
        let params = gpu.uniform("quantize_q8.params", &[out.n as u32, 0, 0, 0]);
        let b = bind(gpu, &self.pipeline, &[&params, x, &out.q, &out.scales]);
        dispatch(enc, &self.pipeline, &b, groups(out.n / 32, 64));
    }
}
