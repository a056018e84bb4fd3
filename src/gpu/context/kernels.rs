//! The kernel cache: each kernel variant (a WGSL file with its template values and the shader
//! checks chosen) compiled into a pipeline once, on first use, and shared after; and the
//! kernel profile, which times every dispatch alone.

use std::collections::HashMap;
use std::sync::{Arc, MutexGuard};

use anyhow::{bail, Result};

use super::Gpu;
use crate::gpu::kernel::{instantiate, only_entry, unroll_loops, Access, Kernel, KernelSpec};
use crate::gpu::tuning::{tuning, ShaderChecks};

impl Gpu {
    /// The compiled kernel for `spec` with template values filled in (compiled on first use).
    /// Every kernel compiled so far, by cache key (file, entry point and variant), in key order.
    pub fn compiled_kernels(&self) -> Vec<Arc<Kernel>> {
        let cache = self.kernels.lock().unwrap_or_else(|e| e.into_inner());
        let mut all: Vec<Arc<Kernel>> = cache.values().cloned().collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    pub fn kernel(&self, spec: &KernelSpec, values: &[(&str, String)]) -> Result<Arc<Kernel>> {
        let mut variant = String::new();
        for (k, v) in values {
            variant.push_str(&format!(" {k}={v}"));
        }
        self.kernel_variant(spec, &variant, || values.to_vec())
    }

    /// The compiled kernel for `spec` in the variant named `variant`; `values` (the template
    /// values) are only made when the variant is not cached yet, so a call that finds it
    /// cached costs a lookup.
    pub fn kernel_variant<'v>(
        &self,
        spec: &KernelSpec,
        variant: &str,
        values: impl FnOnce() -> Vec<(&'v str, String)>,
    ) -> Result<Arc<Kernel>> {
        let checks = tuning().shader_checks;
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
        let compiled = unroll_loops(&only_entry(&source, spec.entry)?)?;
        // Compile errors in our own WGSL are bugs; report them with the kernel's name.
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let descriptor = wgpu::ShaderModuleDescriptor {
            label: Some(&key),
            source: wgpu::ShaderSource::Wgsl(compiled.as_str().into()),
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
            source,
            entry: spec.entry,
            pipeline,
            layout,
            bindings: spec.bindings,
        });
        cache.insert(key, Arc::clone(&k));
        Ok(k)
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

    pub(super) fn profile_start(&self) -> Result<Option<std::time::Instant>> {
        if !self.profiling.load(std::sync::atomic::Ordering::Relaxed) {
            return Ok(None);
        }
        self.sync()?;
        Ok(Some(std::time::Instant::now()))
    }

    pub(super) fn profile_end(&self, timer: Option<std::time::Instant>, name: &str) -> Result<()> {
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
