//! q8 quantization of activation vectors on the GPU (`quantize_q8.wgsl`), the twin of
//! `tensor::quantize_q8`: what the q8 kernels multiply the weights' int8 with.

use crate::gpu::context::{bind, Gpu};

use super::{groups, Cmd, Tokens};

const SOURCE: &str = include_str!("../shaders/quantize_q8.wgsl");

/// Where quantized vectors of `n` values (one per token, up to `tokens`) live: `n / 4` words of
/// int8 and `n / 32` scales each.
pub struct Q8Vector {
    pub n: usize,
    pub q: wgpu::Buffer,
    pub scales: wgpu::Buffer,
}

impl Q8Vector {
    pub fn new(gpu: &Gpu, n: usize, tokens: usize) -> Q8Vector {
        Q8Vector { n, q: gpu.storage_f32("qx", tokens * n / 4), scales: gpu.storage_f32("sx", tokens * n / 32) }
    }
}

pub struct QuantizeQ8 {
    pipeline: wgpu::ComputePipeline,
}

impl QuantizeQ8 {
    pub fn new(gpu: &Gpu) -> QuantizeQ8 {
        QuantizeQ8 { pipeline: gpu.pipeline("quantize_q8", SOURCE, "quantize_q8") }
    }

    /// `out[t] = quantize(x[t · out.n ..][..out.n])` per token (`out.n` a multiple of 32).
    pub fn cmd(&self, gpu: &Gpu, x: &wgpu::Buffer, out: &Q8Vector, tokens: Tokens) -> Cmd {
        let params = gpu.uniform("quantize_q8.params", &[out.n as u32, 0, 0, 0]);
        let b = bind(gpu, &self.pipeline, &[&params, x, &out.q, &out.scales]);
        let gx = groups(out.n / 32, 64);
        Cmd::new(&self.pipeline, b, move |s| [gx, tokens.count(s), 1])
    }
}
