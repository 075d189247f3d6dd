//! The GPU backend through `wgpu` (feature `gpu`): Vulkan, Metal or DX12 natively, WebGPU in the
//! browser. Same layering as the CPU side: [`context`] owns the device, [`weights`] lays tensors out
//! in storage buffers (f16/bf16 two per `u32`, q8 four per `u32` plus scales, split by rows where a
//! tensor exceeds the adapter's binding limit), and [`ops`] has one file per kernel, each running
//! the WGSL file of the same name in `shaders/`, the twin of a scalar kernel in `crate::kernels`
//! and tested against it (tests/gpu_kernels.rs).
//!
//! Status: the device, the weight layout and the kernels of the FFN block — matvec for every dtype
//! (with on-GPU q8 input quantization), rmsnorm, silu_scaled, softmax, the router's decision with
//! the active experts compacted on the GPU (route), and the sparse up/down projections over that
//! union on a fixed grid with early exit (chunk_up, chunk_down; k tokens, the verifier's shape).
//! Attention's kernels too: embed (ids read on the GPU), rope (host-computed f32 cos/sin table),
//! the residual add, MLA's absorbed query (mla_absorb), scores and mixes over the cache for MLA
//! and GQA (attn_scores, attn_mix), softmax over rows, and the per-head value projection
//! (mla_out). Next: the GPU `Backend` that chains them with the KV cache on the device, sampling
//! on the device, and one submission per token.

pub mod backend;
pub mod context;
pub mod ops;
pub mod weights;

pub use backend::{GpuBackend, GpuCache};
pub use context::Gpu;
pub use weights::GpuMat;
