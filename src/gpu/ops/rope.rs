//! RoPE on the GPU (`rope.wgsl`) for the span's tokens, the twin of
//! `kernels::scalar::rope_rotate_half`, with cos/sin from a table the host computes once exactly as
//! the CPU does.

use crate::gpu::context::{bind_at, Gpu};

use super::{groups, Cmd, STEP_WGSL};

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

/// Where the rotated slices are: token t's slice h at `base + t · token_stride + h · stride`.
#[derive(Clone, Copy, Debug)]
pub struct RopeSlices {
    pub heads: usize,
    pub dim: usize,
    pub stride: usize,
    pub base: usize,
    pub token_stride: usize,
}

impl Rope {
    pub fn new(gpu: &Gpu) -> Rope {
        Rope { pipeline: gpu.pipeline("rope", &[STEP_WGSL, SOURCE].concat(), "rope") }
    }

    /// Rotates the slices of every token t of the span to position `span.pos0 + t`, in place.
    pub fn cmd(&self, gpu: &Gpu, table: &wgpu::Buffer, x: &wgpu::Buffer, sl: RopeSlices, step: &wgpu::Buffer) -> Cmd {
        let params = gpu.uniform(
            "rope.params",
            &[sl.heads as u32, sl.dim as u32, sl.stride as u32, sl.base as u32, sl.token_stride as u32, 0, 0, 0],
        );
        let b = bind_at(gpu, &self.pipeline, &[(0, &params), (1, table), (2, x), (10, step)]);
        let (gx, heads) = (groups(sl.dim / 2, 64), sl.heads as u32);
        Cmd::new(&self.pipeline, b, move |s| [gx, heads, s.k as u32])
    }
}
