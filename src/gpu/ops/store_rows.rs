//! Appending the span's rows to a cache on the GPU (`store_rows.wgsl`): the cache writes of
//! cpu::mla / cpu::gqa (`extend_from_slice`), at the span's positions.

use crate::gpu::context::{bind_at, Gpu};

use super::{groups, Cmd, STEP_WGSL};

const SOURCE: &str = include_str!("../shaders/store_rows.wgsl");

pub struct StoreRows {
    pipeline: wgpu::ComputePipeline,
}

impl StoreRows {
    pub fn new(gpu: &Gpu) -> StoreRows {
        StoreRows { pipeline: gpu.pipeline("store_rows", &[STEP_WGSL, SOURCE].concat(), "store_rows") }
    }

    /// `dst[(pos0 + t) · n ..][..n] = src[t · src_stride + src_off ..][..n]` for the span's tokens.
    #[allow(clippy::too_many_arguments)]
    pub fn cmd(
        &self,
        gpu: &Gpu,
        n: usize,
        src_stride: usize,
        src_off: usize,
        src: &wgpu::Buffer,
        dst: &wgpu::Buffer,
        step: &wgpu::Buffer,
    ) -> Cmd {
        let params = gpu.uniform("store_rows.params", &[n as u32, src_stride as u32, src_off as u32, 0]);
        let b = bind_at(gpu, &self.pipeline, &[(0, &params), (1, src), (2, dst), (10, step)]);
        let gx = groups(n, 64);
        Cmd::new(&self.pipeline, b, move |s| [gx, s.k as u32, 1])
    }
}
