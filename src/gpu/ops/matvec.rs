//! y = W x on the GPU (`matvec.wgsl`), the twin of `kernels::scalar::matvec`, for every weight
//! dtype; one dispatch per row part of W (see `gpu::weights`). q8 quantizes x first, as the CPU does.

use crate::gpu::context::{bind, Gpu};
use crate::gpu::weights::{GpuDType, GpuMat};
use crate::{Error, Result};

use super::quantize_q8::{Q8Vector, QuantizeQ8};
use super::{dispatch, dtype_index, groups, per_dtype, ELEMS_WGSL, ROWS_WGSL};

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

    /// Records `y[..w.rows] = W x[..w.cols]`. A q8 `w` needs `q8` scratch of `w.cols` values.
    pub fn encode(
        &self,
        gpu: &Gpu,
        enc: &mut wgpu::CommandEncoder,
        w: &GpuMat,
        x: &wgpu::Buffer,
        y: &wgpu::Buffer,
        q8: Option<&Q8Vector>,
    ) -> Result<()> {
        if w.dtype == GpuDType::Q8 {
            let qx = q8.filter(|v| v.n == w.cols).ok_or_else(|| {
                Error::InvalidInput(format!("matvec: a q8 matrix needs q8 scratch of {} values", w.cols))
            })?;
            self.quantize.encode(gpu, enc, x, qx);
        }
        let pipeline = &self.pipelines[dtype_index(w.dtype)];
        for part in &w.parts {
            if part.rows == 0 {
                continue;
            }
            let params = gpu.uniform("matvec.params", &[part.rows as u32, w.cols as u32, part.row0 as u32, 0]);
            let b = match (&part.scales, q8) {
                (Some(s), Some(qx)) => bind(gpu, pipeline, &[&params, &part.data, x, y, s, &qx.q, &qx.scales]),
                _ => bind(gpu, pipeline, &[&params, &part.data, x, y]),
            };
            dispatch(enc, pipeline, &b, groups(part.rows, ROWS));
        }
        Ok(())
    }
}
