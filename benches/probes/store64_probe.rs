//! Probe: does a kernel's output cost less on lavapipe written as 64-bit words? A vec4<f32>
//! store is a loop over the SIMD lanes per component; packing the four floats into two u64
//! (`SHADER_INT64`) halves the components. Times y = 2x over 4.7 M floats, x from a texture,
//! y stored as vec4<f32> or as vec2<u64>, then with two texels an invocation as two
//! vec4<f32> stores or one vec4<u64>, and checks that the two forms wrote the same bytes.
use std::time::Instant;

mod probe;

const N: u32 = 1024 * 1152;

fn main() {
    // lavapipe's threads, before any other thread starts (`gpu::cpu_driver_threads`).
    if let Some(n) = proxyless::gpu::cpu_driver_threads() {
        std::env::set_var("LP_NUM_THREADS", n);
    }
    let inst = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
    let adapter =
        pollster::block_on(inst.request_adapter(&wgpu::RequestAdapterOptions::default())).unwrap();
    let has64 = adapter.features().contains(wgpu::Features::SHADER_INT64);
    println!("{} int64 {has64}", adapter.get_info().name);
    let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
        required_features: adapter.features() & wgpu::Features::SHADER_INT64,
        required_limits: adapter.limits(),
        ..Default::default()
    }))
    .unwrap();
    let bytes = N as u64 * 16;
    let mk = || {
        device.create_buffer(&wgpu::BufferDescriptor {
            label: None,
            size: bytes,
            usage: wgpu::BufferUsages::STORAGE
                | wgpu::BufferUsages::COPY_DST
                | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        })
    };
    let (y32, y64) = (mk(), mk());
    let data: Vec<f32> = (0..N * 4).map(|i| (i % 977) as f32 * 0.25 - 3.0).collect();
    let tex = probe::operand_texture(&device, &queue, &data);
    let view = tex.create_view(&Default::default());
    let common = "@group(0) @binding(0) var xt: texture_storage_2d<rgba32float, read>;\n";
    let src32 = format!(
        "{common}@group(0) @binding(1) var<storage, read_write> y: array<vec4<f32>>;
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) g: vec3<u32>) {{
    let i = g.y * 65536u + g.x;
    y[i] = 2.0 * textureLoad(xt, vec2<u32>(i % 1024u, i / 1024u));
}}"
    );
    let src64 = format!(
        "{common}@group(0) @binding(1) var<storage, read_write> y: array<vec2<u64>>;
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) g: vec3<u32>) {{
    let i = g.y * 65536u + g.x;
    let b = bitcast<vec4<u32>>(2.0 * textureLoad(xt, vec2<u32>(i % 1024u, i / 1024u)));
    y[i] = vec2<u64>(u64(b.x) | (u64(b.y) << 32u), u64(b.z) | (u64(b.w) << 32u));
}}"
    );
    // Two texels an invocation, half the grid: as two vec4<f32> stores, or one vec4<u64>.
    let src32x2 = format!(
        "{common}@group(0) @binding(1) var<storage, read_write> y: array<vec4<f32>>;
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) g: vec3<u32>) {{
    let i = g.y * 65536u + g.x;
    let t = (i / 64u) * 128u + i % 64u;
    let a = 2.0 * textureLoad(xt, vec2<u32>(t % 1024u, t / 1024u));
    let b = 2.0 * textureLoad(xt, vec2<u32>((t + 64u) % 1024u, (t + 64u) / 1024u));
    y[2u * i] = a;
    y[2u * i + 1u] = b;
}}"
    );
    let src64x4 = format!(
        "{common}@group(0) @binding(1) var<storage, read_write> y: array<vec4<u64>>;
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) g: vec3<u32>) {{
    let i = g.y * 65536u + g.x;
    let t = (i / 64u) * 128u + i % 64u;
    let a = bitcast<vec4<u32>>(2.0 * textureLoad(xt, vec2<u32>(t % 1024u, t / 1024u)));
    let b = bitcast<vec4<u32>>(2.0 * textureLoad(xt, vec2<u32>((t + 64u) % 1024u, (t + 64u) / 1024u)));
    y[i] = vec4<u64>(u64(a.x) | (u64(a.y) << 32u), u64(a.z) | (u64(a.w) << 32u),
                     u64(b.x) | (u64(b.y) << 32u), u64(b.z) | (u64(b.w) << 32u));
}}"
    );
    let mut runs = vec![("vec4<f32>", src32, &y32, 1u32)];
    if has64 {
        runs.push(("vec2<u64>", src64, &y64, 1));
    }
    runs.push(("2xvec4<f32>", src32x2, &y32, 2));
    if has64 {
        runs.push(("vec4<u64>", src64x4, &y64, 2));
    }
    let pipes: Vec<_> = runs
        .iter()
        .map(|(name, src, y, per)| {
            let pipe = probe::pipeline(&device, src);
            let bg = device.create_bind_group(&wgpu::BindGroupDescriptor {
                label: None,
                layout: &pipe.get_bind_group_layout(0),
                entries: &[
                    wgpu::BindGroupEntry {
                        binding: 0,
                        resource: wgpu::BindingResource::TextureView(&view),
                    },
                    wgpu::BindGroupEntry {
                        binding: 1,
                        resource: y.as_entire_binding(),
                    },
                ],
            });
            (*name, pipe, bg, *per)
        })
        .collect();
    let mut times = vec![Vec::new(); pipes.len()];
    for round in 0..13 {
        for (pi, (_, pipe, bg, per)) in pipes.iter().enumerate() {
            let mut enc = device.create_command_encoder(&Default::default());
            {
                let mut p = enc.begin_compute_pass(&Default::default());
                p.set_pipeline(pipe);
                p.set_bind_group(0, bg, &[]);
                p.dispatch_workgroups(1024 / per, N / 65536, 1);
            }
            let t0 = Instant::now();
            queue.submit([enc.finish()]);
            device.poll(wgpu::PollType::wait_indefinitely()).unwrap();
            if round >= 3 {
                times[pi].push(t0.elapsed().as_secs_f64() * 1e3);
            }
        }
    }
    for (pi, (name, _, _, _)) in pipes.iter().enumerate() {
        times[pi].sort_by(|a, b| a.partial_cmp(b).unwrap());
        println!("{name:<10} {:.2} ms", times[pi][times[pi].len() / 2]);
    }
    if has64 {
        let read = |b: &wgpu::Buffer| probe::read_bytes(&device, &queue, b, bytes);
        println!("same bytes: {}", read(&y32) == read(&y64));
    }
}
