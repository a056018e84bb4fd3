//! The device: device creation with the adapter's own limits, allocation, batched dispatch
//! and synchronisation. Finding adapters is in `adapters`, the kernel cache and profile in
//! `kernels`, buffers' texture copies in `textures`, timing (timestamp queries) in `timing`,
//! copies, uploads and readbacks in `transfer`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use anyhow::{anyhow, bail, Context, Result};

use super::alias::Aliaser;
use super::kernel::{Access, Kernel, MAX_PARAM_WORDS};
use super::pool::{GpuBuffer, Pool, PoolStats};
use super::tensor::Tensor;
use super::texture::{GpuTexture, TexturePool};

mod adapters;
mod kernels;
mod textures;
mod timing;
mod transfer;

use adapters::{backends, instance, nth_best, NO_ADAPTER};
pub use adapters::{cpu_driver_threads, describe_adapters, AdapterSummary};

/// How to pick the adapter.
#[derive(Clone, Debug, Default)]
pub struct GpuOptions {
    /// Case-insensitive substring of the adapter name; falls back to `WGPU_ADAPTER_NAME`.
    pub adapter: Option<String>,
    /// Copy tensors into textures even where a texture could share the buffer's memory
    /// (`gpu::alias`; also `PROXYLESS_ALIAS=off`): for tests of the copy path.
    pub copy_textures: bool,
    /// Without `adapter`: take the n-th (modulo their number) of the adapters of the best kind,
    /// so that the ranks of a data-parallel run on one machine each take their own GPU.
    pub nth_best: usize,
}

/// What a kernel binding is given.
#[derive(Clone, Copy)]
pub enum Binding<'a> {
    Buffer(&'a GpuBuffer),
    Texture(&'a GpuTexture),
}

/// Buffers of at most this many floats keep their texture copy until written (weights,
/// per-channel vectors: the copy breaks the compute pass, whatever its size). Activations do
/// not: keeping theirs from the forward to the backward doubled the step's peak memory
/// (417 -> 814 MB) for about 1% of its time (benches/NOTES.md).
const KEEP_TEXTURES_UP_TO: usize = 1 << 16;

/// A binding with its buffer made resident (`Gpu::buffer`).
enum Resolved<'a> {
    Buffer(wgpu::Buffer, u64),
    Texture(&'a wgpu::TextureView),
}

/// Dispatches a uniform ring holds before the batch must be submitted.
const RING_SLOTS: u64 = 2048;

struct Batch {
    encoder: Option<wgpu::CommandEncoder>,
    /// The open compute pass: consecutive dispatches share one (a pass per dispatch costs
    /// launch time); any other encoder command closes it first.
    pass: Option<wgpu::ComputePass<'static>>,
    params: Vec<u8>,
    slots_used: u64,
    /// While `time_on_device` runs: the query set whose entry 0 gets the first pass's start
    /// and entry 1 every pass's end (the last one stays), and whether a pass has begun.
    timestamps: Option<(wgpu::QuerySet, bool)>,
}

impl Batch {
    /// The encoder, with no pass open on it.
    fn encoder(&mut self, device: &wgpu::Device) -> &mut wgpu::CommandEncoder {
        self.pass = None;
        self.encoder.get_or_insert_with(|| {
            device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None })
        })
    }

    /// The open compute pass (begun if needed).
    fn pass(&mut self, device: &wgpu::Device) -> &mut wgpu::ComputePass<'static> {
        if self.pass.is_none() {
            let stamps = self.timestamps.take();
            let timestamp_writes =
                stamps
                    .as_ref()
                    .map(|(set, began)| wgpu::ComputePassTimestampWrites {
                        query_set: set,
                        beginning_of_pass_write_index: (!began).then_some(0),
                        end_of_pass_write_index: Some(1),
                    });
            let pass = self
                .encoder(device)
                .begin_compute_pass(&wgpu::ComputePassDescriptor {
                    label: None,
                    timestamp_writes,
                })
                .forget_lifetime();
            self.timestamps = stamps.map(|(set, _)| (set, true));
            self.pass = Some(pass);
        }
        self.pass.as_mut().expect("pass just opened")
    }
}

