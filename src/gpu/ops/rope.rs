//! RoPE on the GPU (`rope.wgsl`), the twin of `kernels::scalar::rope_rotate_half`, with cos/sin
//! from a table the host computes once exactly as the CPU does.

use crate::gpu::context::{bind, Gpu};

use super::{dispatch_2d, groups};

const SOURCE: &str = include_str!("../shaders/rope.wgsl");

pub struct Rope {
    pipeline: wgpu::ComputePipeline,
}

/// `[positions, dim / 2]` (cos, sin) pairs of `pos · inv_freq[i]`, from f32 `sin_cos` as on the CPU.
pub fn rope_table(inv_freq: &[f32], positions: usize) -> Vec<f32> {
    let mut t = Vec::with_capacity(positions * inv_freq.len() * 2);
    for pos in 0..positions {
        for &f in inv_freq {
            let (s, c) = (pos as f32 * f).sin_cos();
            t.push(c);
            t.push(s);
        }
    }
    t
}

impl Rope {
    pub fn new(gpu: &Gpu) -> Rope {
        Rope { pipeline: gpu.pipeline("rope", SOURCE, "rope") }
    }

    /// Rotates `heads` slices of `dim` values of `x` (slice h at `base + h · stride`) to `pos`.
    #[allow(clippy::too_many_arguments)]
    pub fn encode(
        &self,
        gpu: &Gpu,
        enc: &mut wgpu::CommandEncoder,
        table: &wgpu::Buffer,
        x: &wgpu::Buffer,
        heads: usize,
        dim: usize,
        stride: usize,
        base: usize,
        pos: usize,
    ) {
        let params =
            gpu.uniform("rope.params", &[heads as u32, dim as u32, stride as u32, base as u32, pos as u32, 0, 0, 0]);
        let b = bind(gpu, &self.pipeline, &[&params, table, x]);
        dispatch_2d(enc, &self.pipeline, &b, groups(dim / 2, 64), heads as u32);
    }
}
