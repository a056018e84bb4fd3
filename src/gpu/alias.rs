//! Buffers whose memory a texture shares, on lavapipe (Mesa's Vulkan driver on the CPU).
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
//! What Vulkan promises, and what it does not (Vulkan 1.3, "Resource Memory Association" and
//! "Memory Aliasing"): binding a buffer and an image to overlapping memory is allowed, and
//! `vkGetImageSubresourceLayout` gives a linear image's row pitch and offset. It does *not*
//! promise that writes through the buffer are seen through the image with that layout: data
//! written through one aliased resource is undefined when read through the other unless both
//! are linear and the layouts match, and even then only with a memory barrier between them.
//! What this relies on beyond the spec, checked or known for lavapipe only:
//! - the layout: row pitch exactly 16 KiB from offset 0 and one memory type for both (checked
//!   on a test pair when the device opens, and on every pair made);
//! - the ordering: wgpu tracks the two as separate resources and puts no barrier between a
//!   dispatch writing the buffer and one reading the texture. lavapipe runs each dispatch to
//!   completion before the next (its `launch_grid` waits for its threads), so a write is
//!   visible to every later dispatch. That is why the gate is the driver itself
//!   (`runs_dispatches_in_order`), not any CPU adapter;
//! - the lifetime: the image lives in the buffer's memory, so the texture holds a handle to the
//!   buffer that wgpu drops only when it destroys the texture, after the last command reading
//!   it (the hal drop callback in `imp::make`).
//!
//! `PROXYLESS_ALIAS=off` (and the `gpu` profile) turn it off: texture copies as elsewhere.

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

/// The driver this relies on: Mesa's lavapipe (Vulkan driver name "llvmpipe"), which runs each
/// dispatch to completion before the next starts (its `launch_grid` waits for its threads) and
/// lays linear images out as checked in `make`. Other CPU drivers may overlap dispatches.
pub(crate) fn runs_dispatches_in_order(info: &wgpu::AdapterInfo) -> bool {
    info.device_type == wgpu::DeviceType::Cpu
        && info.backend == wgpu::Backend::Vulkan
        && info.driver == "llvmpipe"
}

impl Aliaser {
    /// An aliaser for `device` if it is lavapipe and a test pair works (image
    /// rows exactly 16 KiB apart from offset 0, one memory type for both), else None.
    pub(crate) fn new(
        device: &wgpu::Device,
        info: &wgpu::AdapterInfo,
        storage: bool,
        max_rows: u32,
    ) -> Option<Aliaser> {
        // PROXYLESS_ALIAS=off and the `gpu` profile are handled by the caller (`Gpu::new`).
        if !runs_dispatches_in_order(info) {
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

    /// The raw objects of a pair under construction, destroyed on drop unless handed over.
    struct Raw<'a> {
        device: &'a ash::Device,
        buffer: vk::Buffer,
        image: vk::Image,
        memory: Option<vk::DeviceMemory>,
    }

    impl Drop for Raw<'_> {
        fn drop(&mut self) {
            // SAFETY: the objects were made on `device` and nothing else holds them: a Raw is
            // dropped only on the error paths, before any is given to wgpu (`handed_over`
            // nulls the handles first). Destroying a null handle is a no-op in Vulkan.
            unsafe { self.device.destroy_image(self.image, None) };
            // SAFETY: as above.
            unsafe { self.device.destroy_buffer(self.buffer, None) };
            if let Some(m) = self.memory.take() {
                // SAFETY: as above; the buffer and image bound to it are destroyed.
                unsafe { self.device.free_memory(m, None) };
            }
        }
    }

