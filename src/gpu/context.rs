//! The device: adapter choice, device creation with the adapter's own limits, the kernel cache,
//! batched dispatch, uploads, readback and synchronisation.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

use super::alias::Aliaser;
use super::kernel::{instantiate, Access, Kernel, KernelSpec, MAX_PARAM_WORDS};
use super::pool::{GpuBuffer, Pool, PoolStats};
use super::tensor::Tensor;
use super::texture::{GpuTexture, TexturePool, TEX_WIDTH};

/// How to pick the adapter.
#[derive(Clone, Debug, Default)]
pub struct GpuOptions {
    /// Case-insensitive substring of the adapter name; falls back to `WGPU_ADAPTER_NAME`.
    pub adapter: Option<String>,
    /// Copy tensors into textures even where a texture could share the buffer's memory
    /// (`gpu::alias`; also `PROXYLESS_ALIAS=off`): for tests of the copy path.
    pub copy_textures: bool,
}

/// One line of `proxyless devices`.
#[derive(Clone, Debug)]
pub struct AdapterSummary {
    pub name: String,
    pub backend: String,
    pub device_type: String,
    pub driver: String,
    pub max_storage_binding_mib: u64,
    pub max_buffer_mib: u64,
    pub max_workgroup_storage_kib: u32,
    pub max_invocations_per_workgroup: u32,
    pub max_workgroups_per_dim: u32,
    pub timestamps: bool,
    pub shader_f16: bool,
    pub subgroups: bool,
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

/// The copies between a buffer and the texture layout of `gpu::texture` for `floats` floats:
/// (buffer offset, first texture row, texels a row, rows), the full rows then the partial one.
fn texel_rows(floats: usize) -> impl Iterator<Item = (u64, u32, u32, u32)> {
    let texels = floats.div_ceil(4) as u64;
    let (full_rows, tail) = (texels / TEX_WIDTH as u64, texels % TEX_WIDTH as u64);
    let full = (full_rows > 0).then_some((0, 0, TEX_WIDTH, full_rows as u32));
    let last = (tail > 0).then_some((
        full_rows * TEX_WIDTH as u64 * 16,
        full_rows as u32,
        tail as u32,
        1,
    ));
    [full, last].into_iter().flatten()
}

/// The two ends and the extent of one of `texel_rows`' copies, in either direction.
fn texel_copy<'a>(
    buffer: &'a wgpu::Buffer,
    texture: &'a GpuTexture,
    (offset, y, width, height): (u64, u32, u32, u32),
) -> (
    wgpu::TexelCopyTextureInfo<'a>,
    wgpu::TexelCopyBufferInfo<'a>,
    wgpu::Extent3d,
) {
    (
        wgpu::TexelCopyTextureInfo {
            texture: texture.raw(),
            mip_level: 0,
            origin: wgpu::Origin3d { x: 0, y, z: 0 },
            aspect: wgpu::TextureAspect::All,
        },
        wgpu::TexelCopyBufferInfo {
            buffer,
            layout: wgpu::TexelCopyBufferLayout {
                offset,
                bytes_per_row: Some(TEX_WIDTH * 16),
                rows_per_image: None,
            },
        },
        wgpu::Extent3d {
            width,
            height,
            depth_or_array_layers: 1,
        },
    )
}

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
            let pass = self
                .encoder(device)
                .begin_compute_pass(&wgpu::ComputePassDescriptor::default())
                .forget_lifetime();
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
    /// Number of live poison scopes (verification runs may overlap on one device).
    poison: std::sync::atomic::AtomicUsize,
    poison_source: Mutex<Option<wgpu::Buffer>>,
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

fn instance() -> wgpu::Instance {
    static CPU_DRIVER_THREADS: std::sync::Once = std::sync::Once::new();
    CPU_DRIVER_THREADS.call_once(set_cpu_driver_threads);
    wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env())
}

