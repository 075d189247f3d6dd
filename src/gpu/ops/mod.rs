//! One file per GPU kernel: the pipeline(s) of the WGSL file of the same name in `../shaders/`,
//! created once, and an `encode` that records the kernel into a command encoder. Each is the twin
//! of a scalar kernel in `crate::kernels` and tested against it (tests/gpu_kernels.rs).

pub mod add_scaled;
pub mod attn_mix;
pub mod attn_scores;
pub mod chunk_down;
pub mod chunk_up;
pub mod embed;
pub mod matvec;
pub mod mla_absorb;
pub mod mla_out;
pub mod quantize_q8;
pub mod rmsnorm;
pub mod rope;
pub mod route;
pub mod silu_scaled;
pub mod softmax;

pub use add_scaled::AddScaled;
pub use attn_mix::AttnMix;
pub use attn_scores::AttnScores;
pub use chunk_down::ChunkDown;
pub use chunk_up::ChunkUp;
pub use embed::Embed;
pub use matvec::Matvec;
pub use mla_absorb::MlaAbsorb;
pub use mla_out::MlaOut;
pub use quantize_q8::QuantizeQ8;
pub use rmsnorm::RmsNorm;
pub use rope::Rope;
pub use route::Route;
pub use silu_scaled::SiluScaled;
pub use softmax::Softmax;

use crate::gpu::weights::GpuDType;
use crate::gpu::Gpu;

/// Single-weight access shared by the kernels that gather or form transposed products.
pub(crate) const ELEMS_WGSL: &str = include_str!("../shaders/elems.wgsl");
/// The row dot products shared by the kernels that read weight rows (see the file; after ELEMS).
pub(crate) const ROWS_WGSL: &str = include_str!("../shaders/rows.wgsl");

/// One pipeline per weight dtype from a shader written once: `parts` concatenated, `_DT(` made the
/// dtype's function suffix and `WORD_ELEMS` the weights per 32-bit word.
pub(crate) fn dtype_pipeline(
    gpu: &Gpu,
    label: &str,
    parts: &[&str],
    entry: &str,
    dtype: GpuDType,
) -> wgpu::ComputePipeline {
    let (suffix, per_word) = match dtype {
        GpuDType::F32 => ("_f32(", "1u"),
        GpuDType::F16 => ("_f16(", "2u"),
        GpuDType::BF16 => ("_bf16(", "2u"),
        GpuDType::Q8 => ("_q8(", "4u"),
    };
    let source = parts.concat().replace("_DT(", suffix).replace("WORD_ELEMS", per_word);
    gpu.pipeline(&format!("{label} {dtype:?}"), &source, entry)
}

/// One pipeline per dtype, indexed by [`dtype_index`].
pub(crate) fn per_dtype(gpu: &Gpu, label: &str, parts: &[&str], entry: &str) -> [wgpu::ComputePipeline; 4] {
    [GpuDType::F32, GpuDType::F16, GpuDType::BF16, GpuDType::Q8].map(|d| dtype_pipeline(gpu, label, parts, entry, d))
}

pub(crate) fn dtype_index(d: GpuDType) -> usize {
    match d {
        GpuDType::F32 => 0,
        GpuDType::F16 => 1,
        GpuDType::BF16 => 2,
        GpuDType::Q8 => 3,
    }
}

/// Workgroups of `per` items covering `n`.
pub(crate) fn groups(n: usize, per: usize) -> u32 {
    n.div_ceil(per).max(1) as u32
}

/// One pass of one dispatch.
pub(crate) fn dispatch(
    enc: &mut wgpu::CommandEncoder,
    pipeline: &wgpu::ComputePipeline,
    bind: &wgpu::BindGroup,
    groups: u32,
) {
    dispatch_2d(enc, pipeline, bind, groups, 1);
}

/// One pass of one dispatch over an `x × y` grid of workgroups.
pub(crate) fn dispatch_2d(
    enc: &mut wgpu::CommandEncoder,
    pipeline: &wgpu::ComputePipeline,
    bind: &wgpu::BindGroup,
    x: u32,
    y: u32,
) {
    let mut pass = enc.begin_compute_pass(&Default::default());
    pass.set_pipeline(pipeline);
    pass.set_bind_group(0, bind, &[]);
    pass.dispatch_workgroups(x, y, 1);
}
