//! Token embeddings gathered on the GPU (`embed.wgsl`), the twin of `kernels::scalar::row_to_f32`
//! times `scale_emb`; the ids come from a GPU buffer.

use crate::gpu::context::{bind, Gpu};
use crate::gpu::weights::GpuMat;
use crate::{Error, Result};

use super::{dispatch_2d, dtype_index, groups, per_dtype, ELEMS_WGSL};

const SOURCE: &str = include_str!("../shaders/embed.wgsl");

pub struct Embed {
    pipelines: [wgpu::ComputePipeline; 4],
}

impl Embed {
    pub fn new(gpu: &Gpu) -> Embed {
        Embed { pipelines: per_dtype(gpu, "embed", &[ELEMS_WGSL, SOURCE], "embed") }
    }

    /// Records `h[t] = table[ids[t]] · scale` for `k` ids.
    #[allow(clippy::too_many_arguments)]
    pub fn encode(
        &self,
        gpu: &Gpu,
        enc: &mut wgpu::CommandEncoder,
        table: &GpuMat,
        scale: f32,
        k: usize,
        ids: &wgpu::Buffer,
        h: &wgpu::Buffer,
    ) -> Result<()> {
        let [part] = &table.parts[..] else {
            return Err(Error::Unsupported("embed: the embedding table must fit one buffer".into()));
        };
        let params = gpu.uniform("embed.params", &[table.cols as u32, k as u32, scale.to_bits(), 0]);
        let pipeline = &self.pipelines[dtype_index(table.dtype)];
        let b = match &part.scales {
            Some(s) => bind(gpu, pipeline, &[&params, &part.data, ids, h, s]),
            None => bind(gpu, pipeline, &[&params, &part.data, ids, h]),
        };
        dispatch_2d(enc, pipeline, &b, groups(table.cols, 256), k as u32);
        Ok(())
    }
}
