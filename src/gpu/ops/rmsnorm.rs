//! RMSNorm of rows on the GPU (`rmsnorm.wgsl`), the twin of `kernels::scalar::rmsnorm`.

use crate::gpu::context::{bind_at, Gpu};

use super::{Cmd, Tokens, STEP_WGSL};

const SOURCE: &str = include_str!("../shaders/rmsnorm.wgsl");

/// Row layout of one rmsnorm command.
#[derive(Clone, Copy, Debug)]
pub struct NormRows {
    pub n: usize,
    pub in_stride: usize,
    pub out_stride: usize,
    /// The output divided by this (the LM head's input); 1 elsewhere.
    pub div: f32,
    /// `Tokens::Head`: input rows from `span.head_from` on (the final norm).
    pub tokens: Tokens,
}

impl NormRows {
    /// Contiguous rows of `n` values over the span.
    pub fn dense(n: usize) -> NormRows {
        NormRows { n, in_stride: n, out_stride: n, div: 1.0, tokens: Tokens::Span }
    }
}

pub struct RmsNorm {
    pipeline: wgpu::ComputePipeline,
}

impl RmsNorm {
    pub fn new(gpu: &Gpu) -> RmsNorm {
        RmsNorm { pipeline: gpu.pipeline("rmsnorm", &[STEP_WGSL, SOURCE].concat(), "rmsnorm") }
    }

    /// `out[r] = rmsnorm(x[r]) · w / div` for every row the span gives.
    #[allow(clippy::too_many_arguments)]
    pub fn cmd(
        &self,
        gpu: &Gpu,
        rows: NormRows,
        eps: f32,
        x: &wgpu::Buffer,
        w: &wgpu::Buffer,
        out: &wgpu::Buffer,
        step: &wgpu::Buffer,
    ) -> Cmd {
        let from_head = u32::from(rows.tokens == Tokens::Head);
        let params = gpu.uniform(
            "rmsnorm.params",
            &[
                rows.n as u32,
                eps.to_bits(),
                rows.in_stride as u32,
                rows.out_stride as u32,
                rows.div.to_bits(),
                from_head,
                0,
                0,
            ],
        );
        let b = bind_at(gpu, &self.pipeline, &[(0, &params), (1, x), (2, w), (3, out), (10, step)]);
        let tokens = rows.tokens;
        Cmd::new(&self.pipeline, b, move |s| [tokens.count(s), 1, 1])
    }
}
