//! `o_h = W_vb,h c̄_h` for every head and token on the GPU (`mla_out.wgsl`), the twin of
//! `kernels::scalar::matvec` on each head's value rows of kv_b.

use crate::gpu::context::{bind_at, Gpu};
use crate::gpu::weights::{GpuDType, GpuMat};
use crate::{Error, Result};

use super::attn_scores::MlaShape;
use super::quantize_q8::{Q8Vector, QuantizeQ8};
use super::{dtype_index, per_dtype, Cmd, Tokens, ELEMS_WGSL, ROWS_WGSL};

const SOURCE: &str = include_str!("../shaders/mla_out.wgsl");
const ROWS: usize = 4;

pub struct MlaOut {
    pipelines: [wgpu::ComputePipeline; 4],
    quantize: QuantizeQ8,
}

impl MlaOut {
    pub fn new(gpu: &Gpu) -> MlaOut {
        MlaOut {
            pipelines: per_dtype(gpu, "mla_out", &[ELEMS_WGSL, ROWS_WGSL, SOURCE], "mla_out"),
            quantize: QuantizeQ8::new(gpu),
        }
    }

    /// `o[t, h] = kv_b[h's value rows] · cbar[t, h]` (`[k, heads, vdim]`); q8 needs scratch of
    /// `heads · r` values per token.
    pub fn cmds(
        &self,
        gpu: &Gpu,
        kv_b: &GpuMat,
        d: MlaShape,
        cbar: &wgpu::Buffer,
        o: &wgpu::Buffer,
        q8: Option<&Q8Vector>,
    ) -> Result<Vec<Cmd>> {
        let [part] = &kv_b.parts[..] else {
            return Err(Error::Unsupported("mla_out: kv_b must fit one buffer".into()));
        };
        if d.vdim % ROWS != 0 {
            return Err(Error::Unsupported(format!("mla_out: v_head_dim {} is not a multiple of {ROWS}", d.vdim)));
        }
        let params = gpu.uniform("mla_out.params", &[d.heads as u32, d.nope as u32, d.vdim as u32, d.r as u32]);
        let pipeline = &self.pipelines[dtype_index(kv_b.dtype)];
        let mut out = Vec::new();
        let b = if kv_b.dtype == GpuDType::Q8 {
            let qx = q8
                .filter(|v| v.n == d.heads * d.r)
                .ok_or_else(|| Error::InvalidInput("mla_out: a q8 kv_b needs q8 scratch of heads · r values".into()))?;
            out.push(self.quantize.cmd(gpu, cbar, qx, Tokens::Span));
            let s = part.scales.as_ref().ok_or_else(|| Error::InvalidCheckpoint("q8 kv_b without scales".into()))?;
            bind_at(
                gpu,
                pipeline,
                &[(0, &params), (1, &part.data), (2, cbar), (3, o), (4, s), (5, &qx.q), (6, &qx.scales)],
            )
        } else {
            bind_at(gpu, pipeline, &[(0, &params), (1, &part.data), (2, cbar), (3, o)])
        };
        let gx = (d.heads * d.vdim / ROWS) as u32;
        out.push(Cmd::new(pipeline, b, move |s| [gx, s.k as u32, 1]));
        Ok(out)
    }
}
