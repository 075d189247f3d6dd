//! y_t = W x_t on the GPU (`matvec.wgsl`) for the span's tokens, the twin of
//! `kernels::scalar::matvec`, for every weight dtype; one dispatch per row part of W (see
//! `gpu::weights`). q8 quantizes x first, as the CPU does.

use crate::gpu::context::{bind_at, Gpu};
use crate::gpu::weights::{GpuDType, GpuMat};
use crate::{Error, Result};

use super::quantize_q8::{Q8Vector, QuantizeQ8};
use super::{dtype_index, groups, per_dtype, Cmd, Tokens, ELEMS_WGSL, ROWS_WGSL};

const SOURCE: &str = include_str!("../shaders/matvec.wgsl");
/// Rows per workgroup (`ROWS` in the shader).
const ROWS: usize = 4;

pub struct Matvec {
    pipelines: [wgpu::ComputePipeline; 4],
    quantize: QuantizeQ8,
}

impl Matvec {
    pub fn new(gpu: &Gpu) -> Matvec {
        Matvec {
            pipelines: per_dtype(gpu, "matvec", &[ELEMS_WGSL, ROWS_WGSL, SOURCE], "matvec"),
            quantize: QuantizeQ8::new(gpu),
        }
    }

    /// `y[t · y_stride ..][..w.rows] = W x[t · w.cols ..]` for the tokens `tokens` selects. A q8
    /// `w` needs `q8` scratch for `w.cols` values per token (it is quantized first).
    pub fn cmds(
        &self,
        gpu: &Gpu,
        w: &GpuMat,
        x: &wgpu::Buffer,
        y: &wgpu::Buffer,
        y_stride: usize,
        tokens: Tokens,
        q8: Option<&Q8Vector>,
    ) -> Result<Vec<Cmd>> {
        let mut out = Vec::new();
        if w.dtype == GpuDType::Q8 {
            let qx = q8.filter(|v| v.n == w.cols).ok_or_else(|| {
                Error::InvalidInput(format!("matvec: a q8 matrix needs q8 scratch of {} values", w.cols))
            })?;
            out.push(self.quantize.cmd(gpu, x, qx, tokens));
        }
        let pipeline = &self.pipelines[dtype_index(w.dtype)];
        for part in w.parts.iter().filter(|p| p.rows > 0) {
            let params =
                gpu.uniform("matvec.params", &[part.rows as u32, w.cols as u32, part.row0 as u32, y_stride as u32]);
            let b = match (&part.scales, q8) {
                (Some(s), Some(qx)) => bind_at(
                    gpu,
                    pipeline,
                    &[(0, &params), (1, &part.data), (2, x), (3, y), (4, s), (5, &qx.q), (6, &qx.scales)],
                ),
                _ => bind_at(gpu, pipeline, &[(0, &params), (1, &part.data), (2, x), (3, y)]),
            };
            let gx = groups(part.rows, ROWS);
            out.push(Cmd::new(pipeline, b, move |s| [gx, tokens.count(s), 1]));
        }
        Ok(out)
    }
}
