//! The GPU backend through `wgpu` (feature `gpu`): Vulkan, Metal or DX12 natively, WebGPU in the
//! browser. Same layering as the CPU side: [`context`] owns the device, [`weights`] lays tensors out
//! in storage buffers (f16/bf16 two per `u32`, q8 four per `u32` plus scales, split by rows where a
//! tensor exceeds the adapter's binding limit), and [`ops`] has one file per kernel, each running
//! the WGSL file of the same name in `shaders/`, the twin of a scalar kernel in `crate::kernels`
//! and tested against it (tests/gpu_kernels.rs).
//!
//! Status: the device, the weight layout and the first kernels (matvec for every dtype, q8 input
//! quantization, rmsnorm, silu_scaled, softmax). The decoder step (attention, router, sparse FFN,
//! sampling) over these is the next part.

pub mod context;
pub mod ops;
pub mod weights;

pub use context::Gpu;
pub use weights::GpuMat;
