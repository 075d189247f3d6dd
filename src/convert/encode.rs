//! One source tensor to its runtime form: decoded to f32, re-laid-out, encoded in the output
//! dtype (or quantized to q8). Allocations are fallible, so a tensor too large for the memory
//! left gives [`Error::OutOfMemory`] rather than an abort.

use half::{bf16, f16};

use super::raw::{Dtype, RawTensor};
use crate::layout::{TensorEntry, Transform};
use crate::tensor::{quantize_q8, Q8_BLOCK};
use crate::{Error, Result};

/// How one tensor is stored in the runtime file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Target {
    /// One tensor in this dtype (F32, F16 or BF16).
    Plain(Dtype),
    /// Block-quantized int8 plus a tensor of f32 scales.
    Q8,
}

/// A tensor's runtime bytes, with the largest |converted − source|.
pub(super) struct Encoded {
    pub data: Vec<u8>,
    /// The q8 scales, for [`Target::Q8`].
    pub scales: Option<Vec<u8>>,
    pub max_err: f32,
}

fn alloc<T>(n: usize, what: &str) -> Result<Vec<T>> {
    let mut v = Vec::new();
    v.try_reserve_exact(n).map_err(|_| {
        Error::OutOfMemory(format!("cannot allocate {n} × {} bytes for {what}", std::mem::size_of::<T>()))
    })?;
    Ok(v)
}

/// Decodes, re-lays-out and encodes `t` (the source of `e`) for `target`.
pub(super) fn encode_tensor(e: &TensorEntry, t: RawTensor, target: Target) -> Result<Encoded> {
    let v = to_f32(&t, &e.hf_name)?;
    drop(t);
    let v = relayout(v, e)?;
    match target {
        Target::Q8 => {
            let (data, scales, max_err) = encode_q8(&e.hf_name, &v)?;
            Ok(Encoded { data, scales: Some(scales), max_err })
        }
        Target::Plain(d) => {
            let (data, max_err) = encode(&e.hf_name, &v, d)?;
            Ok(Encoded { data, scales: None, max_err })
        }
    }
}

fn to_f32(t: &RawTensor, name: &str) -> Result<Vec<f32>> {
    let mut out = alloc(t.numel(), &format!("tensor `{name}`"))?;
    match t.dtype {
        Dtype::F32 => out.extend(t.data.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))),
        Dtype::F16 => out.extend(t.data.chunks_exact(2).map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32())),
        Dtype::BF16 => out.extend(t.data.chunks_exact(2).map(|b| bf16::from_le_bytes([b[0], b[1]]).to_f32())),
        other => {
            return Err(Error::InvalidCheckpoint(format!(
                "tensor `{name}` has dtype {other:?}; only F32, F16 and BF16 weights are supported"
            )))
        }
    }
    Ok(out)
}

fn relayout(v: Vec<f32>, e: &TensorEntry) -> Result<Vec<f32>> {
    let zeros = |n: usize| -> Result<Vec<f32>> {
        let mut out = alloc(n, &format!("tensor `{}`", e.hf_name))?;
        out.resize(n, 0.0);
        Ok(out)
    };
    Ok(match e.transform {
        Transform::Identity => v,
        Transform::TransposeDown => {
            // [H, N] -> [N, H]
            let (h, n) = (e.hf_shape[0], e.hf_shape[1]);
            let mut out = zeros(v.len())?;
            for r in 0..h {
                for c in 0..n {
                    out[c * h + r] = v[r * n + c];
                }
            }
            out
        }
        Transform::TransposeDownBlocks { experts } => {
            // [Ne, H, de] -> [Ne, de, H]
            let (h, de) = (e.hf_shape[1], e.hf_shape[2]);
            let mut out = zeros(v.len())?;
            for x in 0..experts {
                let base = x * h * de;
                for r in 0..h {
                    for j in 0..de {
                        out[base + j * h + r] = v[base + r * de + j];
                    }
                }
            }
            out
        }
    })
}

/// Encodes f32 values in the output dtype; returns the bytes and the largest rounding error.
fn encode(name: &str, v: &[f32], dtype: Dtype) -> Result<(Vec<u8>, f32)> {
    let mut err = 0.0f32;
    let what = format!("tensor `{name}`");
    let bytes = match dtype {
        Dtype::F32 => {
            let mut out = alloc(v.len() * 4, &what)?;
            out.extend_from_slice(bytemuck::cast_slice(v));
            out
        }
        Dtype::F16 => {
            let mut out = alloc(v.len() * 2, &what)?;
            for &x in v {
                let y = f16::from_f32(x);
                if y.is_infinite() && x.is_finite() {
                    return Err(Error::InvalidCheckpoint(format!(
                        "tensor `{name}` holds {x}, beyond the f16 range; convert with --dtype bf16 or f32"
                    )));
                }
                err = err.max((y.to_f32() - x).abs());
                out.extend_from_slice(&y.to_le_bytes());
            }
            out
        }
        Dtype::BF16 => {
            let mut out = alloc(v.len() * 2, &what)?;
            for &x in v {
                let y = bf16::from_f32(x);
                err = err.max((y.to_f32() - x).abs());
                out.extend_from_slice(&y.to_le_bytes());
            }
            out
        }
        other => return Err(Error::InvalidInput(format!("{other:?} is not an output dtype"))),
    };
    Ok((bytes, err))
}

/// Quantizes a runtime-layout matrix to q8; returns the int8 bytes, the f32 scale bytes and the
/// largest |dequantized − source|.
fn encode_q8(name: &str, v: &[f32]) -> Result<(Vec<u8>, Vec<u8>, f32)> {
    let (q, scales) = quantize_q8(v).ok_or_else(|| {
        Error::InvalidCheckpoint(format!("tensor `{name}` holds a NaN or infinite weight, which q8 cannot store"))
    })?;
    let mut err = 0.0f32;
    for (i, (&w, &x)) in v.iter().zip(&q).enumerate() {
        err = err.max((scales[i / Q8_BLOCK] * x as f32 - w).abs());
    }
    Ok((bytemuck::cast_slice(&q).to_vec(), bytemuck::cast_slice(&scales).to_vec(), err))
}