/// The compute device and everything cached on it. Cheap to share (`&Gpu`) between threads:
/// dispatches from any thread go into one ordered batch.
pub struct Gpu {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub info: wgpu::AdapterInfo,
    pub limits: wgpu::Limits,
    pub features: wgpu::Features,
    pool: Arc<Pool>,
    textures: Arc<TexturePool>,
    /// Whether rgba32float textures can be bound as read-only storage textures
    /// (`Access::StorageTexture`).
    storage_texture_reads: bool,
    /// Buffers of at most this many floats keep their texture copy until written
    /// (`to_texture`): KEEP_TEXTURES_UP_TO, or PROXYLESS_TEXTURE_REUSE=off|N.
    reuse_textures: usize,
    /// PROXYLESS_SUBGROUPS=off, read once (`subgroup_size` is asked on every product).
    subgroups_off: bool,
    /// Whether kernels take a CPU adapter's decisions (`Tuning::cpu_like`).
    cpu_like: bool,
    kernels: Mutex<HashMap<String, Arc<Kernel>>>,
    batch: Mutex<Batch>,
    /// Per-kernel wall time while `profile_kernels` is on (each dispatch and texture copy
    /// then runs alone, synchronised): name -> (seconds, calls).
    kernel_profile: Mutex<Option<HashMap<String, (f64, usize)>>>,
    /// Whether `kernel_profile` is collecting: one atomic load per dispatch when it is not.
    profiling: std::sync::atomic::AtomicBool,
    ring: wgpu::Buffer,
    slot_bytes: u64,
    device_error: Arc<Mutex<Option<String>>>,
    /// Syncs left before an injected device loss (`inject_device_loss_after`); 0: none.
    injected_loss: std::sync::atomic::AtomicUsize,
    /// Number of live poison scopes (verification runs may overlap on one device).
    poison: std::sync::atomic::AtomicUsize,
    poison_source: Mutex<Option<wgpu::Buffer>>,
    /// The readback staging buffer, kept between reads (`read`).
    staging: Mutex<Option<wgpu::Buffer>>,
}

/// Keeps poison mode on (see `Gpu::poison_scope`).
pub struct PoisonScope<'a> {
    gpu: &'a Gpu,
}