    impl Raw<'_> {
        /// The handles, for wgpu to own from now on.
        fn handed_over(mut self) -> (vk::Buffer, vk::Image, vk::DeviceMemory) {
            let out = (
                self.buffer,
                self.image,
                self.memory.take().unwrap_or(vk::DeviceMemory::null()),
            );
            self.buffer = vk::Buffer::null();
            self.image = vk::Image::null();
            out
        }
    }

    pub(super) fn make(
        device: &wgpu::Device,
        rows: u32,
        storage: bool,
    ) -> Result<AliasedBuffer, String> {
        let bytes = rows as u64 * ROW_BYTES;
        // SAFETY: the raw device is used only for the calls below, each on objects made here;
        // the guard is dropped before wgpu is given the objects.
        let hal = unsafe { device.as_hal::<Vulkan>() }.ok_or("not a Vulkan device")?;
        let raw = hal.raw_device().clone();
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
        // SAFETY: `physical` is the device's own physical device, a valid handle.
        let features = unsafe { instance.get_physical_device_format_properties(physical, format) }
            .linear_tiling_features;
        let mut wanted = vk::FormatFeatureFlags::SAMPLED_IMAGE;
        if storage {
            wanted |= vk::FormatFeatureFlags::STORAGE_IMAGE;
        }
        if !features.contains(wanted) {
            return Err(format!("linear rgba32float images lack {wanted:?}"));
        }
        let buffer_info = vk::BufferCreateInfo::default()
            .size(bytes)
            .usage(buffer_usage);
        // SAFETY: a valid create-info on a live device.
        let buffer = unsafe { raw.create_buffer(&buffer_info, None) }
            .map_err(|e| format!("vkCreateBuffer: {e}"))?;
        let mut made = Raw {
            device: &raw,
            buffer,
            image: vk::Image::null(),
            memory: None,
        };
        let image_info = vk::ImageCreateInfo::default()
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
            .initial_layout(vk::ImageLayout::UNDEFINED);
        // SAFETY: a valid create-info (linear tiling checked above) on a live device.
        made.image = unsafe { raw.create_image(&image_info, None) }
            .map_err(|e| format!("vkCreateImage: {e}"))?;
        let subresource = vk::ImageSubresource {
            aspect_mask: vk::ImageAspectFlags::COLOR,
            mip_level: 0,
            array_layer: 0,
        };
        // SAFETY: a linear image made here, its only subresource.
        let layout = unsafe { raw.get_image_subresource_layout(made.image, subresource) };
        if layout.row_pitch != ROW_BYTES || layout.offset != 0 {
            return Err(format!(
                "image rows {} bytes apart from offset {} (need {ROW_BYTES} from 0)",
                layout.row_pitch, layout.offset
            ));
        }
        // SAFETY: objects made here.
        let rb = unsafe { raw.get_buffer_memory_requirements(made.buffer) };
        // SAFETY: objects made here.
        let ri = unsafe { raw.get_image_memory_requirements(made.image) };
        // SAFETY: the device's own physical device.
        let props = unsafe { instance.get_physical_device_memory_properties(physical) };
        let ty = (0..props.memory_type_count)
            .find(|&i| rb.memory_type_bits & ri.memory_type_bits & (1 << i) != 0)
            .ok_or("no memory type takes both")?;
        let size = rb.size.max(ri.size);
        let alloc = vk::MemoryAllocateInfo::default()
            .allocation_size(size)
            .memory_type_index(ty);
        // SAFETY: a memory type the device lists, for a size its requirements give.
        let memory = unsafe { raw.allocate_memory(&alloc, None) }
            .map_err(|e| format!("vkAllocateMemory of {size} bytes: {e}"))?;
        made.memory = Some(memory);
        // SAFETY: both are unbound, the memory type suits both and offset 0 meets both
        // alignments (the requirements were read above; the memory is at least as large).
        unsafe { raw.bind_buffer_memory(made.buffer, memory, 0) }
            .map_err(|e| format!("binding the buffer's memory: {e}"))?;
        // SAFETY: as above. Binding two resources to one range is allowed by Vulkan (memory
        // aliasing); what they see of each other is the driver's business: checked by the
        // caller on this driver only (see the module doc).
        unsafe { raw.bind_image_memory(made.image, memory, 0) }
            .map_err(|e| format!("binding the image's memory: {e}"))?;
        let (buffer, image, memory) = made.handed_over();
        let texture_usages = Aliaser::texture_usages(storage);
        let mut hal_uses =
            wgpu::TextureUses::RESOURCE | wgpu::TextureUses::COPY_SRC | wgpu::TextureUses::COPY_DST;
        if storage {
            hal_uses |= wgpu::TextureUses::STORAGE_READ_ONLY;
        }
        let size3 = wgpu::Extent3d {
            width: TEX_WIDTH,
            height: rows,
            depth_or_array_layers: 1,
        };
        // SAFETY: `buffer` is bound to `memory`, both made on this device with the size and
        // usages the descriptor below gives; wgpu-hal owns and frees them from here on.
        let hal_buffer =
            unsafe { wgpu::hal::vulkan::Buffer::from_raw_managed(buffer, memory, 0, bytes) };
        // SAFETY: the hal buffer is made on this device with this descriptor.
        let buffer = unsafe {
            device.create_buffer_from_hal::<Vulkan>(
                hal_buffer,
                &wgpu::BufferDescriptor {
                    label: Some("pool (aliased)"),
                    size: bytes,
                    usage: Aliaser::buffer_usages(),
                    mapped_at_creation: false,
                },
            )
        };
        // The image lives in the buffer's memory, so the texture holds the buffer: wgpu calls
        // this when it destroys the texture, after the last command that reads it, and only
        // then may the buffer (and with it the memory) go. Without it, a pool trim could free
        // the memory under a texture that a recorded dispatch still reads.
        let keep = (raw.clone(), buffer.clone());
        let release: wgpu::hal::DropCallback = Box::new(move || {
            let (device, buffer) = keep;
            // SAFETY: wgpu no longer uses the image (this runs at its destruction), nothing
            // else holds it, and its memory is still bound: `buffer` is dropped after.
            unsafe { device.destroy_image(image, None) };
            drop(buffer);
        });
        let hal_texture = {
            // SAFETY: `image` was made with this descriptor's size, format, usages (as Vulkan
            // usage flags) and a single mip and layer; with the callback wgpu-hal does not
            // destroy it, and `External` memory is not freed with it (the callback keeps it).
            unsafe {
                hal.texture_from_raw(
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
                    Some(release),
                    wgpu::hal::vulkan::TextureMemory::External,
                )
            }
        };
        drop(hal);
        // SAFETY: the hal texture is made on this device with this descriptor (the usages as
        // wgpu names them), in no layout yet.
        let texture = unsafe {
            device.create_texture_from_hal::<Vulkan>(
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
            )
        };
        let view = texture.create_view(&wgpu::TextureViewDescriptor::default());
        Ok(AliasedBuffer {
            buffer,
            texture,
            view,
            rows,
        })
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
