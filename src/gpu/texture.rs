//! Read-only texture copies of buffers. On CPU drivers (lavapipe 22.3) a `textureLoad` is a
//! real SIMD gather while a storage-buffer load is a per-lane loop, about 15x dearer per float
//! (benches/NOTES.md), so the heaviest kernels read their operands through textures. A tensor
//! of n floats lies in an rgba32float texture TEX_WIDTH texels wide, element i in component
//! i % 4 of texel i / 4 at (texel % TEX_WIDTH, texel / TEX_WIDTH). Where the adapter allows
//! it, the textures can also be bound as read-only storage textures: on lavapipe 22.3 their
//! `textureLoad` skips the mip-level arithmetic of a sampled-texture fetch and is cheaper still
//! (benches/NOTES.md, "GEMM, second pass").

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::pool::{Loan, Pool};

/// Texels per texture row (16 KiB: a multiple of the 256-byte copy row alignment).
pub const TEX_WIDTH: u32 = 1024;

/// Rows rounded up like the buffer pool's buckets (to a power of two up to 8 rows, 128 KiB,
/// then to an eighth of the power of two below), so textures are reused across shapes and
/// one held in place of its buffer (`Gpu::keep_only_texture`) costs about the same.
fn row_bucket(rows: u32) -> u32 {
    let rows = rows.max(1);
    if rows <= 8 {
        return rows.next_power_of_two();
    }
    let high = 1u32 << (31 - rows.leading_zeros());
    let step = high / 8;
    rows.div_ceil(step) * step
}

/// Bytes of a texture of `rows` rows.
fn bucket_bytes(rows: u32) -> u64 {
    rows as u64 * TEX_WIDTH as u64 * 16
}

pub(crate) struct TexturePool {
    device: wgpu::Device,
    /// Live texture bytes are counted with the buffers'.
    buffers: Arc<Pool>,
    /// Textures are also made bindable as read-only storage textures.
    storage: bool,
    free: Mutex<HashMap<u32, Vec<wgpu::Texture>>>,
}

impl TexturePool {
    pub(crate) fn new(device: wgpu::Device, buffers: Arc<Pool>, storage: bool) -> Arc<TexturePool> {
        Arc::new(TexturePool {
            device,
            buffers,
            storage,
            free: Mutex::new(HashMap::new()),
        })
    }

    /// A texture with at least `rows` rows (contents undefined).
    pub(crate) fn acquire(self: &Arc<Self>, rows: u32) -> GpuTexture {
        let bucket = row_bucket(rows);
        let reused = self
            .free
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_mut(&bucket)
            .and_then(|v| v.pop());
        // COPY_SRC: a buffer released to its texture copy is restored from it.
        let usage = wgpu::TextureUsages::TEXTURE_BINDING
            | wgpu::TextureUsages::COPY_DST
            | wgpu::TextureUsages::COPY_SRC;
        let texture = reused.unwrap_or_else(|| {
            self.device.create_texture(&wgpu::TextureDescriptor {
                label: Some("operand texture"),
                size: wgpu::Extent3d {
                    width: TEX_WIDTH,
                    height: bucket,
                    depth_or_array_layers: 1,
                },
                mip_level_count: 1,
                sample_count: 1,
                dimension: wgpu::TextureDimension::D2,
                format: wgpu::TextureFormat::Rgba32Float,
                usage: if self.storage {
                    usage | wgpu::TextureUsages::STORAGE_BINDING
                } else {
                    usage
                },
                view_formats: &[],
            })
        });
        let view = texture.create_view(&wgpu::TextureViewDescriptor::default());
        self.buffers.note_texture(bucket_bytes(bucket), true);
        GpuTexture {
            view,
            backing: Backing::Pooled {
                texture: Some(texture),
                bucket,
                pool: Arc::clone(self),
            },
        }
    }
}

/// A texture holding a tensor for kernels to read: a pooled copy, or a view of a buffer's own
/// memory (`gpu::alias`).
pub struct GpuTexture {
    view: wgpu::TextureView,
    backing: Backing,
}

enum Backing {
    /// A copy; the texture returns to its pool when dropped.
    Pooled {
        texture: Option<wgpu::Texture>,
        bucket: u32,
        pool: Arc<TexturePool>,
    },
    /// The memory of a pool buffer, kept on loan while this lives.
    Aliasing {
        texture: wgpu::Texture,
        loan: Arc<Loan>,
    },
}

impl GpuTexture {
    pub(crate) fn aliasing(
        texture: wgpu::Texture,
        view: wgpu::TextureView,
        loan: Arc<Loan>,
    ) -> GpuTexture {
        GpuTexture {
            view,
            backing: Backing::Aliasing { texture, loan },
        }
    }

    pub fn view(&self) -> &wgpu::TextureView {
        &self.view
    }

    pub(crate) fn raw(&self) -> &wgpu::Texture {
        match &self.backing {
            Backing::Pooled { texture, .. } => {
                texture.as_ref().expect("texture present until drop")
            }
            Backing::Aliasing { texture, .. } => texture,
        }
    }

    /// The buffer memory this texture views, if it is not a copy.
    pub(crate) fn aliased_loan(&self) -> Option<*const Loan> {
        match &self.backing {
            Backing::Aliasing { loan, .. } => Some(Arc::as_ptr(loan)),
            Backing::Pooled { .. } => None,
        }
    }
}

impl Drop for GpuTexture {
    fn drop(&mut self) {
        if let Backing::Pooled {
            texture,
            bucket,
            pool,
        } = &mut self.backing
        {
            if let Some(t) = texture.take() {
                pool.buffers.note_texture(bucket_bytes(*bucket), false);
                pool.free
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .entry(*bucket)
                    .or_default()
                    .push(t);
            }
        }
    }
}
