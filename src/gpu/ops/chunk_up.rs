//! The experts' up projection over the GPU-compacted union (`chunk_up.wgsl`), the twin of
//! `kernels::scalar::chunk_up`: a fixed grid with early exit, nothing read back.

use crate::gpu::context::{bind_at, Gpu};
use crate::gpu::weights::{GpuDType, GpuMat};
use crate::{Error, Result};

use super::quantize_q8::{Q8Vector, QuantizeQ8};
use super::{dtype_index, per_dtype, Cmd, Tokens, ELEMS_WGSL, ROWS_WGSL};

const SOURCE: &str = include_str!("../shaders/chunk_up.wgsl");
const ROWS: usize = 4;

pub struct ChunkUp {
    pipelines: [wgpu::ComputePipeline; 4],
    quantize: QuantizeQ8,
}

/// What a chunk FFN command runs over: the union route.wgsl compacted (sparse), or the list of
/// every expert with zero scores computed too (dense).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Over {
    Union,
    All,
}

impl ChunkUp {
    pub fn new(gpu: &Gpu) -> ChunkUp {
        ChunkUp {
            pipelines: per_dtype(gpu, "chunk_up", &[ELEMS_WGSL, ROWS_WGSL, SOURCE], "chunk_up"),
            quantize: QuantizeQ8::new(gpu),
        }
    }

    /// `u = chunk_up(up, de, list, xs, scores)` for the span's tokens (`xs` `[k, H]`, `scores`
    /// `[k, ne]`, `list` as route.wgsl writes it, `u` ≥ `k · ne · de` values). A q8 `up` needs
    /// `q8` scratch of `H` values per token.
    #[allow(clippy::too_many_arguments)]
    pub fn cmds(
        &self,
        gpu: &Gpu,
        up: &GpuMat,
        de: usize,
        ne: usize,
        over: Over,
        xs: &wgpu::Buffer,
        scores: &wgpu::Buffer,
        list: &wgpu::Buffer,
        u: &wgpu::Buffer,
        q8: Option<&Q8Vector>,
    ) -> Result<Vec<Cmd>> {
        if up.parts.len() != 1 || de % ROWS != 0 || up.rows != ne * de {
            return Err(Error::Unsupported(format!(
                "chunk_up: needs one buffer part, de a multiple of {ROWS} and ne · de rows (got {} parts, de {de}, {} rows)",
                up.parts.len(),
                up.rows
            )));
        }
        let part = &up.parts[0];
        let dense = u32::from(over == Over::All);
        let params = gpu.uniform("chunk_up.params", &[up.cols as u32, de as u32, ne as u32, dense]);
        let pipeline = &self.pipelines[dtype_index(up.dtype)];
        let mut out = Vec::new();
        let b = if up.dtype == GpuDType::Q8 {
            let qx = q8
                .filter(|v| v.n == up.cols)
                .ok_or_else(|| Error::InvalidInput("chunk_up: a q8 matrix needs q8 scratch of H values per token".into()))?;
            out.push(self.quantize.cmd(gpu, xs, qx, Tokens::Span));
            let s = part.scales.as_ref().ok_or_else(|| Error::InvalidCheckpoint("q8 up without scales".into()))?;
            bind_at(
                gpu,
                pipeline,
                &[
                    (0, &params),
                    (1, &part.data),
                    (2, xs),
                    (3, scores),
                    (4, list),
                    (5, u),
                    (6, s),
                    (7, &qx.q),
                    (8, &qx.scales),
                ],
            )
        } else {
            bind_at(gpu, pipeline, &[(0, &params), (1, &part.data), (2, xs), (3, scores), (4, list), (5, u)])
        };
        let gx = (ne * de / ROWS) as u32;
        out.push(Cmd::new(pipeline, b, move |s| [gx, s.k as u32, 1]));
        Ok(out)
    }
}
