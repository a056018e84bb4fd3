//! Probe of the fixed cost of a dispatch on the adapter (raw wgpu): N dispatches of a kernel
//! that does nothing (one workgroup) with a bind group of a dynamic-offset uniform and three
//! storage buffers made for each dispatch, as `Gpu::dispatch_with` does, against one bind
//! group made once and reused, and the reused one with every binding read-only (no write, so
//! no barrier between dispatches). Prints the encoding time on this thread and the wall time to
//! the device's completion, medians of 7 runs after 2. `cargo run --release --example
//! dispatch_probe [N]`.
use std::time::Instant;

mod probe;

fn main() {
    // lavapipe's threads, before any other thread starts (`gpu::cpu_driver_threads`).
    if let Some(n) = proxyless::gpu::cpu_driver_threads() {
        std::env::set_var("LP_NUM_THREADS", n);
    }
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(1000);
    let (device, queue) = probe::device();
    let src = r#"
struct P { n: u32, pad0: u32, pad1: u32, pad2: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> c: array<f32>;
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) g: vec3<u32>) {
    if (g.x == p.n) { c[0] = a[0] + b[0]; }
}
"#;
    let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
        label: None,
        source: wgpu::ShaderSource::Wgsl(src.into()),
    });
    let src_ro = src
        .replace("read_write> c", "read> c")
        .replace("c[0] = a[0] + b[0];", "_ = a[0] + b[0] + c[0];");
    let module_ro = device.create_shader_module(wgpu::ShaderModuleDescriptor {
        label: None,
        source: wgpu::ShaderSource::Wgsl(src_ro.into()),
    });
    let layout = |c_read_only: bool| {
        device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: None,
            entries: &[
                layout_entry(0, wgpu::BufferBindingType::Uniform, true),
                layout_entry(
                    1,
                    wgpu::BufferBindingType::Storage { read_only: true },
                    false,
                ),
                layout_entry(
                    2,
                    wgpu::BufferBindingType::Storage { read_only: true },
                    false,
                ),
                layout_entry(
                    3,
                    wgpu::BufferBindingType::Storage {
                        read_only: c_read_only,
                    },
                    false,
                ),
            ],
        })
    };
    let pipeline = |bgl: &wgpu::BindGroupLayout, module: &wgpu::ShaderModule| {
        let pl = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: None,
            bind_group_layouts: &[Some(bgl)],
            immediate_size: 0,
        });
        device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: None,
            layout: Some(&pl),
            module,
            entry_point: Some("main"),
            compilation_options: Default::default(),
            cache: None,
        })
    };
    let bgl = layout(false);
    let bgl_ro = layout(true);
    let pipe = pipeline(&bgl, &module);
    let pipe_ro = pipeline(&bgl_ro, &module_ro);
    let ring = device.create_buffer(&wgpu::BufferDescriptor {
        label: None,
        size: 256 * 64,
        usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    let bufs: Vec<wgpu::Buffer> = (0..3)
        .map(|_| {
            device.create_buffer(&wgpu::BufferDescriptor {
                label: None,
                size: 1 << 20,
                usage: wgpu::BufferUsages::STORAGE,
                mapped_at_creation: false,
            })
        })
        .collect();
    let make = |bgl: &wgpu::BindGroupLayout| {
        let mut entries = vec![wgpu::BindGroupEntry {
            binding: 0,
            resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                buffer: &ring,
                offset: 0,
                size: wgpu::BufferSize::new(16),
            }),
        }];
        for (i, b) in bufs.iter().enumerate() {
            entries.push(wgpu::BindGroupEntry {
                binding: i as u32 + 1,
                resource: b.as_entire_binding(),
            });
        }
        device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: None,
            layout: bgl,
            entries: &entries,
        })
    };
    let reused = make(&bgl);
    let reused_ro = make(&bgl_ro);
    for variant in [
        "bind group per dispatch",
        "one bind group reused",
        "reused, nothing written",
    ] {
        let read_only = variant.starts_with("reused, nothing");
        let mut encode = vec![];
        let mut wall = vec![];
        for run in 0..9 {
            let t0 = Instant::now();
            let mut enc = device.create_command_encoder(&Default::default());
            {
                let mut pass = enc.begin_compute_pass(&Default::default());
                pass.set_pipeline(if read_only { &pipe_ro } else { &pipe });
                for i in 0..n {
                    let fresh;
                    let bg = if variant.starts_with("bind group per") {
                        fresh = make(&bgl);
                        &fresh
                    } else if read_only {
                        &reused_ro
                    } else {
                        &reused
                    };
                    pass.set_bind_group(0, bg, &[((i % 64) * 256) as u32]);
                    pass.dispatch_workgroups(1, 1, 1);
                }
            }
            let t1 = Instant::now();
            queue.submit([enc.finish()]);
            device
                .poll(wgpu::PollType::wait_indefinitely())
                .expect("device lost");
            let t2 = Instant::now();
            if run >= 2 {
                encode.push((t1 - t0).as_secs_f64());
                wall.push((t2 - t0).as_secs_f64());
            }
        }
        encode.sort_by(f64::total_cmp);
        wall.sort_by(f64::total_cmp);
        println!(
            "{variant:<25} encoding {:.1} us a dispatch, wall {:.1} us a dispatch",
            encode[3] * 1e6 / n as f64,
            wall[3] * 1e6 / n as f64
        );
    }
}

fn layout_entry(
    binding: u32,
    ty: wgpu::BufferBindingType,
    dynamic: bool,
) -> wgpu::BindGroupLayoutEntry {
    wgpu::BindGroupLayoutEntry {
        binding,
        visibility: wgpu::ShaderStages::COMPUTE,
        ty: wgpu::BindingType::Buffer {
            ty,
            has_dynamic_offset: dynamic,
            min_binding_size: None,
        },
        count: None,
    }
}
