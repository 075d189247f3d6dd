//! The router's decision on the GPU (`route.wgsl`), the twin of `cpu::block_ffn::route`: every
//! token's scores and expert bitmask, and the span's union of active experts compacted on the GPU.

use crate::config::{Router, RouterNorm};
use crate::gpu::context::{bind_at, Gpu};
use crate::{Error, Result};

use super::{Cmd, STEP_WGSL};

const SOURCE: &str = include_str!("../shaders/route.wgsl");

/// A span's routing result, resident on the GPU.
pub struct Routed {
    pub ne: usize,
    /// `[k, ne]`: normalised scores, 0 for inactive experts.
    pub scores: wgpu::Buffer,
    /// `[1 + ne]` u32: the union's count, then its ids ascending.
    pub active: wgpu::Buffer,
}

impl Routed {
    pub fn new(gpu: &Gpu, ne: usize, max_k: usize) -> Routed {
        Routed { ne, scores: gpu.storage_f32("route.scores", max_k * ne), active: gpu.storage_f32("route.active", 1 + ne) }
    }
}

/// The router of one layer and where its masks go: token t's at `(t · layers + layer) · words`.
#[derive(Clone, Copy, Debug)]
pub struct RouteParams {
    pub router: Router,
    pub eps: f32,
    pub norm_scale: f32,
    pub layer: usize,
    pub layers: usize,
}

pub struct Route {
    pipeline: wgpu::ComputePipeline,
    dummy: wgpu::Buffer,
}

/// Experts one workgroup-wide union can hold (`union_bits` in the shader).
pub const MAX_EXPERTS: usize = 256;

impl Route {
    pub fn new(gpu: &Gpu) -> Route {
        Route {
            pipeline: gpu.pipeline("route", &[STEP_WGSL, SOURCE].concat(), "route"),
            dummy: gpu.storage_f32("route.no_norm", 1),
        }
    }

    /// Routes the router logits `a` (`[k, ne]`) into `out` and `masks`; `g` is the RMS norm's
    /// weight (required for [`RouterNorm::Rms`]).
    #[allow(clippy::too_many_arguments)]
    pub fn cmd(
        &self,
        gpu: &Gpu,
        a: &wgpu::Buffer,
        p: RouteParams,
        g: Option<&wgpu::Buffer>,
        out: &Routed,
        masks: &wgpu::Buffer,
        step: &wgpu::Buffer,
    ) -> Result<Cmd> {
        if out.ne > MAX_EXPERTS {
            return Err(Error::Unsupported(format!("route: {} experts (the GPU router holds {MAX_EXPERTS})", out.ne)));
        }
        let (kind, top_k) = match p.router {
            Router::Relu(RouterNorm::None) => (0, 0),
            Router::Relu(RouterNorm::Rms) => (1, 0),
            Router::Relu(RouterNorm::Sum) => (2, 0),
            Router::TopK { k } => (3, k as u32),
        };
        let params = gpu.uniform(
            "route.params",
            &[
                out.ne as u32,
                kind,
                p.eps.to_bits(),
                p.norm_scale.to_bits(),
                p.layer as u32,
                p.layers as u32,
                top_k,
                0,
            ],
        );
        let g = g.unwrap_or(&self.dummy);
        let b = bind_at(
            gpu,
            &self.pipeline,
            &[(0, &params), (1, a), (2, g), (3, &out.scores), (4, &out.active), (5, masks), (10, step)],
        );
        Ok(Cmd::new(&self.pipeline, b, |_| [1, 1, 1]))
    }
}
