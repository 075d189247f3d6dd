//! The experts' down projection over the GPU-compacted union (`chunk_down.wgsl`), the twin of
//! `kernels::scalar::chunk_down`; it writes `ys` (no accumulation into earlier contents).

use crate::gpu::context::{bind, Gpu};
use crate::gpu::weights::{GpuDType, GpuMat};
use crate::{Error, Result};

use super::{dispatch_2d, dtype_index, groups, per_dtype};

const SOURCE: &str = include_str!("../shaders/chunk_down.wgsl");

pub struct ChunkDown {
    pipelines: [wgpu::ComputePipeline; 4],
}

impl ChunkDown {
    pub fn new(gpu: &Gpu) -> ChunkDown {
        ChunkDown { pipelines: per_dtype(gpu, "chunk_down", &[SOURCE], "chunk_down") }
    }

    /// Records `ys[t] = Σ over the union of u[t, j, r] · down[union[j] · de + r]` for `k` tokens.
    #[allow(clippy::too_many_arguments)]
    pub fn encode(
        &self,
        gpu: &Gpu,
        enc: &mut wgpu::CommandEncoder,
        down: &GpuMat,
        de: usize,
        k: usize,
        u: &wgpu::Buffer,
        union: &wgpu::Buffer,
        ys: &wgpu::Buffer,
    ) -> Result<()> {
        if down.parts.len() != 1 {
            return Err(Error::Unsupported("chunk_down: the down projection must fit one buffer".into()));
        }
        let part = &down.parts[0];
        let per_word = match down.dtype {
            GpuDType::F32 => 1,
            GpuDType::F16 | GpuDType::BF16 => 2,
            GpuDType::Q8 => 4,
        };
        let params = gpu.uniform("chunk_down.params", &[down.cols as u32, de as u32, k as u32, 0]);
        let pipeline = &self.pipelines[dtype_index(down.dtype)];
        let b = match &part.scales {
            Some(s) => bind(gpu, pipeline, &[&params, &part.data, u, union, ys, s]),
            None => bind(gpu, pipeline, &[&params, &part.data, u, union, ys]),
        };
        dispatch_2d(enc, pipeline, &b, groups(down.cols / per_word, 256), k as u32);
        Ok(())
    }
}
