//! One file per GPU kernel: the pipeline(s) of the WGSL file of the same name in `../shaders/`,
//! created once, and a `cmd` that binds it to buffers once — a [`Cmd`], built at load time and
//! recorded every step with no host work but the dispatch. Kernels are span-wide (k tokens of a
//! prefill block or a draft, one of a decode step); what depends on the span's place in the
//! sequence comes from the [`Span`] uniform (`step.wgsl`), written once per forward. Each kernel is
//! the twin of a scalar kernel in `crate::kernels` and tested against it (tests/gpu_kernels.rs).

pub mod add_scaled;
pub mod argmax;
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
pub mod store_rows;

pub use add_scaled::AddScaled;
pub use argmax::Argmax;
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
pub use store_rows::StoreRows;

use crate::gpu::weights::GpuDType;
use crate::gpu::Gpu;

/// The span uniform, prepended to the kernels that read it (binding 10).
pub(crate) const STEP_WGSL: &str = include_str!("../shaders/step.wgsl");

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

/// Where a forward's tokens sit: positions `pos0 .. pos0 + k`, logits wanted from token
/// `head_from` on. The kernels read it from [`StepBuf`]; grids are sized from it on the host.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Span {
    pub pos0: usize,
    pub k: usize,
    pub head_from: usize,
}

impl Span {
    pub fn new(pos0: usize, k: usize) -> Span {
        Span { pos0, k, head_from: 0 }
    }
    pub fn t_len(&self) -> usize {
        self.pos0 + self.k
    }
    /// Tokens whose logits are computed.
    pub fn head_rows(&self) -> usize {
        self.k.saturating_sub(self.head_from)
    }
}

/// The uniform buffer behind `step` in the shaders.
pub struct StepBuf {
    pub buffer: wgpu::Buffer,
}

impl StepBuf {
    pub fn new(gpu: &Gpu) -> StepBuf {
        StepBuf {
            buffer: gpu.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("step"),
                size: 16,
                usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            }),
        }
    }

    /// Queues the span's values; they apply to every submission after this call.
    pub fn write(&self, gpu: &Gpu, s: &Span) {
        let words = [s.pos0 as u32, s.k as u32, s.t_len() as u32, s.head_from as u32];
        gpu.queue.write_buffer(&self.buffer, 0, bytemuck::cast_slice(&words));
    }
}

/// Which tokens a kernel's grid covers: the whole span, or the ones whose logits are computed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tokens {
    Span,
    Head,
}

impl Tokens {
    pub fn count(self, s: &Span) -> u32 {
        match self {
            Tokens::Span => s.k as u32,
            Tokens::Head => s.head_rows() as u32,
        }
    }
}

type GridFn = Box<dyn Fn(&Span) -> [u32; 3] + Send + Sync>;

/// One kernel bound to its buffers, with its workgroup grid as a function of the span.
pub struct Cmd {
    pipeline: wgpu::ComputePipeline,
    bind: wgpu::BindGroup,
    grid: GridFn,
}

impl Cmd {
    pub(crate) fn new(
        pipeline: &wgpu::ComputePipeline,
        bind: wgpu::BindGroup,
        grid: impl Fn(&Span) -> [u32; 3] + Send + Sync + 'static,
    ) -> Cmd {
        Cmd { pipeline: pipeline.clone(), bind, grid: Box::new(grid) }
    }

    /// Records the dispatch (nothing when the span gives it no work); true when it did.
    pub fn record(&self, pass: &mut wgpu::ComputePass, s: &Span) -> bool {
        let [x, y, z] = (self.grid)(s);
        if x == 0 || y == 0 || z == 0 {
            return false;
        }
        pass.set_pipeline(&self.pipeline);
        pass.set_bind_group(0, &self.bind, &[]);
        pass.dispatch_workgroups(x, y, z);
        true
    }
}

/// Writes the span and runs `cmds` in one compute pass of one submission (tests, tools).
pub fn run(gpu: &Gpu, step: &StepBuf, s: &Span, cmds: &[&Cmd]) {
    step.write(gpu, s);
    let mut enc = gpu.device.create_command_encoder(&Default::default());
    {
        let mut pass = enc.begin_compute_pass(&Default::default());
        for c in cmds {
            c.record(&mut pass, s);
        }
    }
    gpu.queue.submit([enc.finish()]);
}
