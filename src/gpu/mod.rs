//! The GPU backend through `wgpu` (feature `gpu`): Vulkan, Metal or DX12 natively, WebGPU in the
//! browser. Same layering as the CPU side: [`context`] owns the device, [`weights`] lays tensors out
//! in storage buffers (f16/bf16 two per `u32`, q8 four per `u32` plus scales, split by rows where a
//! tensor exceeds the adapter's binding limit), and [`ops`] has one file per kernel, each running
//! the WGSL file of the same name in `shaders/`, the twin of a scalar kernel in `crate::kernels`
//! and tested against it (tests/gpu_kernels.rs).
//!
//! Status: [`backend::GpuBackend`] runs the whole forward natively (CLI `--backend gpu`): the
//! KV cache on the GPU, routing and the union of active experts compacted on the GPU, one
//! submission per span, only masks and the greedy id (or requested logits) read back. Equal to the
//! CPU engine within float rounding on every fixture and dtype (tests/gpu_model.rs), and the same
//! code runs in the browser through WebGPU (the npm package's `backend: 'webgpu'`;
//! tests/browser/webgpu.test.mjs). Not yet: a streaming upload from the loader's weight sink,
//! sampling other than greedy on the device, and fast kernels: the first versions are simple and
//! far from the memory roofline (BENCHMARKS.md, "GPU path").

pub mod backend;
pub mod context;
pub mod ops;
pub mod weights;

pub use backend::{GpuBackend, GpuCache};
pub use context::Gpu;
pub use weights::GpuMat;
