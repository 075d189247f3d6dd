//! `q_abs,h = W_kb,hᵀ q_nope,h` on the GPU (`mla_absorb.wgsl`), the twin of
//! `kernels::scalar::axpy_rows` over each head's key rows of kv_b.

use crate::gpu::context::{bind, Gpu};
use crate::gpu::weights::GpuMat;
use crate::{Error, Result};

use super::attn_scores::MlaShape;
use super::{dispatch_2d, dtype_index, groups, per_dtype, ELEMS_WGSL};

const SOURCE: &str = include_str!("../shaders/mla_absorb.wgsl");

pub struct MlaAbsorb {
    pipelines: [wgpu::ComputePipeline; 4],
}

impl MlaAbsorb {
    pub fn new(gpu: &Gpu) -> MlaAbsorb {
        MlaAbsorb { pipelines: per_dtype(gpu, "mla_absorb", &[ELEMS_WGSL, SOURCE], "mla_absorb") }
    }

    /// Records `q_abs[h] = kv_b[h's nope rows]ᵀ q[h, ..nope]` for every head.
    pub fn encode(
        &self,
        gpu: &Gpu,
        enc: &mut wgpu::CommandEncoder,
        kv_b: &GpuMat,
        d: MlaShape,
        q: &wgpu::Buffer,
        q_abs: &wgpu::Buffer,
    ) -> Result<()> {
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
            Some(s) => bind(gpu, pipeline, &[&params, &part.data, q, q_abs, s]),
            None => bind(gpu, pipeline, &[&params, &part.data, q, q_abs]),
        };
        dispatch_2d(enc, pipeline, &b, groups(d.r, 64), d.heads as u32);
        Ok(())
    }
}
