//! The GPU device: adapter, limits, queue, and the few host-side helpers every op shares (shader
//! modules, pipelines, storage buffers, blocking readback for tests and the CLI).

use std::borrow::Cow;

use wgpu::util::DeviceExt;

use crate::{Error, Result};

pub struct Gpu {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub info: wgpu::AdapterInfo,
    /// What the device was created with: the adapter's own limits (not the spec defaults), so a
    /// tensor may use the largest binding the hardware allows.
    pub limits: wgpu::Limits,
    /// Timestamp queries inside passes are on (BLOCKFFN_GPU_PROFILE=1 and the adapter has them):
    /// the backend then times every layer of a span on the GPU.
    pub timestamps: bool,
}

impl Gpu {
    /// The first high-performance adapter, with its maximum limits. `Unsupported` when there is none.
    pub async fn new() -> Result<Gpu> {
        let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
        let adapter = instance
            .request_adapter(&wgpu::RequestAdapterOptions {
                power_preference: wgpu::PowerPreference::HighPerformance,
                force_fallback_adapter: false,
                compatible_surface: None,
                ..Default::default()
            })
            .await
            .map_err(|e| Error::Unsupported(format!("no GPU adapter ({e}); use the CPU backend")))?;
        let info = adapter.get_info();
        let limits = adapter.limits();
        let ts = wgpu::Features::TIMESTAMP_QUERY | wgpu::Features::TIMESTAMP_QUERY_INSIDE_PASSES;
        #[cfg(not(target_arch = "wasm32"))]
        let want_ts = std::env::var("BLOCKFFN_GPU_PROFILE").is_ok_and(|v| v == "1");
        #[cfg(target_arch = "wasm32")]
        let want_ts = false;
        let timestamps = want_ts && adapter.features().contains(ts);
        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some("blockffn"),
                required_features: if timestamps { ts } else { wgpu::Features::empty() },
                required_limits: limits.clone(),
                ..Default::default()
            })
            .await
            .map_err(|e| Error::Unsupported(format!("the GPU adapter {} refused a device: {e}", info.name)))?;
        Ok(Gpu { device, queue, info, limits, timestamps })
    }

    /// [`Gpu::new`], blocking (native only).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn new_blocking() -> Result<Gpu> {
        pollster::block_on(Gpu::new())
    }

    /// The largest buffer one binding may cover on this device.
    pub fn max_binding(&self) -> u64 {
        (self.limits.max_storage_buffer_binding_size as u64).min(self.limits.max_buffer_size)
    }

    /// A compute pipeline for `entry` of the WGSL `source` (layout derived from the shader).
    pub fn pipeline(&self, label: &str, source: &str, entry: &str) -> wgpu::ComputePipeline {
        let module = self.device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some(label),
            source: wgpu::ShaderSource::Wgsl(Cow::Borrowed(source)),
        });
        self.device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(label),
            layout: None,
            module: &module,
            entry_point: Some(entry),
            compilation_options: Default::default(),
            cache: None,
        })
    }

    /// A storage buffer initialised with `bytes` (padded to a multiple of 4), readable as a copy source.
    pub fn storage(&self, label: &str, bytes: &[u8]) -> wgpu::Buffer {
        let padded;
        let contents = if bytes.len().is_multiple_of(4) && !bytes.is_empty() {
            bytes
        } else {
            let mut v = bytes.to_vec();
            v.resize(bytes.len().div_ceil(4).max(1) * 4, 0);
            padded = v;
            &padded
        };
        self.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some(label),
            contents,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
        })
    }

    /// An uninitialised (zeroed) f32 storage buffer of `len` values.
    pub fn storage_f32(&self, label: &str, len: usize) -> wgpu::Buffer {
        self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: (len.max(1) * 4) as u64,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        })
    }

    /// A small uniform buffer of `u32` parameters.
    pub fn uniform(&self, label: &str, params: &[u32]) -> wgpu::Buffer {
        self.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some(label),
            contents: bytemuck::cast_slice(params),
            usage: wgpu::BufferUsages::UNIFORM,
        })
    }

    /// The first `len` f32 values of `buffer`, copied back (blocking; native only). For tests and
    /// the CLI's logits output: the decode loop reads back only token ids.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn read_f32(&self, buffer: &wgpu::Buffer, len: usize) -> Result<Vec<f32>> {
        let size = (len.max(1) * 4) as u64;
        let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("readback"),
            size,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut enc = self.device.create_command_encoder(&Default::default());
        enc.copy_buffer_to_buffer(buffer, 0, &staging, 0, size);
        self.queue.submit([enc.finish()]);
        let slice = staging.slice(..);
        let (tx, rx) = std::sync::mpsc::channel();
        slice.map_async(wgpu::MapMode::Read, move |r| {
            let _ = tx.send(r);
        });
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| Error::DeviceLost(format!("waiting for the GPU: {e}")))?;
        rx.recv()
            .map_err(|_| Error::DeviceLost("the readback was dropped".into()))?
            .map_err(|e| Error::DeviceLost(format!("mapping the readback buffer: {e}")))?;
        let view =
            slice.get_mapped_range().map_err(|e| Error::DeviceLost(format!("reading the readback buffer: {e}")))?;
        let out = bytemuck::cast_slice::<u8, f32>(&view)[..len].to_vec();
        drop(view);
        staging.unmap();
        Ok(out)
    }

    /// Records `f` into one compute pass and submits it.
    pub fn run(&self, f: impl FnOnce(&mut wgpu::ComputePass)) {
        let mut enc = self.device.create_command_encoder(&Default::default());
        {
            let mut pass = enc.begin_compute_pass(&Default::default());
            f(&mut pass);
        }
        self.queue.submit([enc.finish()]);
    }
}

/// A bind group for `pipeline`'s group 0 with `buffers` bound at the given binding numbers (for
/// entry points that use only some of their module's bindings).
pub fn bind_at(gpu: &Gpu, pipeline: &wgpu::ComputePipeline, buffers: &[(u32, &wgpu::Buffer)]) -> wgpu::BindGroup {
    let entries: Vec<wgpu::BindGroupEntry> =
        buffers.iter().map(|&(i, b)| wgpu::BindGroupEntry { binding: i, resource: b.as_entire_binding() }).collect();
    gpu.device.create_bind_group(&wgpu::BindGroupDescriptor {
        label: None,
        layout: &pipeline.get_bind_group_layout(0),
        entries: &entries,
    })
}

/// A bind group for `pipeline`'s group 0 with `buffers` bound at 0, 1, 2, … in order.
pub fn bind(gpu: &Gpu, pipeline: &wgpu::ComputePipeline, buffers: &[&wgpu::Buffer]) -> wgpu::BindGroup {
    let entries: Vec<wgpu::BindGroupEntry> = buffers
        .iter()
        .enumerate()
        .map(|(i, b)| wgpu::BindGroupEntry { binding: i as u32, resource: b.as_entire_binding() })
        .collect();
    gpu.device.create_bind_group(&wgpu::BindGroupDescriptor {
        label: None,
        layout: &pipeline.get_bind_group_layout(0),
        entries: &entries,
    })
}
