//! Greedy sampling on the GPU (`argmax.wgsl`), the twin of `sampling::argmax` after the
//! repetition penalty: the id goes to the next step's input and to a word the host reads back.

use crate::gpu::context::{bind, Gpu};

use super::Cmd;

const SOURCE: &str = include_str!("../shaders/argmax.wgsl");

pub struct Argmax {
    pipeline: wgpu::ComputePipeline,
}

impl Argmax {
    pub fn new(gpu: &Gpu) -> Argmax {
        Argmax { pipeline: gpu.pipeline("argmax", SOURCE, "argmax") }
    }

    /// `ids[0] = out[0] = argmax(penalised logits[..vocab])`, `out[1]` = any logit non-finite.
    /// `params`: a uniform of (vocab, penalty as f32 bits, 0, 0) the caller writes per generation
    /// (penalty 1 for none); `seen`: one bit per id of the context.
    pub fn cmd(
        &self,
        gpu: &Gpu,
        params: &wgpu::Buffer,
        logits: &wgpu::Buffer,
        seen: &wgpu::Buffer,
        ids: &wgpu::Buffer,
        out: &wgpu::Buffer,
    ) -> Cmd {
        let b = bind(gpu, &self.pipeline, &[params, logits, seen, ids, out]);
        Cmd::new(&self.pipeline, b, |_| [1, 1, 1])
    }
}