/// Threads of Mesa's CPU driver (llvmpipe / lavapipe), read when its device is created:
/// twice the cores unless the user set `LP_NUM_THREADS`. lavapipe cuts each dispatch's
/// workgroups into one contiguous share per thread and the dispatch ends with its slowest
/// share; with one thread per core, any other runnable thread (ours encoding the next
/// commands, the driver's queue thread copying) delays a share and the other core idles
/// meanwhile. With two per core the scheduler keeps both busy: the training step took
/// 1117-1135 ms against 1366-1627 with one per core (benches/NOTES.md). Other drivers
/// ignore the variable. Set before the first instance, so no driver thread reads the
/// environment meanwhile.
fn set_cpu_driver_threads() {
    if std::env::var_os("LP_NUM_THREADS").is_none() {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        // llvmpipe caps the count at 16 (LP_MAX_THREADS).
        std::env::set_var("LP_NUM_THREADS", (2 * cores).min(16).to_string());
    }
}

fn backends() -> wgpu::Backends {
    wgpu::Backends::from_env().unwrap_or(wgpu::Backends::PRIMARY)
}

fn type_rank(t: wgpu::DeviceType) -> u32 {
    match t {
        wgpu::DeviceType::DiscreteGpu => 4,
        wgpu::DeviceType::IntegratedGpu => 3,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Cpu => 1,
        wgpu::DeviceType::Other => 0,
    }
}

const NO_ADAPTER: &str = "no Vulkan/Metal/DX12 adapter found; on Linux without a GPU install \
mesa-vulkan-drivers (apt-get install -y mesa-vulkan-drivers)";

/// Every adapter wgpu can see on the enabled backends (`WGPU_BACKEND` honoured).
pub fn describe_adapters() -> Vec<AdapterSummary> {
    let inst = instance();
    pollster::block_on(inst.enumerate_adapters(backends()))
        .iter()
        .map(summarise)
        .collect()
}

