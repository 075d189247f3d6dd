//! The experts' down projection over the GPU-compacted union (`chunk_down.wgsl`), the twin of
//! `kernels::scalar::chunk_down`; it writes `ys` (no accumulation into earlier contents).

use crate::gpu::context::{bind_at, Gpu};
use crate::gpu::weights::{GpuDType, GpuMat};
use crate::{Error, Result};

use super::chunk_up::Over;
use super::{dtype_index, groups, per_dtype, Cmd};

const SOURCE: &str = include_str!("../shaders/chunk_down.wgsl");

pub struct ChunkDown {
    pipelines: [wgpu::ComputePipeline; 4],
}

impl ChunkDown {
    pub fn new(gpu: &Gpu) -> ChunkDown {
        ChunkDown { pipelines: per_dtype(gpu, "chunk_down", &[SOURCE], "chunk_down") }
    }

    /// `ys[t] = Σ over the list of u[t, j, r] · down[list[j] · de + r]` for the span's tokens (at
    /// most `max_k`).
    #[allow(clippy::too_many_arguments)]
    pub fn cmd(
        &self,
        gpu: &Gpu,
        down: &GpuMat,
        de: usize,
        max_k: usize,
        over: Over,
        u: &wgpu::Buffer,
        list: &wgpu::Buffer,
        ys: &wgpu::Buffer,
    ) -> Result<Cmd> {
        let [part] = &down.parts[..] else {
            return Err(Error::Unsupported("chunk_down: the down projection must fit one buffer".into()));
        };
        let per_word = match down.dtype {
            GpuDType::F32 => 1,
            GpuDType::F16 | GpuDType::BF16 => 2,
            GpuDType::Q8 => 4,
        };
        let dense = u32::from(over == Over::All);
        let params = gpu.uniform("chunk_down.params", &[down.cols as u32, de as u32, max_k as u32, dense]);
        let pipeline = &self.pipelines[dtype_index(down.dtype)];
        let b = match &part.scales {
            Some(s) => bind_at(gpu, pipeline, &[(0, &params), (1, &part.data), (2, u), (3, list), (4, ys), (5, s)]),
            None => bind_at(gpu, pipeline, &[(0, &params), (1, &part.data), (2, u), (3, list), (4, ys)]),
        };
        let gx = groups(down.cols / per_word, 256);
        Ok(Cmd::new(pipeline, b, move |s| [gx, s.k as u32, 1]))
    }
}
