//! `q_abs,h = W_kb,hᵀ q_nope,h` on the GPU (`mla_absorb.wgsl`) for the span's tokens, the twin of
//! `kernels::scalar::axpy_rows` over each head's key rows of kv_b.

use crate::gpu::context::{bind_at, Gpu};
use crate::gpu::weights::GpuMat;
use crate::{Error, Result};

use super::attn_scores::MlaShape;
use super::{dtype_index, groups, per_dtype, Cmd, ELEMS_WGSL};

const SOURCE: &str = include_str!("../shaders/mla_absorb.wgsl");

pub struct MlaAbsorb {
    pipelines: [wgpu::ComputePipeline; 4],
}

impl MlaAbsorb {
    pub fn new(gpu: &Gpu) -> MlaAbsorb {
        MlaAbsorb { pipelines: per_dtype(gpu, "mla_absorb", &[ELEMS_WGSL, SOURCE], "mla_absorb") }
    }

    /// `q_abs[t, h] = kv_b[h's nope rows]ᵀ q[t, h, ..nope]` for every head and token.
    pub fn cmd(&self, gpu: &Gpu, kv_b: &GpuMat, d: MlaShape, q: &wgpu::Buffer, q_abs: &wgpu::Buffer) -> Result<Cmd> {
        let [part] = &kv_b.parts[..] else {
            return Err(Error::Unsupported("mla_absorb: kv_b must fit one buffer".into()));
        };
        let qhd = d.nope + d.rope;
        let params = gpu.uniform(
            "mla_absorb.params",
            &[d.heads as u32, d.nope as u32, d.vdim as u32, d.r as u32, qhd as u32, 0, 0, 0],
        );
        let pipeline = &self.pipelines[dtype_index(kv_b.dtype)];
        let b = match &part.scales {
            Some(s) => bind_at(gpu, pipeline, &[(0, &params), (1, &part.data), (2, q), (3, q_abs), (4, s)]),
            None => bind_at(gpu, pipeline, &[(0, &params), (1, &part.data), (2, q), (3, q_abs)]),
        };
        let (gx, heads) = (groups(d.r, 64), d.heads as u32);
        Ok(Cmd::new(pipeline, b, move |s| [gx, heads, s.k as u32]))
    }
}