fn summarise(a: &wgpu::Adapter) -> AdapterSummary {
    let info = a.get_info();
    let l = a.limits();
    let f = a.features();
    AdapterSummary {
        name: info.name.clone(),
        backend: format!("{:?}", info.backend),
        device_type: format!("{:?}", info.device_type),
        driver: format!("{} {}", info.driver, info.driver_info)
            .trim()
            .to_string(),
        max_storage_binding_mib: l.max_storage_buffer_binding_size >> 20,
        max_buffer_mib: l.max_buffer_size >> 20,
        max_workgroup_storage_kib: l.max_compute_workgroup_storage_size / 1024,
        max_invocations_per_workgroup: l.max_compute_invocations_per_workgroup,
        max_workgroups_per_dim: l.max_compute_workgroups_per_dimension,
        timestamps: f.contains(wgpu::Features::TIMESTAMP_QUERY),
        shader_f16: f.contains(wgpu::Features::SHADER_F16),
        subgroups: f.contains(wgpu::Features::SUBGROUP),
    }
}

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
            None => adapters
                .into_iter()
                .max_by_key(|a| type_rank(a.get_info().device_type))
                .ok_or_else(|| anyhow!("{NO_ADAPTER}"))?,
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
            && std::env::var_os("PROXYLESS_NO_STORAGE_TEXTURES").is_none();
        let aliaser = (!opts.copy_textures).then(|| {
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
            reuse_textures: match std::env::var("PROXYLESS_TEXTURE_REUSE").as_deref() {
                Ok("off") => 0,
                Ok(v) => v.parse().unwrap_or(KEEP_TEXTURES_UP_TO),
                _ => KEEP_TEXTURES_UP_TO,
            },
            subgroups_off: std::env::var("PROXYLESS_SUBGROUPS").as_deref() == Ok("off"),
            kernels: Mutex::new(HashMap::new()),
            kernel_profile: Mutex::new(None),
            profiling: std::sync::atomic::AtomicBool::new(false),
            batch: Mutex::new(Batch {
                encoder: None,
                pass: None,
                params: Vec::new(),
                slots_used: 0,
            }),
            ring,
            slot_bytes,
            device_error,
            poison: std::sync::atomic::AtomicUsize::new(0),
            poison_source: Mutex::new(None),
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

    /// Workgroups a dispatch should have to keep the whole device busy. A CPU driver such as
    /// lavapipe runs whole workgroups on a few threads, so a few per core balance them; a GPU
    /// needs many. Kernels that split a reduction for parallelism (split-K slices, partial
    /// sums) aim for this, and no more: every extra slice costs a stored and re-read partial.
    /// `PROXYLESS_PARALLEL_GROUPS=N` overrides it (read at each call, for A/B runs).
    pub fn parallel_groups(&self) -> usize {
        if let Some(n) = std::env::var("PROXYLESS_PARALLEL_GROUPS")
            .ok()
            .and_then(|v| v.parse::<usize>().ok())
            .filter(|&n| n > 0)
        {
            return n;
        }
        if self.info.device_type == wgpu::DeviceType::Cpu {
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

    /// The compiled kernel for `spec` with template values filled in (compiled on first use).
    pub fn kernel(&self, spec: &KernelSpec, values: &[(&str, String)]) -> Result<Arc<Kernel>> {
        let mut variant = String::new();
        for (k, v) in values {
            variant.push_str(&format!(" {k}={v}"));
        }
        self.kernel_variant(spec, &variant, || values.to_vec())
    }

    /// The compiled kernel for `spec` in the variant named `variant`; `values` (the template
    /// values) are only generated when the variant is not cached yet, so callers with large
    /// generated bodies pay for them once.
    pub fn kernel_variant<'v>(
        &self,
        spec: &KernelSpec,
        variant: &str,
        values: impl FnOnce() -> Vec<(&'v str, String)>,
    ) -> Result<Arc<Kernel>> {
        let checks = shader_checks();
        let key = format!(
            "{}::{}{variant}{}",
            spec.file,
            spec.entry,
            checks.key_suffix()
        );
        let mut cache = self.kernels.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(k) = cache.get(&key) {
            return Ok(Arc::clone(k));
        }
        let source = instantiate(spec, &values())?;
        // Compile errors in our own WGSL are bugs; report them with the kernel's name.
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let descriptor = wgpu::ShaderModuleDescriptor {
            label: Some(&key),
            source: wgpu::ShaderSource::Wgsl(source.into()),
        };
        // SAFETY: every kernel family is checked against a CPU reference by `kernels-tests/`
        // and `proxyless check`, on shapes that cover each variant's edges; their loops have
        // bounds fixed by uniforms, and no divisor is zero (shapes are validated on the host).
        let module = unsafe {
            self.device
                .create_shader_module_trusted(descriptor, checks.runtime_checks())
        };
        let mut entries = vec![wgpu::BindGroupLayoutEntry {
            binding: 0,
            visibility: wgpu::ShaderStages::COMPUTE,
            ty: wgpu::BindingType::Buffer {
                ty: wgpu::BufferBindingType::Uniform,
                has_dynamic_offset: true,
                min_binding_size: None,
            },
            count: None,
        }];
        for (i, access) in spec.bindings.iter().enumerate() {
            if *access == Access::StorageTexture {
                entries.push(wgpu::BindGroupLayoutEntry {
                    binding: i as u32 + 1,
                    visibility: wgpu::ShaderStages::COMPUTE,
                    ty: wgpu::BindingType::StorageTexture {
                        access: wgpu::StorageTextureAccess::ReadOnly,
                        format: wgpu::TextureFormat::Rgba32Float,
                        view_dimension: wgpu::TextureViewDimension::D2,
                    },
                    count: None,
                });
                continue;
            }
            if *access == Access::Texture {
                entries.push(wgpu::BindGroupLayoutEntry {
                    binding: i as u32 + 1,
                    visibility: wgpu::ShaderStages::COMPUTE,
                    ty: wgpu::BindingType::Texture {
                        sample_type: wgpu::TextureSampleType::Float { filterable: false },
                        view_dimension: wgpu::TextureViewDimension::D2,
                        multisampled: false,
                    },
                    count: None,
                });
                continue;
            }
            entries.push(wgpu::BindGroupLayoutEntry {
                binding: i as u32 + 1,
                visibility: wgpu::ShaderStages::COMPUTE,
                ty: wgpu::BindingType::Buffer {
                    ty: match access {
                        Access::Uniform => wgpu::BufferBindingType::Uniform,
                        _ => wgpu::BufferBindingType::Storage {
                            read_only: *access == Access::Read,
                        },
                    },
                    has_dynamic_offset: false,
                    min_binding_size: None,
                },
                count: None,
            });
        }
        let layout = self
            .device
            .create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
                label: Some(&key),
                entries: &entries,
            });
        let pipeline_layout = self
            .device
            .create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
                label: Some(&key),
                bind_group_layouts: &[Some(&layout)],
                immediate_size: 0,
            });
        let pipeline = self
            .device
            .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(&key),
                layout: Some(&pipeline_layout),
                module: &module,
                entry_point: Some(spec.entry),
                compilation_options: Default::default(),
                cache: None,
            });
        if let Some(err) = pollster::block_on(scope.pop()) {
            bail!("kernel {key} failed to compile: {err}");
        }
        let k = Arc::new(Kernel {
            name: key.clone(),
            pipeline,
            layout,
            bindings: spec.bindings,
        });
        cache.insert(key, Arc::clone(&k));
        Ok(k)
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

    /// Copies `src` into `dst` (whole of `src`), in order with the batch.
    pub fn copy(&self, src: &GpuBuffer, dst: &GpuBuffer) -> Result<()> {
        if dst.bytes() < src.bytes() {
            bail!(
                "copy: destination of {} bytes is smaller than source of {}",
                dst.bytes(),
                src.bytes()
            );
        }
        let (src_raw, dst_raw) = (self.buffer(src), self.buffer(dst));
        dst.forget_texture();
        let mut b = self.lock_batch();
        let enc = b.encoder(&self.device);
        enc.copy_buffer_to_buffer(&src_raw, 0, &dst_raw, 0, Some(src.bytes()));
        Ok(())
    }

    /// Reads many small tensors (scalars, per-layer sums) with one readback instead of one each:
    /// they are copied side by side into one buffer, in order with the batch.
    pub fn read_many(&self, tensors: &[&Tensor]) -> Result<Vec<Vec<f32>>> {
        let total: usize = tensors.iter().map(|t| t.numel()).sum();
        if total == 0 {
            return Ok(tensors.iter().map(|_| Vec::new()).collect());
        }
        let packed = self.concat(tensors);
        let flat = self.read_f32(&packed)?;
        let mut out = Vec::with_capacity(tensors.len());
        let mut at = 0;
        for t in tensors {
            out.push(flat[at..at + t.numel()].to_vec());
            at += t.numel();
        }
        Ok(out)
    }

    /// The tensors' elements one after the other in a new 1-d tensor (copies in the batch).
    pub fn concat(&self, tensors: &[&Tensor]) -> Tensor {
        let total: usize = tensors.iter().map(|t| t.numel()).sum();
        let packed = self.empty(&[total]);
        let dst = self.buffer(&packed.buf);
        let sources: Vec<wgpu::Buffer> = tensors.iter().map(|t| self.buffer(&t.buf)).collect();
        let mut b = self.lock_batch();
        let enc = b.encoder(&self.device);
        let mut offset = 0;
        for (t, src) in tensors.iter().zip(&sources) {
            enc.copy_buffer_to_buffer(src, 0, &dst, offset, Some(t.bytes()));
            offset += t.bytes();
        }
        packed
    }

    /// A texture copy of the first `floats` elements of `buf` (see `gpu::texture` for the
    /// layout), in order with the batch. The buffer keeps the copy until a command writes it,
    /// and hands the same one out again meanwhile.
    pub fn to_texture(&self, buf: &GpuBuffer, floats: usize) -> Result<Arc<GpuTexture>> {
        self.texture_copy(buf, floats, floats <= self.reuse_textures)
    }

    /// `to_texture` for an op's input that its backward reads again through a texture (the
    /// input of a depthwise or pointwise conv, for the weight gradient): the copy is kept
    /// whatever its size (unless PROXYLESS_TEXTURE_REUSE=off), so the backward finds it if
    /// nothing has written the buffer since. It then costs the texture's memory from the
    /// forward to the backward, or until the buffer is dropped or written.
    pub fn to_texture_for_backward(
        &self,
        buf: &GpuBuffer,
        floats: usize,
    ) -> Result<Arc<GpuTexture>> {
        self.texture_copy(buf, floats, self.reuse_textures > 0)
    }

    fn texture_copy(&self, buf: &GpuBuffer, floats: usize, keep: bool) -> Result<Arc<GpuTexture>> {
        // A buffer that a texture aliases needs no copy (`gpu::alias`).
        if let Some(t) = buf.alias_texture(floats) {
            return Ok(Arc::new(t));
        }
        if let Some(t) = buf.kept_texture(floats) {
            return Ok(t);
        }
        let texels = floats.div_ceil(4) as u64;
        let rows = texels.div_ceil(TEX_WIDTH as u64);
        let max_rows = self.limits.max_texture_dimension_2d as u64;
        let raw = self.buffer(buf);
        if rows > max_rows || texels * 16 > raw.size() {
            bail!(
                "to_texture: {floats} floats need {rows} texture rows (limit {max_rows}) and a \
                 buffer of {} bytes (have {})",
                texels * 16,
                raw.size()
            );
        }
        let tex = self.textures.acquire(rows as u32);
        let timer = self.profile_start()?;
        let mut b = self.lock_batch();
        let enc = b.encoder(&self.device);
        for (offset, y, width, height) in texel_rows(floats) {
            let (t, b, size) = texel_copy(&raw, &tex, (offset, y, width, height));
            enc.copy_buffer_to_texture(b, t, size);
        }
        drop(b);
        self.profile_end(timer, "copy buffer -> texture")?;
        let tex = Arc::new(tex);
        if keep {
            buf.keep_texture(floats, &tex);
        }
        Ok(tex)
    }

    /// Treats `tensors` as rewritten: their kept texture copies (`to_texture`) are dropped.
    /// The benchmarks call it on inputs and weights that training would give fresh each step,
    /// so that they time the copies a step makes.
    pub fn mark_written(&self, tensors: &[&Tensor]) {
        for t in tensors {
            self.buffer(&t.buf);
            t.buf.forget_texture();
        }
    }

    /// Keeps `texture` (a `to_texture` copy of the first `floats` elements of `buf`, all of
    /// them) as the only copy of the data and gives the buffer back to the pool, for a
    /// tensor that is read only through textures from now on (a BN input saved for the
    /// backward): memory is not held twice, and the backward copies nothing. A command that
    /// uses the buffer later brings it back first (`buffer`). Returns whether the buffer went
    /// back (not when the texture holds only part of it).
    pub fn keep_only_texture(
        &self,
        buf: &GpuBuffer,
        floats: usize,
        texture: &Arc<GpuTexture>,
    ) -> bool {
        // An aliasing texture is the buffer's own memory: nothing to give back.
        let whole = floats as u64 * 4 >= buf.bytes() && texture.aliased_loan().is_none();
        if whole {
            buf.keep_texture(floats, texture);
            buf.release_buffer();
        }
        whole
    }

    /// `keep_only_texture` with the copy `buf` keeps of all its `floats` (`to_texture`), if it
    /// keeps one and is still resident; otherwise nothing happens. Returns whether the buffer
    /// went back.
    pub fn keep_only_kept_texture(&self, buf: &GpuBuffer, floats: usize) -> bool {
        match buf.kept_texture(floats) {
            Some(t) if buf.resident().is_some() => self.keep_only_texture(buf, floats, &t),
            _ => false,
        }
    }

    /// The wgpu buffer of `buf`. One released to its texture copy (`keep_only_texture`) is
    /// first brought back by a texture-to-buffer copy, in order with the batch; so call it
    /// before taking the batch lock.
    fn buffer(&self, buf: &GpuBuffer) -> wgpu::Buffer {
        if let Some(raw) = buf.resident() {
            return raw;
        }
        let mut b = self.lock_batch();
        if let Some(raw) = buf.resident() {
            return raw; // another thread brought it back meanwhile
        }
        let (floats, tex) = buf
            .any_kept_texture()
            .expect("a released buffer keeps its texture copy (keep_only_texture)");
        let raw = buf.reacquire();
        let enc = b.encoder(&self.device);
        for (offset, y, width, height) in texel_rows(floats) {
            let (t, b, size) = texel_copy(&raw, &tex, (offset, y, width, height));
            enc.copy_texture_to_buffer(t, b, size);
        }
        raw
    }

    /// Uploads 32-bit words into a new tensor.
    pub fn upload<T: bytemuck::Pod>(&self, data: &[T], shape: &[usize]) -> Result<Tensor> {
        let n: usize = shape.iter().product();
        if std::mem::size_of::<T>() != 4 || data.len() != n {
            bail!(
                "upload: {} elements of {} bytes do not fill shape {shape:?}",
                data.len(),
                std::mem::size_of::<T>()
            );
        }
        let t = self.empty(shape);
        self.write(&t.buf, data)?;
        Ok(t)
    }

    /// Overwrites a buffer from the host. Submits the batch first: `write_buffer` runs before
    /// the next submission's commands, so without it a recycled buffer could be overwritten
    /// while earlier batched dispatches still read it.
    pub fn write<T: bytemuck::Pod>(&self, buf: &GpuBuffer, data: &[T]) -> Result<()> {
        let bytes: &[u8] = bytemuck::cast_slice(data);
        if bytes.len() as u64 > buf.bytes() {
            bail!(
                "write: {} bytes do not fit a buffer of {}",
                bytes.len(),
                buf.bytes()
            );
        }
        let raw = self.buffer(buf);
        self.flush();
        buf.forget_texture();
        if !bytes.is_empty() {
            self.queue.write_buffer(&raw, 0, bytes);
        }
        Ok(())
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

    /// Starts timing every dispatch and texture copy alone (each synchronised before and
    /// after), summed by kernel variant; for profiling only: it serialises the batch.
    pub fn profile_kernels(&self) {
        *self.lock_profile() = Some(HashMap::new());
        self.profiling
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Stops the kernel profile; returns (kernel variant, seconds, calls), slowest first.
    pub fn kernel_profile_report(&self) -> Vec<(String, f64, usize)> {
        self.profiling
            .store(false, std::sync::atomic::Ordering::Relaxed);
        let mut rows: Vec<_> = self
            .lock_profile()
            .take()
            .unwrap_or_default()
            .into_iter()
            .map(|(k, (s, n))| (k, s, n))
            .collect();
        rows.sort_by(|a, b| b.1.total_cmp(&a.1));
        rows
    }

    fn lock_profile(&self) -> MutexGuard<'_, Option<HashMap<String, (f64, usize)>>> {
        self.kernel_profile
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    fn profile_start(&self) -> Result<Option<std::time::Instant>> {
        if !self.profiling.load(std::sync::atomic::Ordering::Relaxed) {
            return Ok(None);
        }
        self.sync()?;
        Ok(Some(std::time::Instant::now()))
    }

    fn profile_end(&self, timer: Option<std::time::Instant>, name: &str) -> Result<()> {
        let Some(t0) = timer else {
            return Ok(());
        };
        self.sync()?;
        let s = t0.elapsed().as_secs_f64();
        if let Some(map) = self.lock_profile().as_mut() {
            let e = map.entry(name.to_string()).or_insert((0.0, 0));
            e.0 += s;
            e.1 += 1;
        }
        Ok(())
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

    /// Reads a buffer back as 32-bit words (synchronises).
    pub fn read<T: bytemuck::Pod>(&self, buf: &GpuBuffer) -> Result<Vec<T>> {
        let bytes = buf.bytes().div_ceil(4) * 4;
        let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("readback"),
            size: bytes.max(4),
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        {
            let raw = self.buffer(buf);
            let mut b = self.lock_batch();
            let enc = b.encoder(&self.device);
            enc.copy_buffer_to_buffer(&raw, 0, &staging, 0, Some(bytes));
        }
        self.flush();
        let (tx, rx) = std::sync::mpsc::channel();
        staging.map_async(wgpu::MapMode::Read, .., move |r| {
            let _ = tx.send(r);
        });
        self.sync()?;
        rx.recv()
            .map_err(|_| anyhow!("readback: map callback never ran"))?
            .map_err(|e| anyhow!("readback: could not map the buffer: {e}"))?;
        let view = staging
            .get_mapped_range(..)
            .map_err(|e| anyhow!("readback: {e}"))?;
        let out = bytemuck::cast_slice::<u8, T>(&view[..bytes as usize]).to_vec();
        drop(view);
        staging.unmap();
        Ok(out)
    }

    /// Reads a tensor back as f32.
    pub fn read_f32(&self, t: &Tensor) -> Result<Vec<f32>> {
        let mut v: Vec<f32> = self.read(&t.buf)?;
        v.truncate(t.numel());
        Ok(v)
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

    /// Median wall-clock time of `f` over `reps` runs after `warmup`, the device synchronised
    /// before each clock read.
    pub fn time_median(
        &self,
        warmup: usize,
        reps: usize,
        mut f: impl FnMut() -> Result<()>,
    ) -> Result<Duration> {
        for _ in 0..warmup {
            f()?;
        }
        self.sync()?;
        let mut times = Vec::with_capacity(reps);
        for _ in 0..reps.max(1) {
            let t0 = Instant::now();
            f()?;
            self.sync()?;
            times.push(t0.elapsed());
        }
        times.sort();
        Ok(times[times.len() / 2])
    }
}

/// Which of wgpu's run-time checks our shaders are compiled with. The checks wgpu injects
/// (loop counters that break infinite loops, guards on integer division, index clamps
/// where the driver has no robust access of its own) cost instructions in every loop
/// iteration; our kernels are verified by the test suite, so by default only the bounds
/// checks stay. `PROXYLESS_SHADER_CHECKS=all` keeps every check, `none` drops the bounds
/// checks too.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShaderChecks {
    All,
    Bounds,
    None,
}

impl ShaderChecks {
    fn runtime_checks(self) -> wgpu::ShaderRuntimeChecks {
        match self {
            ShaderChecks::All => wgpu::ShaderRuntimeChecks::checked(),
            ShaderChecks::Bounds => {
                let mut c = wgpu::ShaderRuntimeChecks::unchecked();
                c.bounds_checks = true;
                c
            }
            ShaderChecks::None => wgpu::ShaderRuntimeChecks::unchecked(),
        }
    }

    fn key_suffix(self) -> &'static str {
        match self {
            ShaderChecks::All => " checks=all",
            ShaderChecks::Bounds => "",
            ShaderChecks::None => " checks=none",
        }
    }
}

/// The checks chosen by `PROXYLESS_SHADER_CHECKS` (read at each kernel lookup, so that
/// benchmarks can alternate settings in one process).
pub fn shader_checks() -> ShaderChecks {
    match std::env::var("PROXYLESS_SHADER_CHECKS").as_deref() {
        Ok("all") => ShaderChecks::All,
        Ok("none") => ShaderChecks::None,
        _ => ShaderChecks::Bounds,
    }
}
