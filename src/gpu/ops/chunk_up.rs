//! The experts' up projection over the GPU-compacted union (`chunk_up.wgsl`), the twin of
//! `kernels::scalar::chunk_up`: a fixed grid with early exit, nothing read back.

use crate::gpu::context::{bind, Gpu};
use crate::gpu::weights::{GpuDType, GpuMat};
use crate::{Error, Result};

use super::quantize_q8::{Q8Vector, QuantizeQ8};
use super::{dispatch_2d, dtype_index, per_dtype, ELEMS_WGSL, ROWS_WGSL};

const SOURCE: &str = include_str!("../shaders/chunk_up.wgsl");
const ROWS: usize = 4;

pub struct ChunkUp {
    pipelines: [wgpu::ComputePipeline; 4],
    quantize: QuantizeQ8,
}

impl ChunkUp {
    pub fn new(gpu: &Gpu) -> ChunkUp {
        ChunkUp {
            pipelines: per_dtype(gpu, "chunk_up", &[ELEMS_WGSL, ROWS_WGSL, SOURCE], "chunk_up"),
            quantize: QuantizeQ8::new(gpu),
        }
    }

    /// Records `u = chunk_up(up, de, union, xs, scores)` for `k` tokens (`xs` `[k, H]`, `scores`
    /// `[k, ne]`, `union` as route.wgsl writes it, `u` ≥ `k · ne · de` values). A q8 `up` needs
    /// `q8` scratch of `k · H` values.
    #[allow(clippy::too_many_arguments)]
    pub fn encode(
        &self,
        gpu: &Gpu,
        enc: &mut wgpu::CommandEncoder,
        up: &GpuMat,
        de: usize,
        ne: usize,
        k: usize,
        xs: &wgpu::Buffer,
        scores: &wgpu::Buffer,
        union: &wgpu::Buffer,
        u: &wgpu::Buffer,
        q8: Option<&Q8Vector>,
    ) -> Result<()> {
        if up.parts.len() != 1 || de % ROWS != 0 || up.rows != ne * de {
            return Err(Error::Unsupported(format!(
                "chunk_up: needs one buffer part, de a multiple of {ROWS} and ne · de rows (got {} parts, de {de}, {} rows)",
                up.parts.len(),
                up.rows
            )));
        }
        let part = &up.parts[0];
        let params = gpu.uniform("chunk_up.params", &[up.cols as u32, de as u32, ne as u32, 0]);
        let pipeline = &self.pipelines[dtype_index(up.dtype)];
        let b = if up.dtype == GpuDType::Q8 {
            let qx = q8
                .filter(|v| v.n == k * up.cols)
                .ok_or_else(|| Error::InvalidInput("chunk_up: a q8 matrix needs q8 scratch of k · H values".into()))?;
            self.quantize.encode(gpu, enc, xs, qx);
            let s = part.scales.as_ref().expect("q8 parts have scales");
            bind(gpu, pipeline, &[&params, &part.data, xs, scores, union, u, s, &qx.q, &qx.scales])
        } else {
            bind(gpu, pipeline, &[&params, &part.data, xs, scores, union, u])
        };
        dispatch_2d(enc, pipeline, &b, (ne * de / ROWS) as u32, k as u32);
        Ok(())
    }
}
