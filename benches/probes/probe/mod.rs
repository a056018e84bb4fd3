//! What the raw-wgpu probes share: the default adapter's device with its own limits, and an
//! rgba32float storage texture 1024 texels wide holding an operand (element i in component i %
//! 4 of texel i / 4, as `gpu::texture` lays tensors out).
#![allow(dead_code)] // each probe uses some of these helpers

/// The default adapter's device and queue, asking for the adapter's limits.
pub fn device() -> (wgpu::Device, wgpu::Queue) {
    let inst = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
    let adapter =
        pollster::block_on(inst.request_adapter(&wgpu::RequestAdapterOptions::default())).unwrap();
    pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
        required_limits: adapter.limits(),
        ..Default::default()
    }))
    .unwrap()
}

/// A 1024-wide rgba32float texture (storage-read and copy-destination) with `data` in its
/// first `data.len() / 4` texels; the rest of the last row is zero.
pub fn operand_texture(device: &wgpu::Device, queue: &wgpu::Queue, data: &[f32]) -> wgpu::Texture {
    let rows = (data.len() as u32).div_ceil(4 * 1024).max(1);
    let tex = device.create_texture(&wgpu::TextureDescriptor {
        label: None,
        size: wgpu::Extent3d {
            width: 1024,
            height: rows,
            depth_or_array_layers: 1,
        },
        mip_level_count: 1,
        sample_count: 1,
        dimension: wgpu::TextureDimension::D2,
        format: wgpu::TextureFormat::Rgba32Float,
        usage: wgpu::TextureUsages::STORAGE_BINDING | wgpu::TextureUsages::COPY_DST,
        view_formats: &[],
    });
    let mut padded = data.to_vec();
    padded.resize((rows * 1024 * 4) as usize, 0.0);
    queue.write_texture(
        tex.as_image_copy(),
        bytemuck::cast_slice(&padded),
        wgpu::TexelCopyBufferLayout {
            offset: 0,
            bytes_per_row: Some(1024 * 16),
            rows_per_image: None,
        },
        wgpu::Extent3d {
            width: 1024,
            height: rows,
            depth_or_array_layers: 1,
        },
    );
    tex
}

/// A compute pipeline for the WGSL `source`, entry point `main`, layout from the shader.
pub fn pipeline(device: &wgpu::Device, source: &str) -> wgpu::ComputePipeline {
    let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
        label: None,
        source: wgpu::ShaderSource::Wgsl(source.into()),
    });
    device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
        label: None,
        layout: None,
        module: &module,
        entry_point: Some("main"),
        compilation_options: Default::default(),
        cache: None,
    })
}

/// The first `bytes` bytes of `buffer` (which needs COPY_SRC), read back through a staging
/// buffer.
pub fn read_bytes(
    device: &wgpu::Device,
    queue: &wgpu::Queue,
    buffer: &wgpu::Buffer,
    bytes: u64,
) -> Vec<u8> {
    let staging = device.create_buffer(&wgpu::BufferDescriptor {
        label: None,
        size: bytes,
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    let mut enc = device.create_command_encoder(&Default::default());
    enc.copy_buffer_to_buffer(buffer, 0, &staging, 0, bytes);
    queue.submit([enc.finish()]);
    staging.slice(..).map_async(wgpu::MapMode::Read, |_| {});
    device.poll(wgpu::PollType::wait_indefinitely()).unwrap();
    let v = staging.slice(..).get_mapped_range().unwrap().to_vec();
    v
}
