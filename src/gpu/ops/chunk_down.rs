//! The experts' down projection over the GPU-compacted union (`chunk_down.wgsl`), the twin of
//! `kernels::scalar::chunk_down`; it writes `ys` (no accumulation into earlier contents).

use crate::gpu::context::{bind_at, Gpu};
use crate::gpu::weights::{GpuDType, GpuMat};
use crate::{Error, Result};

use super::chunk_up::Over;
use super::{dtype_index, dtype_pipeline, groups, per_dtype, Cmd};

const SOURCE: &str = include_str!("../shaders/chunk_down.wgsl");

pub struct ChunkDown {
    pipelines: [wgpu::ComputePipeline; 4],
    reduce: wgpu::ComputePipeline,
}

/// Floats of the partial-sum scratch a [`ChunkDown`] command needs: `ne · max_k · H`.
pub fn partial_len(ne: usize, max_k: usize, hidden: usize) -> usize {
    ne * max_k * hidden
}

impl ChunkDown {
    pub fn new(gpu: &Gpu) -> ChunkDown {
        ChunkDown {
            pipelines: per_dtype(gpu, "chunk_down", &[SOURCE], "chunk_down"),
            reduce: dtype_pipeline(gpu, "chunk_down_reduce", &[SOURCE], "chunk_down_reduce", GpuDType::F32),
        }
    }

    /// `ys[t] = Σ over the list of u[t, j, r] · down[list[j] · de + r]` for the span's tokens (at
    /// most `max_k`): per-expert partial sums into `partial` (≥ [`partial_len`] floats for the
    /// layer's expert count), then their sum in list order. Two commands.
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
        partial: &wgpu::Buffer,
        ys: &wgpu::Buffer,
    ) -> Result<Vec<Cmd>> {
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
        let ne = down.rows / de.max(1);
        if (partial.size() as usize) < partial_len(ne, max_k, down.cols) * 4 {
            return Err(Error::InvalidInput("chunk_down: the partial-sum scratch is too small".into()));
        }
        let b = match &part.scales {
            Some(s) => bind_at(gpu, pipeline, &[(0, &params), (1, &part.data), (2, u), (3, list), (4, partial), (5, s)]),
            None => bind_at(gpu, pipeline, &[(0, &params), (1, &part.data), (2, u), (3, list), (4, partial)]),
        };
        let gx = groups(down.cols / per_word, 256);
        let rb = bind_at(gpu, &self.reduce, &[(0, &params), (3, list), (4, partial), (6, ys)]);
        let gr = groups(down.cols, 256);
        Ok(vec![
            Cmd::new(pipeline, b, move |s| [gx, s.k as u32, ne as u32]),
            Cmd::new(&self.reduce, rb, move |s| [gr, s.k as u32, 1]),
        ])
    }
}