impl Drop for PoisonScope<'_> {
    fn drop(&mut self) {
        self.gpu
            .poison
            .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Bytes of the NaN-filled buffer that poisoned allocations copy from.
const POISON_CHUNK: u64 = 4 << 20;

thread_local! {
    static NO_SUBGROUPS: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f` with `Gpu::subgroup_size` saying None on this thread, so that verification can
/// check the kernels a device without subgroups gets.
pub fn without_subgroups<T>(f: impl FnOnce() -> T) -> T {
    let before = NO_SUBGROUPS.with(|n| n.replace(true));
    let out = f();
    NO_SUBGROUPS.with(|n| n.set(before));
    out
}

impl Gpu {
    /// Opens the best adapter (discrete > integrated > virtual > CPU), or the first whose name
    /// contains `opts.adapter` / `WGPU_ADAPTER_NAME`.
    pub fn new(opts: &GpuOptions) -> Result<Gpu> {
        // A malformed knob stops here, before any work (`gpu::tuning`).
        let tuning = super::tuning::load_tuning(None)?;
        let inst = instance();
        let adapters = pollster::block_on(inst.enumerate_adapters(backends()));
        if adapters.is_empty() {
            bail!("{NO_ADAPTER}");
        }
        let wanted = opts
            .adapter
            .clone()
            .or_else(|| std::env::var("WGPU_ADAPTER_NAME").ok())
            .map(|s| s.to_lowercase());
        let adapter = match &wanted {
            Some(w) => adapters
                .into_iter()
                .find(|a| a.get_info().name.to_lowercase().contains(w))
                .ok_or_else(|| {
                    let names: Vec<String> =
                        describe_adapters().into_iter().map(|s| s.name).collect();
                    anyhow!(
                        "no adapter name contains {w:?}; available: {}",
                        names.join(", ")
                    )
                })?,
            None => {
                let kinds: Vec<_> = adapters
                    .iter()
                    .map(|a| {
                        let i = a.get_info();
                        (i.device_type, i.backend)
                    })
                    .collect();
                let k = nth_best(&kinds, opts.nth_best).ok_or_else(|| anyhow!("{NO_ADAPTER}"))?;
                adapters
                    .into_iter()
                    .nth(k)
                    .ok_or_else(|| anyhow!("{NO_ADAPTER}"))?
            }
        };
        let info = adapter.get_info();
        let limits = adapter.limits();
        let wanted_features = wgpu::Features::TIMESTAMP_QUERY | wgpu::Features::SUBGROUP;
        let features = adapter.features() & wanted_features;
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("proxyless"),
            required_features: features,
            required_limits: limits.clone(),
            ..Default::default()
        }))
        .with_context(|| format!("could not open a device on adapter {}", info.name))?;

        // Validation errors are recorded and returned by the next sync instead of aborting.
        let device_error = Arc::new(Mutex::new(None::<String>));
        let slot = Arc::clone(&device_error);
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            let mut s = slot.lock().unwrap_or_else(|p| p.into_inner());
            if s.is_none() {
                *s = Some(e.to_string());
            }
        }));

        let slot_bytes = (limits.min_uniform_buffer_offset_alignment as u64).max(256);
        let ring = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("param ring"),
            size: slot_bytes * RING_SLOTS,
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let rgba32 = adapter.get_texture_format_features(wgpu::TextureFormat::Rgba32Float);
        let storage_texture_reads = rgba32
            .allowed_usages
            .contains(wgpu::TextureUsages::STORAGE_BINDING)
            && rgba32
                .flags
                .contains(wgpu::TextureFormatFeatureFlags::STORAGE_READ_ONLY)
            && tuning.storage_textures_allowed();
        let cpu_like = tuning.cpu_like(info.device_type);
        let aliaser = (!opts.copy_textures && tuning.alias_allowed()).then(|| {
            Aliaser::new(
                &device,
                &info,
                storage_texture_reads,
                limits.max_texture_dimension_2d,
            )
        });
        let pool = Pool::new(device.clone(), aliaser.flatten());
        let textures = TexturePool::new(device.clone(), Arc::clone(&pool), storage_texture_reads);
        Ok(Gpu {
            device,
            queue,
            info,
            limits,
            features,
            pool,
            textures,
            storage_texture_reads,
            reuse_textures: tuning.texture_reuse.unwrap_or(KEEP_TEXTURES_UP_TO),
            subgroups_off: tuning.subgroups_off,
            cpu_like,
            kernels: Mutex::new(HashMap::new()),
            kernel_profile: Mutex::new(None),
            profiling: std::sync::atomic::AtomicBool::new(false),
            batch: Mutex::new(Batch {
                encoder: None,
                pass: None,
                params: Vec::new(),
                slots_used: 0,
                timestamps: None,
            }),
            ring,
            slot_bytes,
            device_error,
            injected_loss: std::sync::atomic::AtomicUsize::new(0),
            poison: std::sync::atomic::AtomicUsize::new(0),
            poison_source: Mutex::new(None),
            staging: Mutex::new(None),
        })
    }

    /// "name (backend, driver)" for reports.
    pub fn adapter_name(&self) -> String {
        format!(
            "{} ({:?}, {} {})",
            self.info.name, self.info.backend, self.info.driver, self.info.driver_info
        )
    }

    pub fn max_binding_bytes(&self) -> u64 {
        self.limits.max_storage_buffer_binding_size
    }

    /// Whether big buffers share their memory with the textures kernels read them through
    /// (`gpu::alias`: `to_texture` then copies nothing).
    pub fn aliases_textures(&self) -> bool {
        self.pool.aliases()
    }

    /// Whether kernels may read `to_texture` copies as read-only storage textures
    /// (`Access::StorageTexture`).
    pub fn storage_texture_reads(&self) -> bool {
        self.storage_texture_reads
    }

    /// Whether kernel choices follow a CPU adapter's measurements: a CPU adapter under the
    /// `native` profile (`gpu::tuning`); under `gpu`, every adapter decides as a GPU.
    pub fn cpu_like(&self) -> bool {
        self.cpu_like
    }

    /// The tuning profile kernels run under.
    pub fn profile(&self) -> super::Profile {
        super::tuning().profile
    }

    /// Workgroups a dispatch should have to keep the whole device busy. A CPU driver such as
    /// lavapipe runs whole workgroups on a few threads, so a few per core balance them; a GPU
    /// needs many. Kernels that split a reduction for parallelism (split-K slices, partial
    /// sums) aim for this, and no more: every extra slice costs a stored and re-read partial.
    /// `PROXYLESS_PARALLEL_GROUPS=N` overrides it.
    pub fn parallel_groups(&self) -> usize {
        if let Some(n) = super::tuning().parallel_groups {
            return n;
        }
        if self.cpu_like {
            4 * std::thread::available_parallelism().map_or(2, |n| n.get())
        } else {
            64
        }
    }

    /// The subgroup size where the device has subgroup operations and a single, fixed size
    /// (lavapipe: 8, its SIMD width), else None; `PROXYLESS_SUBGROUPS=off` (or
    /// `without_subgroups` on this thread) says None. Kernels that share loads between the
    /// lanes of a subgroup are generated for this size.
    pub fn subgroup_size(&self) -> Option<u32> {
        if self.subgroups_off || NO_SUBGROUPS.with(|n| n.get()) {
            return None;
        }
        let size = self.info.subgroup_min_size;
        (self.features.contains(wgpu::Features::SUBGROUP)
            && size == self.info.subgroup_max_size
            && (4..=64).contains(&size)
            && size.is_power_of_two())
        .then_some(size)
    }

    pub fn max_groups_per_dim(&self) -> u32 {
        self.limits.max_compute_workgroups_per_dimension
    }

    fn lock_batch(&self) -> MutexGuard<'_, Batch> {
        self.batch.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A pooled buffer of `bytes` (contents undefined; NaN in poison mode).
    pub fn alloc(&self, bytes: u64) -> GpuBuffer {
        let buf = self.pool.acquire(bytes.max(4));
        if self.poison.load(std::sync::atomic::Ordering::SeqCst) > 0 {
            self.fill_nan(&buf);
        }
        buf
    }

    /// Poison mode: every allocation is filled with NaN (in order with the batch), so a kernel
    /// that leaves an output element unwritten is caught by the comparison. For verification.
    /// Poison mode lasts while the returned guard lives; scopes nest and may overlap between
    /// threads.
    pub fn poison_scope(&self) -> PoisonScope<'_> {
        self.poison
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        PoisonScope { gpu: self }
    }

    fn fill_nan(&self, buf: &GpuBuffer) {
        let mut src = self.poison_source.lock().unwrap_or_else(|e| e.into_inner());
        let src = src.get_or_insert_with(|| {
            let b = self.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("NaN source"),
                size: POISON_CHUNK,
                usage: wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            });
            // Runs before the next submission, which is the first that can read it.
            let nan = vec![f32::NAN; (POISON_CHUNK / 4) as usize];
            self.queue.write_buffer(&b, 0, bytemuck::cast_slice(&nan));
            b
        });
        let total = buf.bytes().div_ceil(4) * 4;
        let dst = self.buffer(buf);
        let mut b = self.lock_batch();
        let enc = b.encoder(&self.device);
        let mut off = 0;
        while off < total {
            let n = (total - off).min(POISON_CHUNK);
            enc.copy_buffer_to_buffer(src, 0, &dst, off, Some(n));
            off += n;
        }
    }

    /// A tensor of `shape` with undefined contents.
    pub fn empty(&self, shape: &[usize]) -> Tensor {
        let n: usize = shape.iter().product();
        Tensor {
            buf: self.alloc(n as u64 * 4),
            shape: shape.to_vec(),
        }
    }

    /// A tensor of zeros; the clear is ordered with the batch, so this is cheap on the hot path.
    pub fn zeros(&self, shape: &[usize]) -> Tensor {
        let t = self.empty(shape);
        self.clear(&t.buf);
        t
    }

    /// Sets a buffer to zero, in order with the dispatches already batched.
    pub fn clear(&self, buf: &GpuBuffer) {
        let raw = self.buffer(buf);
        buf.forget_texture();
        let mut b = self.lock_batch();
        let enc = b.encoder(&self.device);
        enc.clear_buffer(&raw, 0, Some(buf.bytes().div_ceil(4) * 4));
    }

    /// Records one dispatch. `params` are the uniform words (at most `MAX_PARAM_WORDS`),
    /// `buffers` bind in order to bindings 1.. at their requested size.
    pub fn dispatch(
        &self,
        kernel: &Kernel,
        params: &[u32],
        buffers: &[&GpuBuffer],
        groups: [u32; 3],
    ) -> Result<()> {
        let bindings: Vec<Binding> = buffers.iter().map(|b| Binding::Buffer(b)).collect();
        self.dispatch_with(kernel, params, &bindings, groups)
    }

    /// `dispatch` with textures among the bindings.
    pub fn dispatch_with(
        &self,
        kernel: &Kernel,
        params: &[u32],
        buffers: &[Binding],
        groups: [u32; 3],
    ) -> Result<()> {
        if params.len() > MAX_PARAM_WORDS {
            bail!(
                "{}: {} parameter words, at most {MAX_PARAM_WORDS}",
                kernel.name,
                params.len()
            );
        }
        if buffers.len() != kernel.bindings.len() {
            bail!(
                "{}: {} buffers given, the kernel binds {}",
                kernel.name,
                buffers.len(),
                kernel.bindings.len()
            );
        }
        let max_bind = self.max_binding_bytes();
        for (i, b) in buffers.iter().enumerate() {
            let (Binding::Buffer(b), access) = (b, kernel.bindings[i]) else {
                if !matches!(kernel.bindings[i], Access::Texture | Access::StorageTexture) {
                    bail!(
                        "{}: binding {} takes a buffer, got a texture",
                        kernel.name,
                        i + 1
                    );
                }
                continue;
            };
            if matches!(access, Access::Texture | Access::StorageTexture) {
                bail!(
                    "{}: binding {} takes a texture, got a buffer",
                    kernel.name,
                    i + 1
                );
            }
            if b.bytes() > max_bind {
                bail!(
                    "{}: binding {} is {} MiB, over this adapter's storage-binding limit of {} MiB; \
                     use a smaller batch",
                    kernel.name,
                    i + 1,
                    b.bytes() >> 20,
                    max_bind >> 20
                );
            }
        }
        // A texture that aliases a buffer the kernel writes would see the writes of other
        // invocations mid-dispatch (a copy would not): refuse rather than race.
        for (i, b) in buffers.iter().enumerate() {
            let Binding::Texture(t) = b else { continue };
            let Some(loan) = t.aliased_loan() else {
                continue;
            };
            let written = buffers.iter().zip(kernel.bindings).any(|(w, access)| {
                matches!(w, Binding::Buffer(w) if *access == Access::ReadWrite
                    && w.loan_id() == Some(loan))
            });
            if written {
                bail!(
                    "{}: binding {} is a texture view of a buffer the kernel also writes; \
                     read a copy instead (PROXYLESS_ALIAS=off)",
                    kernel.name,
                    i + 1
                );
            }
        }
        let max_groups = self.max_groups_per_dim();
        if groups.iter().any(|&g| g > max_groups) {
            bail!(
                "{}: {groups:?} workgroups exceed the limit of {max_groups} per dimension",
                kernel.name
            );
        }
        if groups.contains(&0) {
            return Ok(());
        }
        let timer = self.profile_start()?;
        // Released buffers come back before the batch is locked; a written one drops its
        // texture copy.
        let resolved: Vec<Resolved> = buffers
            .iter()
            .zip(kernel.bindings)
            .map(|(bind, access)| match bind {
                Binding::Buffer(buf) => {
                    let raw = self.buffer(buf);
                    if *access == Access::ReadWrite {
                        buf.forget_texture();
                    }
                    Resolved::Buffer(raw, buf.bytes().div_ceil(4) * 4)
                }
                Binding::Texture(t) => Resolved::Texture(t.view()),
            })
            .collect();
        let mut b = self.lock_batch();
        if b.slots_used == RING_SLOTS {
            Self::submit_batch(&self.queue, &self.ring, &mut b);
        }
        let offset = b.slots_used * self.slot_bytes;
        b.params.resize((offset + self.slot_bytes) as usize, 0);
        b.params[offset as usize..offset as usize + params.len() * 4]
            .copy_from_slice(bytemuck::cast_slice(params));
        b.slots_used += 1;

        let mut entries = vec![wgpu::BindGroupEntry {
            binding: 0,
            resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                buffer: &self.ring,
                offset: 0,
                size: wgpu::BufferSize::new((MAX_PARAM_WORDS * 4) as u64),
            }),
        }];
        for (i, r) in resolved.iter().enumerate() {
            let resource = match r {
                Resolved::Buffer(raw, size) => wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                    buffer: raw,
                    offset: 0,
                    size: wgpu::BufferSize::new(*size),
                }),
                Resolved::Texture(view) => wgpu::BindingResource::TextureView(view),
            };
            entries.push(wgpu::BindGroupEntry {
                binding: i as u32 + 1,
                resource,
            });
        }
        let bind_group = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: None,
            layout: &kernel.layout,
            entries: &entries,
        });
        let pass = b.pass(&self.device);
        pass.set_pipeline(&kernel.pipeline);
        pass.set_bind_group(0, &bind_group, &[offset as u32]);
        pass.dispatch_workgroups(groups[0], groups[1], groups[2]);
        drop(b);
        self.profile_end(timer, &kernel.name)
    }

    fn submit_batch(queue: &wgpu::Queue, ring: &wgpu::Buffer, b: &mut Batch) {
        b.pass = None;
        if let Some(enc) = b.encoder.take() {
            if b.slots_used > 0 {
                queue.write_buffer(ring, 0, &b.params);
            }
            queue.submit([enc.finish()]);
        }
        b.params.clear();
        b.slots_used = 0;
    }

    /// Submits everything batched so far (does not wait).
    pub fn flush(&self) {
        let mut b = self.lock_batch();
        Self::submit_batch(&self.queue, &self.ring, &mut b);
    }

    /// Submits and waits until the device is idle; returns any device error recorded since
    /// the last sync.
    pub fn sync(&self) -> Result<()> {
        self.flush();
        use std::sync::atomic::Ordering::Relaxed;
        let left = self.injected_loss.load(Relaxed);
        if left > 0 {
            self.injected_loss.store(left - 1, Relaxed);
            if left == 1 {
                bail!("device error: device lost (injected by inject_device_loss_after)");
            }
        }
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| anyhow!("device poll failed: {e}"))?;
        if let Some(e) = self
            .device_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            bail!("device error: {e}");
        }
        Ok(())
    }

    pub fn pool_stats(&self) -> PoolStats {
        self.pool.stats()
    }

    pub fn reset_high_water(&self) {
        self.pool.reset_high_water()
    }

    /// Returns the pool's free buffers to the device.
    pub fn trim_pool(&self) {
        self.pool.trim()
    }

    /// Makes the `n`-th sync from now fail as a lost device would (for tests of what a run
    /// does when the device goes away or runs out of memory mid-epoch: both reach the caller
    /// as an error from the next sync).
    pub fn inject_device_loss_after(&self, n: usize) {
        self.injected_loss
            .store(n, std::sync::atomic::Ordering::Relaxed);
    }
}
