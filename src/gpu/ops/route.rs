//! The router's decision on the GPU (`route.wgsl`), the twin of `cpu::block_ffn::route` for the
//! ReLU router: scores, the expert bitmask, and the active experts compacted for the sparse kernels.

use crate::config::RouterNorm;
use crate::gpu::context::{bind, Gpu};

use super::dispatch;

const SOURCE: &str = include_str!("../shaders/route.wgsl");

/// One token's routing result, resident on the GPU.
pub struct Routed {
    pub ne: usize,
    /// `[ne]`: normalised scores, 0 for inactive experts.
    pub scores: wgpu::Buffer,
    /// `[1 + ne]` u32: count, then the active ids ascending.
    pub active: wgpu::Buffer,
    /// `[ceil(ne / 32)]` u32: the bitmask (what telemetry reads back).
    pub mask: wgpu::Buffer,
}

impl Routed {
    pub fn new(gpu: &Gpu, ne: usize) -> Routed {
        Routed {
            ne,
            scores: gpu.storage_f32("route.scores", ne),
            active: gpu.storage_f32("route.active", 1 + ne),
            mask: gpu.storage_f32("route.mask", ne.div_ceil(32)),
        }
    }
}

pub struct Route {
    pipeline: wgpu::ComputePipeline,
    dummy: wgpu::Buffer,
}

impl Route {
    pub fn new(gpu: &Gpu) -> Route {
        Route { pipeline: gpu.pipeline("route", SOURCE, "route"), dummy: gpu.storage_f32("route.no_norm", 1) }
    }

    /// Records the routing of the router logits `a` (`[ne]`) into `out`; `g` is the RMS norm's
    /// weight (required for [`RouterNorm::Rms`]).
    #[allow(clippy::too_many_arguments)]
    pub fn encode(
        &self,
        gpu: &Gpu,
        enc: &mut wgpu::CommandEncoder,
        a: &wgpu::Buffer,
        norm: RouterNorm,
        g: Option<&wgpu::Buffer>,
        eps: f32,
        norm_scale: f32,
        out: &Routed,
    ) {
        let kind = match norm {
            RouterNorm::None => 0,
            RouterNorm::Rms => 1,
            RouterNorm::Sum => 2,
        };
        let params = gpu.uniform("route.params", &[out.ne as u32, kind, eps.to_bits(), norm_scale.to_bits()]);
        let g = g.unwrap_or(&self.dummy);
        let b = bind(gpu, &self.pipeline, &[&params, a, g, &out.scores, &out.active, &out.mask]);
        dispatch(enc, &self.pipeline, &b, 1);
    }
}
