//! One file per GPU kernel: the pipeline(s) of the WGSL file of the same name in `../shaders/`,
//! created once, and an `encode` that records the kernel into a command encoder. Each is the twin
//! of a scalar kernel in `crate::kernels` and tested against it (tests/gpu_kernels.rs).

pub mod matvec;
pub mod quantize_q8;
pub mod rmsnorm;
pub mod silu_scaled;
pub mod softmax;

pub use matvec::Matvec;
pub use quantize_q8::QuantizeQ8;
pub use rmsnorm::RmsNorm;
pub use silu_scaled::SiluScaled;
pub use softmax::Softmax;

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
    let mut pass = enc.begin_compute_pass(&Default::default());
    pass.set_pipeline(pipeline);
    pass.set_bind_group(0, bind, &[]);
    pass.dispatch_workgroups(groups, 1, 1);
}
