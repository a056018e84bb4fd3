//! Buffers whose memory a texture shares, on CPU Vulkan drivers (lavapipe).
//!
//! Kernels read their big operands through rgba32float textures because on lavapipe a texture
//! load is a SIMD gather and a storage-buffer load a per-lane loop (benches/NOTES.md). Copying
//! each tensor into a texture cost ~10% of a training step. lavapipe stores images linearly,
//! so a linear-tiled VkImage 1024 texels wide bound to a buffer's own VkDeviceMemory sees the
//! buffer's floats in exactly the layout of `gpu::texture` (element i in component i % 4 of
//! texel i / 4 at (texel % 1024, texel / 1024)): the texture *is* the buffer, and no copy is
//! made. wgpu has no such aliasing, so the pair is made here with raw Vulkan calls and handed
//! to wgpu (`create_buffer_from_hal`, `create_texture_from_hal`).
//!
//! wgpu tracks the two as separate resources and puts no barrier between a dispatch writing
//! the buffer and one reading the texture. That is sound only where dispatches run one after
//! another to completion, as llvmpipe's do (each `launch_grid` waits for its threads); so this
//! is used only on CPU adapters, after checking that the driver lays the image out as assumed.
//! `PROXYLESS_ALIAS=off` turns it off (texture copies as before).

use super::texture::TEX_WIDTH;

/// Bytes of one texture row.
pub(crate) const ROW_BYTES: u64 = TEX_WIDTH as u64 * 16;

/// Makes aliased buffer/texture pairs on a device where that was checked to work.
pub(crate) struct Aliaser {
    device: wgpu::Device,
    /// The textures may be bound as read-only storage textures.
    storage: bool,
    max_rows: u32,
}

/// A buffer of whole texture rows and the texture that shares its memory.
pub struct AliasedBuffer {
    pub buffer: wgpu::Buffer,
    pub texture: wgpu::Texture,
    pub view: wgpu::TextureView,
    /// Texture rows; the buffer holds `rows * ROW_BYTES` bytes.
    pub rows: u32,
}

/// A buffer of `rows` texture rows and an rgba32float texture over the same memory, made on
/// `device` (with storage-texture usage if `storage`), or why not. For probes: reading the
/// texture after writing the buffer is only ordered on drivers that run each dispatch to
/// completion before the next, such as lavapipe (the pool checks that; this does not).
pub fn aliased_buffer(
    device: &wgpu::Device,
    rows: u32,
    storage: bool,
) -> Result<AliasedBuffer, String> {
    imp::make(device, rows, storage)
}

impl Aliaser {
    /// An aliaser for `device` if it is a CPU Vulkan adapter on which a test pair works (image
    /// rows exactly 16 KiB apart from offset 0, one memory type for both), else None.
    pub(crate) fn new(
        device: &wgpu::Device,
        info: &wgpu::AdapterInfo,
        storage: bool,
        max_rows: u32,
    ) -> Option<Aliaser> {
        // PROXYLESS_ALIAS=off and the `gpu` profile are handled by the caller (`Gpu::new`).
        if info.device_type != wgpu::DeviceType::Cpu || info.backend != wgpu::Backend::Vulkan {
            return None;
        }
        let a = Aliaser {
            device: device.clone(),
            storage,
            max_rows,
        };
        a.make(1).ok().map(|_| a)
    }

    /// Buffer usages of pool buffers (the aliased ones get the same).
    pub(crate) fn buffer_usages() -> wgpu::BufferUsages {
        wgpu::BufferUsages::STORAGE
            | wgpu::BufferUsages::UNIFORM
            | wgpu::BufferUsages::COPY_SRC
            | wgpu::BufferUsages::COPY_DST
    }

    /// A pair of `rows` texture rows, or why not.
    pub(crate) fn make(&self, rows: u32) -> Result<AliasedBuffer, String> {
        if rows == 0 || rows > self.max_rows {
            return Err(format!("{rows} rows (at most {})", self.max_rows));
        }
        imp::make(&self.device, rows, self.storage)
    }

