//! Probe: can a storage buffer and a read-only rgba32float texture share one allocation on
//! this Vulkan driver, so that a kernel reads through the texture what another wrote to the
//! buffer with no copy? Makes a VkBuffer and a linear VkImage (1024 texels wide) bound to the
//! same VkDeviceMemory, hands both to wgpu, writes the buffer, runs y = 2x reading the image,
//! and checks y; then times that read against the same kernel on an ordinary texture copy and
//! the copy itself.
use std::time::Instant;

use ash::vk;

mod probe;

const ROWS: u32 = 1152; // 4.7 M floats

fn main() {
    let (device, queue) = probe::device();
    let bytes = ROWS as u64 * 1024 * 16;
    let hal = unsafe { device.as_hal::<wgpu::hal::api::Vulkan>() }.expect("a Vulkan device");
    let raw = hal.raw_device();
    let inst = hal.shared_instance().raw_instance();
    let phys = hal.raw_physical_device();
    let (vk_buf, vk_img, mem, pitch, offset) = unsafe {
        let vk_buf = raw
            .create_buffer(
                &vk::BufferCreateInfo::default().size(bytes).usage(
                    vk::BufferUsageFlags::STORAGE_BUFFER
                        | vk::BufferUsageFlags::TRANSFER_SRC
                        | vk::BufferUsageFlags::TRANSFER_DST,
                ),
                None,
            )
            .unwrap();
        let vk_img = raw
            .create_image(
                &vk::ImageCreateInfo::default()
                    .image_type(vk::ImageType::TYPE_2D)
                    .format(vk::Format::R32G32B32A32_SFLOAT)
                    .extent(vk::Extent3D {
                        width: 1024,
                        height: ROWS,
                        depth: 1,
                    })
                    .mip_levels(1)
                    .array_layers(1)
                    .samples(vk::SampleCountFlags::TYPE_1)
                    .tiling(vk::ImageTiling::LINEAR)
                    .usage(
                        vk::ImageUsageFlags::SAMPLED
                            | vk::ImageUsageFlags::STORAGE
                            | vk::ImageUsageFlags::TRANSFER_SRC
                            | vk::ImageUsageFlags::TRANSFER_DST,
                    )
                    .initial_layout(vk::ImageLayout::UNDEFINED),
                None,
            )
            .unwrap();
        let rb = raw.get_buffer_memory_requirements(vk_buf);
        let ri = raw.get_image_memory_requirements(vk_img);
        println!("buffer req {rb:?}\nimage req {ri:?}");
        let props = inst.get_physical_device_memory_properties(phys);
        let ty = (0..props.memory_type_count)
            .find(|&i| rb.memory_type_bits & ri.memory_type_bits & (1 << i) != 0)
            .expect("a memory type both accept");
        let size = rb.size.max(ri.size);
        let mem = raw
            .allocate_memory(
                &vk::MemoryAllocateInfo::default()
                    .allocation_size(size)
                    .memory_type_index(ty),
                None,
            )
            .unwrap();
        raw.bind_buffer_memory(vk_buf, mem, 0).unwrap();
        raw.bind_image_memory(vk_img, mem, 0).unwrap();
        let layout = raw.get_image_subresource_layout(
            vk_img,
            vk::ImageSubresource {
                aspect_mask: vk::ImageAspectFlags::COLOR,
                mip_level: 0,
                array_layer: 0,
            },
        );
        (vk_buf, vk_img, mem, layout.row_pitch, layout.offset)
    };
    println!("row pitch {pitch} offset {offset}");
    let buf_desc = wgpu::BufferDescriptor {
        label: Some("aliased buffer"),
        size: bytes,
        usage: wgpu::BufferUsages::STORAGE
            | wgpu::BufferUsages::COPY_SRC
            | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    };
    let tex_desc = wgpu::TextureDescriptor {
        label: Some("aliased texture"),
        size: wgpu::Extent3d {
            width: 1024,
            height: ROWS,
            depth_or_array_layers: 1,
        },
        mip_level_count: 1,
        sample_count: 1,
        dimension: wgpu::TextureDimension::D2,
        format: wgpu::TextureFormat::Rgba32Float,
        usage: wgpu::TextureUsages::STORAGE_BINDING
            | wgpu::TextureUsages::TEXTURE_BINDING
            | wgpu::TextureUsages::COPY_SRC
            | wgpu::TextureUsages::COPY_DST,
        view_formats: &[],
    };
    let (xb, xt) = unsafe {
        let hb = wgpu::hal::vulkan::Buffer::from_raw_managed(vk_buf, mem, 0, bytes);
        let xb = device.create_buffer_from_hal::<wgpu::hal::api::Vulkan>(hb, &buf_desc);
        let hal_desc = wgpu::hal::TextureDescriptor {
            label: None,
            size: tex_desc.size,
            mip_level_count: 1,
            sample_count: 1,
            dimension: tex_desc.dimension,
            format: tex_desc.format,
            usage: wgpu::TextureUses::RESOURCE
                | wgpu::TextureUses::STORAGE_READ_ONLY
                | wgpu::TextureUses::COPY_SRC
                | wgpu::TextureUses::COPY_DST,
            memory_flags: wgpu::hal::MemoryFlags::empty(),
            view_formats: vec![],
        };
        let ht = hal.texture_from_raw(
            vk_img,
            &hal_desc,
            None,
            wgpu::hal::vulkan::TextureMemory::External,
        );
        let xt = device.create_texture_from_hal::<wgpu::hal::api::Vulkan>(
            ht,
            &tex_desc,
            wgpu::TextureUses::UNINITIALIZED,
        );
        (xb, xt)
    };
    drop(hal);
    let n = ROWS * 1024 * 4;
    let data: Vec<f32> = (0..n).map(|i| (i % 977) as f32 * 0.25 - 3.0).collect();
    queue.write_buffer(&xb, 0, bytemuck::cast_slice(&data));
    let copied = probe::operand_texture(&device, &queue, &data);
    let yb = device.create_buffer(&wgpu::BufferDescriptor {
        label: None,
        size: bytes,
        usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
        mapped_at_creation: false,
    });
    let src = "@group(0) @binding(0) var xt: texture_storage_2d<rgba32float, read>;
@group(0) @binding(1) var<storage, read_write> y: array<vec4<f32>>;
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) g: vec3<u32>) {
    let i = g.y * 65536u + g.x;
    y[i] = 2.0 * textureLoad(xt, vec2<u32>(i % 1024u, i / 1024u));
}";
    let pipe = probe::pipeline(&device, src);
    let bind = |t: &wgpu::Texture| {
        let v = t.create_view(&Default::default());
        device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: None,
            layout: &pipe.get_bind_group_layout(0),
            entries: &[
                wgpu::BindGroupEntry {
                    binding: 0,
                    resource: wgpu::BindingResource::TextureView(&v),
                },
                wgpu::BindGroupEntry {
                    binding: 1,
                    resource: yb.as_entire_binding(),
                },
            ],
        })
    };
    let (bg_alias, bg_copy) = (bind(&xt), bind(&copied));
    let run = |bg: &wgpu::BindGroup, copy: bool| -> f64 {
        let mut enc = device.create_command_encoder(&Default::default());
        if copy {
            enc.copy_buffer_to_texture(
                wgpu::TexelCopyBufferInfo {
                    buffer: &xb,
                    layout: wgpu::TexelCopyBufferLayout {
                        offset: 0,
                        bytes_per_row: Some(1024 * 16),
                        rows_per_image: None,
                    },
                },
                copied.as_image_copy(),
                copied.size(),
            );
        }
        {
            let mut p = enc.begin_compute_pass(&Default::default());
            p.set_pipeline(&pipe);
            p.set_bind_group(0, bg, &[]);
            p.dispatch_workgroups(1024, n / 4 / 65536, 1);
        }
        let t0 = Instant::now();
        queue.submit([enc.finish()]);
        device.poll(wgpu::PollType::wait_indefinitely()).unwrap();
        t0.elapsed().as_secs_f64() * 1e3
    };
    let read = |b: &wgpu::Buffer| -> Vec<f32> {
        let st = device.create_buffer(&wgpu::BufferDescriptor {
            label: None,
            size: bytes,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut enc = device.create_command_encoder(&Default::default());
        enc.copy_buffer_to_buffer(b, 0, &st, 0, bytes);
        queue.submit([enc.finish()]);
        st.slice(..).map_async(wgpu::MapMode::Read, |_| {});
        device.poll(wgpu::PollType::wait_indefinitely()).unwrap();
        let v = bytemuck::cast_slice(&st.slice(..).get_mapped_range().unwrap()).to_vec();
        v
    };
    run(&bg_alias, false);
    let y = read(&yb);
    let bad = y
        .iter()
        .zip(&data)
        .filter(|(a, b)| **a != 2.0 * **b)
        .count();
    println!("aliased read: {bad} of {n} wrong");
    let mut t = [Vec::new(), Vec::new()];
    for round in 0..13 {
        let a = run(&bg_alias, false);
        let c = run(&bg_copy, true);
        if round >= 3 {
            t[0].push(a);
            t[1].push(c);
        }
    }
    for (name, v) in ["aliased", "copy + read"].iter().zip(t.iter_mut()) {
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        println!("{name:<12} {:.2} ms", v[v.len() / 2]);
    }
}
