//! Probe: can a storage buffer and a read-only rgba32float texture share one allocation on
//! this Vulkan driver, so that a kernel reads through the texture what another wrote to the
//! buffer with no copy? Makes the pair with `gpu::aliased_buffer` (a linear VkImage 1024
//! texels wide bound to the buffer's own VkDeviceMemory), writes the buffer, runs y = 2x
//! reading the texture, and checks y; then times that read against the same kernel on an
//! ordinary texture copy of the buffer, copy included.
use std::time::Instant;

mod probe;

const ROWS: u32 = 1152; // 4.7 M floats

fn main() {
    // lavapipe's threads, before any other thread starts (`gpu::cpu_driver_threads`).
    if let Some(n) = proxyless::gpu::cpu_driver_threads() {
        std::env::set_var("LP_NUM_THREADS", n);
    }
    let (device, queue) = probe::device();
    let pair = proxyless::gpu::aliased_buffer(&device, ROWS, true).expect("an aliased pair");
    let n = ROWS * 1024 * 4;
    let bytes = n as u64 * 4;
    let data: Vec<f32> = (0..n).map(|i| (i % 977) as f32 * 0.25 - 3.0).collect();
    queue.write_buffer(&pair.buffer, 0, bytemuck::cast_slice(&data));
    let copied = probe::operand_texture(&device, &queue, &data);
    let yb = device.create_buffer(&wgpu::BufferDescriptor {
        label: None,
        size: bytes,
        usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
        mapped_at_creation: false,
    });
    let pipe = probe::pipeline(
        &device,
        "@group(0) @binding(0) var xt: texture_storage_2d<rgba32float, read>;
@group(0) @binding(1) var<storage, read_write> y: array<vec4<f32>>;
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) g: vec3<u32>) {
    let i = g.y * 65536u + g.x;
    y[i] = 2.0 * textureLoad(xt, vec2<u32>(i % 1024u, i / 1024u));
}",
    );
    let bind = |v: &wgpu::TextureView| {
        device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: None,
            layout: &pipe.get_bind_group_layout(0),
            entries: &[
                wgpu::BindGroupEntry {
                    binding: 0,
                    resource: wgpu::BindingResource::TextureView(v),
                },
                wgpu::BindGroupEntry {
                    binding: 1,
                    resource: yb.as_entire_binding(),
                },
            ],
        })
    };
    let bg_alias = bind(&pair.view);
    let bg_copy = bind(&copied.create_view(&Default::default()));
    let run = |bg: &wgpu::BindGroup, copy: bool| -> f64 {
        let mut enc = device.create_command_encoder(&Default::default());
        if copy {
            enc.copy_buffer_to_texture(
                wgpu::TexelCopyBufferInfo {
                    buffer: &pair.buffer,
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
    run(&bg_alias, false);
    let y = probe::read_bytes(&device, &queue, &yb, bytes);
    let y: &[f32] = bytemuck::cast_slice(&y);
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