    pub(crate) fn texture_usages(storage: bool) -> wgpu::TextureUsages {
        let u = wgpu::TextureUsages::TEXTURE_BINDING
            | wgpu::TextureUsages::COPY_SRC
            | wgpu::TextureUsages::COPY_DST;
        if storage {
            u | wgpu::TextureUsages::STORAGE_BINDING
        } else {
            u
        }
    }
}

#[cfg(any(target_os = "linux", target_os = "windows", target_os = "android"))]
mod imp {
    use ash::vk;
    use wgpu::hal::api::Vulkan;

    use super::{AliasedBuffer, Aliaser, ROW_BYTES};
    use crate::gpu::texture::TEX_WIDTH;

    pub(super) fn make(
        device: &wgpu::Device,
        rows: u32,
        storage: bool,
    ) -> Result<AliasedBuffer, String> {
        let bytes = rows as u64 * ROW_BYTES;
        // SAFETY: every Vulkan object made here is either handed to wgpu, which then owns it
        // (the buffer with its memory, the image without), or destroyed on the error paths
        // before return; both are made on wgpu's own device and respect the descriptors
        // given to wgpu below.
        let hal = unsafe { device.as_hal::<Vulkan>() }.ok_or("not a Vulkan device")?;
        let raw = hal.raw_device();
        let instance = hal.shared_instance().raw_instance();
        let physical = hal.raw_physical_device();
        let buffer_usage = vk::BufferUsageFlags::STORAGE_BUFFER
            | vk::BufferUsageFlags::UNIFORM_BUFFER
            | vk::BufferUsageFlags::TRANSFER_SRC
            | vk::BufferUsageFlags::TRANSFER_DST;
        let mut image_usage = vk::ImageUsageFlags::SAMPLED
            | vk::ImageUsageFlags::TRANSFER_SRC
            | vk::ImageUsageFlags::TRANSFER_DST;
        if storage {
            image_usage |= vk::ImageUsageFlags::STORAGE;
        }
        let format = vk::Format::R32G32B32A32_SFLOAT;
        unsafe {
            let features = instance
                .get_physical_device_format_properties(physical, format)
                .linear_tiling_features;
            let mut wanted = vk::FormatFeatureFlags::SAMPLED_IMAGE;
            if storage {
                wanted |= vk::FormatFeatureFlags::STORAGE_IMAGE;
            }
            if !features.contains(wanted) {
                return Err(format!("linear rgba32float images lack {wanted:?}"));
            }
            let buffer = raw
                .create_buffer(
                    &vk::BufferCreateInfo::default()
                        .size(bytes)
                        .usage(buffer_usage),
                    None,
                )
                .map_err(|e| format!("vkCreateBuffer: {e}"))?;
            let image = match raw.create_image(
                &vk::ImageCreateInfo::default()
                    .image_type(vk::ImageType::TYPE_2D)
                    .format(format)
                    .extent(vk::Extent3D {
                        width: TEX_WIDTH,
                        height: rows,
                        depth: 1,
                    })
                    .mip_levels(1)
                    .array_layers(1)
                    .samples(vk::SampleCountFlags::TYPE_1)
                    .tiling(vk::ImageTiling::LINEAR)
                    .usage(image_usage)
                    .initial_layout(vk::ImageLayout::UNDEFINED),
                None,
            ) {
                Ok(i) => i,
                Err(e) => {
                    raw.destroy_buffer(buffer, None);
                    return Err(format!("vkCreateImage: {e}"));
                }
            };
            let fail = |msg: String, memory: Option<vk::DeviceMemory>| {
                raw.destroy_image(image, None);
                raw.destroy_buffer(buffer, None);
                if let Some(m) = memory {
                    raw.free_memory(m, None);
                }
                Err(msg)
            };
            let layout = raw.get_image_subresource_layout(
                image,
                vk::ImageSubresource {
                    aspect_mask: vk::ImageAspectFlags::COLOR,
                    mip_level: 0,
                    array_layer: 0,
                },
            );
            if layout.row_pitch != ROW_BYTES || layout.offset != 0 {
                return fail(
                    format!(
                        "image rows {} bytes apart from offset {} (need {ROW_BYTES} from 0)",
                        layout.row_pitch, layout.offset
                    ),
                    None,
                );
            }
            let rb = raw.get_buffer_memory_requirements(buffer);
            let ri = raw.get_image_memory_requirements(image);
            let props = instance.get_physical_device_memory_properties(physical);
            let Some(ty) = (0..props.memory_type_count)
                .find(|&i| rb.memory_type_bits & ri.memory_type_bits & (1 << i) != 0)
            else {
                return fail("no memory type takes both".into(), None);
            };
            let size = rb.size.max(ri.size);
            let memory = match raw.allocate_memory(
                &vk::MemoryAllocateInfo::default()
                    .allocation_size(size)
                    .memory_type_index(ty),
                None,
            ) {
                Ok(m) => m,
                Err(e) => return fail(format!("vkAllocateMemory of {size} bytes: {e}"), None),
            };
            if let Err(e) = raw
                .bind_buffer_memory(buffer, memory, 0)
                .and_then(|_| raw.bind_image_memory(image, memory, 0))
            {
                return fail(format!("binding the memory: {e}"), Some(memory));
            }
            let texture_usages = Aliaser::texture_usages(storage);
            let mut hal_uses = wgpu::TextureUses::RESOURCE
                | wgpu::TextureUses::COPY_SRC
                | wgpu::TextureUses::COPY_DST;
            if storage {
                hal_uses |= wgpu::TextureUses::STORAGE_READ_ONLY;
            }
            let size3 = wgpu::Extent3d {
                width: TEX_WIDTH,
                height: rows,
                depth_or_array_layers: 1,
            };
            // wgpu-hal frees `memory` with the buffer; the image it destroys without touching
            // the memory (External). The texture never outlives the buffer in use: the pool
            // keeps them together.
            let hal_buffer = wgpu::hal::vulkan::Buffer::from_raw_managed(buffer, memory, 0, bytes);
            let hal_texture = hal.texture_from_raw(
                image,
                &wgpu::hal::TextureDescriptor {
                    label: Some("aliased operand texture"),
                    size: size3,
                    mip_level_count: 1,
                    sample_count: 1,
                    dimension: wgpu::TextureDimension::D2,
                    format: wgpu::TextureFormat::Rgba32Float,
                    usage: hal_uses,
                    memory_flags: wgpu::hal::MemoryFlags::empty(),
                    view_formats: vec![],
                },
                None,
                wgpu::hal::vulkan::TextureMemory::External,
            );
            drop(hal);
            let buffer = device.create_buffer_from_hal::<Vulkan>(
                hal_buffer,
                &wgpu::BufferDescriptor {
                    label: Some("pool (aliased)"),
                    size: bytes,
                    usage: Aliaser::buffer_usages(),
                    mapped_at_creation: false,
                },
            );
            let texture = device.create_texture_from_hal::<Vulkan>(
                hal_texture,
                &wgpu::TextureDescriptor {
                    label: Some("aliased operand texture"),
                    size: size3,
                    mip_level_count: 1,
                    sample_count: 1,
                    dimension: wgpu::TextureDimension::D2,
                    format: wgpu::TextureFormat::Rgba32Float,
                    usage: texture_usages,
                    view_formats: &[],
                },
                wgpu::TextureUses::UNINITIALIZED,
            );
            let view = texture.create_view(&wgpu::TextureViewDescriptor::default());
            Ok(AliasedBuffer {
                buffer,
                texture,
                view,
                rows,
            })
        }
    }
}

#[cfg(not(any(target_os = "linux", target_os = "windows", target_os = "android")))]
mod imp {
    use super::AliasedBuffer;

    pub(super) fn make(
        _device: &wgpu::Device,
        _rows: u32,
        _storage: bool,
    ) -> Result<AliasedBuffer, String> {
        Err("no Vulkan backend on this platform".into())
    }
}
