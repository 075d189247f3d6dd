//! In-place softmax of rows on the GPU (`softmax.wgsl`), the twin of `kernels::scalar::softmax`:
//! plain rows, or the span's causal attention rows.

use crate::gpu::context::{bind_at, Gpu};

use super::{Cmd, STEP_WGSL};

const SOURCE: &str = include_str!("../shaders/softmax.wgsl");

pub struct Softmax {
    pipeline: wgpu::ComputePipeline,
}

impl Softmax {
    pub fn new(gpu: &Gpu) -> Softmax {
        Softmax { pipeline: gpu.pipeline("softmax", &[STEP_WGSL, SOURCE].concat(), "softmax") }
    }

    /// The softmax of each of `rows` rows of `n` values of `x` (row i at i · n), in place.
    pub fn cmd_rows(&self, gpu: &Gpu, n: usize, rows: usize, x: &wgpu::Buffer, step: &wgpu::Buffer) -> Cmd {
        let params = gpu.uniform("softmax.params", &[n as u32, 1, 0, 0]);
        let b = bind_at(gpu, &self.pipeline, &[(0, &params), (1, x), (10, step)]);
        Cmd::new(&self.pipeline, b, move |_| [rows as u32, 1, 1])
    }

    /// The span's attention rows (`[k, heads, t_len]`), each over the positions its query sees.
    pub fn cmd_causal(&self, gpu: &Gpu, heads: usize, x: &wgpu::Buffer, step: &wgpu::Buffer) -> Cmd {
        let params = gpu.uniform("softmax.params", &[0, heads as u32, 1, 0]);
        let b = bind_at(gpu, &self.pipeline, &[(0, &params), (1, x), (10, step)]);
        Cmd::new(&self.pipeline, b, move |s| [(s.k * heads) as u32, 1, 1])
    }
}
