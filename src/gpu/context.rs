//! The GPU device: adapter, limits, queue, and the few host-side helpers every op shares (shader
//! modules, pipelines, storage buffers, blocking readback for tests and the CLI).

use std::borrow::Cow;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

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
    /// Why the device can no longer be used (lost, or a failed operation), once that happened.
    lost: Arc<Mutex<Option<String>>>,
}

#[derive(Default)]
struct MapState {
    result: Option<std::result::Result<(), wgpu::BufferAsyncError>>,
    waker: Option<Waker>,
}

/// Resolves when a `map_async` callback has run.
#[derive(Default)]
struct Mapped(Arc<Mutex<MapState>>);

impl Future for Mapped {
    type Output = std::result::Result<(), wgpu::BufferAsyncError>;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut st = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match st.result.take() {
            Some(r) => Poll::Ready(r),
            None => {
                st.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
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
        // wgpu's default for an uncaptured error is a panic, which would trap the wasm instance:
        // keep the first one instead, and fail the next readback with it.
        let lost = Arc::new(Mutex::new(None::<String>));
        let l = lost.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            l.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert_with(|| format!("the GPU reported an error: {e}"));
        }));
        let l = lost.clone();
        device.set_device_lost_callback(move |reason, msg| {
            l.lock()
                .unwrap_or_else(|p| p.into_inner())
                .get_or_insert_with(|| format!("the GPU device was lost ({reason:?}: {msg})"));
        });
        Ok(Gpu { device, queue, info, limits, timestamps, lost })
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
        self.buffer_with(label, contents, wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST)
    }

    /// A buffer holding `contents` (a multiple of 4 bytes), written through the queue: unlike
    /// `create_buffer_init` this cannot panic when the device is gone (the next readback reports it).
    fn buffer_with(&self, label: &str, contents: &[u8], usage: wgpu::BufferUsages) -> wgpu::Buffer {
        let b = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: contents.len().max(4) as u64,
            usage: usage | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        self.queue.write_buffer(&b, 0, contents);
        b
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
        self.buffer_with(label, bytemuck::cast_slice(params), wgpu::BufferUsages::UNIFORM)
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
        let words = crate::ready::ready(self.map_read(&staging, size))?;
        Ok(bytemuck::cast_slice::<u32, f32>(&words)[..len].to_vec())
    }

    /// The first `size` bytes (a multiple of 4) of a `MAP_READ` buffer once the work submitted
    /// before has finished, as words; the buffer is unmapped again. Natively this blocks on the
    /// device, so the future is ready at once; in a browser it resolves on the event loop.
    pub async fn map_read(&self, buffer: &wgpu::Buffer, size: u64) -> Result<Vec<u32>> {
        self.check_lost()?;
        let slice = buffer.slice(..size);
        let mapped = Mapped::default();
        let done = mapped.0.clone();
        slice.map_async(wgpu::MapMode::Read, move |r| {
            let mut st = done.lock().unwrap_or_else(|e| e.into_inner());
            st.result = Some(r);
            if let Some(w) = st.waker.take() {
                w.wake();
            }
        });
        #[cfg(not(target_arch = "wasm32"))]
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| Error::DeviceLost(format!("waiting for the GPU: {e}")))?;
        if let Err(e) = mapped.await {
            self.check_lost()?;
            return Err(Error::DeviceLost(format!("mapping the readback buffer: {e}")));
        }
        let out = {
            let view =
                slice.get_mapped_range().map_err(|e| Error::DeviceLost(format!("reading the readback buffer: {e}")))?;
            bytemuck::cast_slice::<u8, u32>(&view).to_vec()
        };
        buffer.unmap();
        self.check_lost()?;
        Ok(out)
    }

    /// `DeviceLost` once the device is gone or an operation failed on it (the first error is
    /// kept): nothing computed after that can be trusted, and the model must be loaded again.
    pub fn check_lost(&self) -> Result<()> {
        match self.lost.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
            Some(why) => Err(Error::DeviceLost(format!("{why}; load the model again"))),
            None => Ok(()),
        }
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
