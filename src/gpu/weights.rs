//! Weight matrices in GPU storage buffers, laid out so the shaders need no `shader-f16`:
//! f32 as is, f16 and bf16 two per `u32` (element 2i in the low half), q8 four int8 per `u32`
//! (element 4i in the low byte) with one f32 scale per 32 weights in a second buffer — the
//! runtime package's byte layout, so uploading is a copy.
//!
//! A matrix larger than the device's binding limit is split by rows into parts, each its own
//! buffer ≤ the limit; a matrix-vector product runs once per part (rows are independent, so the
//! split is exact).

use crate::tensor::{Mat, Q8_BLOCK};
use crate::{Error, Result};

use super::Gpu;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GpuDType {
    F32,
    F16,
    BF16,
    Q8,
}

/// Rows `row0 .. row0 + rows` of a matrix, in one buffer (plus its q8 scales).
pub struct Part {
    pub data: wgpu::Buffer,
    pub scales: Option<wgpu::Buffer>,
    pub row0: usize,
    pub rows: usize,
}

pub struct GpuMat {
    pub dtype: GpuDType,
    pub rows: usize,
    pub cols: usize,
    pub parts: Vec<Part>,
}

impl GpuMat {
    /// Uploads `w`, split into parts no larger than the device's binding limit.
    pub fn upload(gpu: &Gpu, label: &str, w: Mat) -> Result<GpuMat> {
        GpuMat::upload_limited(gpu, label, w, gpu.max_binding())
    }

    /// [`GpuMat::upload`] with an explicit per-buffer limit in bytes (tests use a small one to
    /// exercise the split).
    pub fn upload_limited(gpu: &Gpu, label: &str, w: Mat, max_bytes: u64) -> Result<GpuMat> {
        let (rows, cols) = (w.rows(), w.cols());
        let (dtype, bytes, scales): (GpuDType, &[u8], Option<&[f32]>) = match w {
            Mat::F32 { data, .. } => (GpuDType::F32, bytemuck::cast_slice(data), None),
            Mat::F16 { data, .. } => (GpuDType::F16, bytemuck::cast_slice(data), None),
            Mat::BF16 { data, .. } => (GpuDType::BF16, bytemuck::cast_slice(data), None),
            Mat::Q8 { data, scales, .. } => (GpuDType::Q8, bytemuck::cast_slice(data), Some(scales)),
        };
        let elem = match dtype {
            GpuDType::F32 => 4,
            GpuDType::F16 | GpuDType::BF16 => 2,
            GpuDType::Q8 => 1,
        };
        // Rows must start on a u32 boundary for the packed layouts.
        if (cols * elem) % 4 != 0 || (dtype == GpuDType::Q8 && cols % Q8_BLOCK != 0) {
            return Err(Error::Unsupported(format!(
                "{label}: a {dtype:?} matrix with {cols} columns cannot be laid out for the GPU (rows must fill whole 32-bit words{})",
                if dtype == GpuDType::Q8 { " and whole q8 blocks" } else { "" }
            )));
        }
        let row_bytes = (cols * elem) as u64;
        let needed = (rows * cols * elem) as usize;
        if bytes.len() < needed || scales.is_some_and(|s| s.len() < rows * cols / Q8_BLOCK) {
            return Err(Error::InvalidCheckpoint(format!("{label}: the data is shorter than {rows} × {cols}")));
        }
        let rows_per_part = (max_bytes / row_bytes.max(1)) as usize;
        if rows_per_part == 0 {
            return Err(Error::OutOfMemory(format!(
                "{label}: one row ({row_bytes} bytes) exceeds the GPU's largest binding ({max_bytes} bytes)"
            )));
        }
        let mut parts = Vec::new();
        let mut row0 = 0;
        while row0 < rows.max(1) {
            let n = rows_per_part.min(rows - row0).max(if rows == 0 { 0 } else { 1 });
            let data = gpu.storage(label, &bytes[row0 * cols * elem..(row0 + n) * cols * elem]);
            let sc = scales.map(|s| {
                let nb = cols / Q8_BLOCK;
                gpu.storage(&format!("{label}.scales"), bytemuck::cast_slice(&s[row0 * nb..(row0 + n) * nb]))
            });
            parts.push(Part { data, scales: sc, row0, rows: n });
            row0 += n;
            if rows == 0 {
                break;
            }
        }
        Ok(GpuMat { dtype, rows, cols, parts })
    }
}
