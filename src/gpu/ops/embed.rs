//! Token embeddings gathered on the GPU (`embed.wgsl`), the twin of `kernels::scalar::row_to_f32`
//! times `scale_emb`; the ids come from a GPU buffer (a sampled token never goes through the host).

use crate::gpu::context::{bind_at, Gpu};
use crate::gpu::weights::GpuMat;
use crate::{Error, Result};

use super::{dtype_index, groups, per_dtype, Cmd, ELEMS_WGSL};

const SOURCE: &str = include_str!("../shaders/embed.wgsl");

pub struct Embed {
    pipelines: [wgpu::ComputePipeline; 4],
}

impl Embed {
    pub fn new(gpu: &Gpu) -> Embed {
        Embed { pipelines: per_dtype(gpu, "embed", &[ELEMS_WGSL, SOURCE], "embed") }
    }

    /// `h[t] = table[ids[t]] · scale` for the span's tokens (at most `max_k`).
    pub fn cmd(
        &self,
        gpu: &Gpu,
        table: &GpuMat,
        scale: f32,
        max_k: usize,
        ids: &wgpu::Buffer,
        h: &wgpu::Buffer,
    ) -> Result<Cmd> {
        let [part] = &table.parts[..] else {
            return Err(Error::Unsupported("embed: the embedding table must fit one buffer".into()));
        };
        let params = gpu.uniform("embed.params", &[table.cols as u32, max_k as u32, scale.to_bits(), 0]);
        let pipeline = &self.pipelines[dtype_index(table.dtype)];
        let b = match &part.scales {
            Some(s) => bind_at(gpu, pipeline, &[(0, &params), (1, &part.data), (2, ids), (3, h), (4, s)]),
            None => bind_at(gpu, pipeline, &[(0, &params), (1, &part.data), (2, ids), (3, h)]),
        };
        let gx = groups(table.cols, 256);
        Ok(Cmd::new(pipeline, b, move |s| [gx, s.k as u32, 1]))
    }
}
