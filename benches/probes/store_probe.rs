//! Probe of streaming-kernel costs on the adapter (raw wgpu, 4.7 M floats): a kernel's output
//! written to a storage buffer against a write-only storage texture, one texel per invocation
//! against a loop of 16, an empty kernel (launch and invocation overhead), a BN-normalise
//! pass as one texel per invocation (factors from a texture) against batchnorm.wgsl's loop
//! over rows and against 4 rows a lane unrolled (`bn_unroll4`), stores alone to the whole
//! buffer, to 64 Ki floats and after a load of the same line (`store_*`), lanes mapped to a
//! row's texels against lanes mapped to rows (`map_*`: how many lines an 8-lane store
//! touches), some of them with x read from a storage buffer (`buf_*`, see
//! `with_storage_loads`), the same passes as a render pass whose fragment shader writes an rgba32float
//! attachment (`frag_*`), and the buffer<->texture copies. Prints the median wall time of 10
//! runs after 3 and the process's CPU time over wall time (about 2 when both lavapipe threads
//! work). `cargo run --release --example store_probe`; PROBE_ONLY=name runs one kernel (any
//! frag_* name runs both fragment probes), PROBE_REPS=n changes the runs.
use std::time::Instant;

const N_TEXELS: u32 = 1024 * 1152; // 4.7 M floats, [32,32,32,144]

fn main() {
    // lavapipe's threads, before any other thread starts (`gpu::cpu_driver_threads`).
    if let Some(n) = proxyless::gpu::cpu_driver_threads() {
        std::env::set_var("LP_NUM_THREADS", n);
    }
    let inst = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
    let adapter =
        pollster::block_on(inst.request_adapter(&wgpu::RequestAdapterOptions::default())).unwrap();
    println!("{:?}", adapter.get_info().name);
    let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
        required_limits: adapter.limits(),
        ..Default::default()
    }))
    .unwrap();
    let bytes = N_TEXELS as u64 * 16;
    let buf = |usage| {
        device.create_buffer(&wgpu::BufferDescriptor {
            label: None,
            size: bytes,
            usage,
            mapped_at_creation: false,
        })
    };
    let sb =
        wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST | wgpu::BufferUsages::COPY_SRC;
    let xb = buf(sb);
    let yb = buf(sb);
    queue.write_buffer(
        &xb,
        0,
        bytemuck::cast_slice(
            &(0..N_TEXELS * 4)
                .map(|i| (i % 97) as f32)
                .collect::<Vec<f32>>(),
        ),
    );
    let tex = || {
        device.create_texture(&wgpu::TextureDescriptor {
            label: None,
            size: wgpu::Extent3d {
                width: 1024,
                height: N_TEXELS / 1024,
                depth_or_array_layers: 1,
            },
            mip_level_count: 1,
            sample_count: 1,
            dimension: wgpu::TextureDimension::D2,
            format: wgpu::TextureFormat::Rgba32Float,
            usage: wgpu::TextureUsages::STORAGE_BINDING
                | wgpu::TextureUsages::TEXTURE_BINDING
                | wgpu::TextureUsages::RENDER_ATTACHMENT
                | wgpu::TextureUsages::COPY_DST
                | wgpu::TextureUsages::COPY_SRC,
            view_formats: &[],
        })
    };
    let xt = tex();
    let yt = tex();
    let xtv = xt.create_view(&Default::default());
    let ptex = device.create_texture(&wgpu::TextureDescriptor {
        label: None,
        size: wgpu::Extent3d {
            width: 128,
            height: 1,
            depth_or_array_layers: 1,
        },
        mip_level_count: 1,
        sample_count: 1,
        dimension: wgpu::TextureDimension::D2,
        format: wgpu::TextureFormat::Rgba32Float,
        usage: wgpu::TextureUsages::TEXTURE_BINDING | wgpu::TextureUsages::COPY_DST,
        view_formats: &[],
    });
    let ptv = ptex.create_view(&Default::default());
    let pbuf = device.create_buffer(&wgpu::BufferDescriptor {
        label: None,
        size: 128 * 16,
        usage: wgpu::BufferUsages::STORAGE,
        mapped_at_creation: false,
    });
    let ytv = yt.create_view(&Default::default());
    let src = r#"
@group(0) @binding(0) var xt: texture_storage_2d<rgba32float, read>;
@group(0) @binding(1) var<storage, read_write> yb: array<vec4<f32>>;
@group(0) @binding(2) var yt: texture_storage_2d<rgba32float, write>;
@group(0) @binding(3) var<storage, read> xb: array<vec4<f32>>;
@compute @workgroup_size(64)
fn tex_to_buf(@builtin(global_invocation_id) g: vec3<u32>) {
    let i = g.y * 65536u + g.x;
    let v = textureLoad(xt, vec2<u32>(i % 1024u, i / 1024u));
    yb[i] = 2.0 * v;
}
@compute @workgroup_size(64)
fn tex_to_tex(@builtin(global_invocation_id) g: vec3<u32>) {
    let i = g.y * 65536u + g.x;
    let c = vec2<u32>(i % 1024u, i / 1024u);
    textureStore(yt, c, 2.0 * textureLoad(xt, c));
}
@compute @workgroup_size(8, 8)
fn tex_to_tex_2d(@builtin(global_invocation_id) g: vec3<u32>) {
    let c = g.xy;
    textureStore(yt, c, 2.0 * textureLoad(xt, c));
}
@compute @workgroup_size(64)
fn empty(@builtin(global_invocation_id) g: vec3<u32>) {
    if (g.x == 0xffffffffu) { yb[0] = vec4<f32>(1.0); }
}
// 16 texels per invocation: lane l of workgroup w takes texels w*1024 + j*64 + l
@compute @workgroup_size(64)
fn tex_to_buf16(@builtin(workgroup_id) w: vec3<u32>, @builtin(local_invocation_id) l: vec3<u32>) {
    let base = (w.y * 1024u + w.x) * 1024u + l.x;
    for (var j = 0u; j < 16u; j = j + 1u) {
        let i = base + j * 64u;
        let v = textureLoad(xt, vec2<u32>(i % 1024u, i / 1024u));
        yb[i] = 2.0 * v;
    }
}
@compute @workgroup_size(64)
fn tex_to_tex16(@builtin(workgroup_id) w: vec3<u32>, @builtin(local_invocation_id) l: vec3<u32>) {
    let base = (w.y * 1024u + w.x) * 1024u + l.x;
    for (var j = 0u; j < 16u; j = j + 1u) {
        let i = base + j * 64u;
        let c = vec2<u32>(i % 1024u, i / 1024u);
        textureStore(yt, c, 2.0 * textureLoad(xt, c));
    }
}
@group(0) @binding(4) var pt: texture_2d<f32>;
@group(0) @binding(5) var<storage, read> pb: array<vec4<f32>>;
// BN-normalise style, one texel per invocation, per-channel factors fetched from a texture.
@compute @workgroup_size(64)
fn bn_flat(@builtin(global_invocation_id) g: vec3<u32>) {
    let i = g.y * 65536u + g.x;
    let c = i % 36u;
    let mu = textureLoad(pt, vec2<u32>(c, 0u), 0);
    let sc = textureLoad(pt, vec2<u32>(c + 36u, 0u), 0);
    let sh = textureLoad(pt, vec2<u32>(c + 72u, 0u), 0);
    let v = textureLoad(xt, vec2<u32>(i % 1024u, i / 1024u));
    yb[i] = clamp(fma(v - mu, sc, sh), vec4<f32>(0.0), vec4<f32>(6.0));
}
// BN-normalise style as batchnorm.wgsl: lane = channel group (36 of 64 lanes), loop over a
// chunk of 64 rows; factors from storage, once per lane.
@compute @workgroup_size(64)
fn bn_loop(@builtin(workgroup_id) w: vec3<u32>, @builtin(local_invocation_id) l: vec3<u32>) {
    if (l.x >= 36u) { return; }
    let c = l.x;
    let mu = pb[c];
    let sc = pb[c + 36u];
    let sh = pb[c + 72u];
    let r0 = (w.y * 256u + w.x) * 64u;
    for (var r = r0; r < r0 + 64u; r = r + 1u) {
        let i = r * 36u + c;
        let v = textureLoad(xt, vec2<u32>(i % 1024u, i / 1024u));
        yb[i] = clamp(fma(v - mu, sc, sh), vec4<f32>(0.0), vec4<f32>(6.0));
    }
}
// bn_loop with 4 rows per lane, a constant count (NIR unrolls it: the stores leave the loop).
@compute @workgroup_size(64)
fn bn_unroll4(@builtin(workgroup_id) w: vec3<u32>, @builtin(local_invocation_id) l: vec3<u32>) {
    if (l.x >= 36u) { return; }
    let c = l.x;
    let mu = pb[c];
    let sc = pb[c + 36u];
    let sh = pb[c + 72u];
    let r0 = (w.y * 4096u + w.x) * 4u;
    for (var j = 0u; j < 4u; j = j + 1u) {
        let i = (r0 + j) * 36u + c;
        let v = textureLoad(xt, vec2<u32>(i % 1024u, i / 1024u));
        yb[i] = clamp(fma(v - mu, sc, sh), vec4<f32>(0.0), vec4<f32>(6.0));
    }
}
// Stores only: to the whole 4.7 M-float buffer, to 64 Ki floats (the same lines again and
// again, in cache), and to the whole buffer after a load of the same line (cache primed).
@compute @workgroup_size(64)
fn store_big(@builtin(global_invocation_id) g: vec3<u32>) {
    let i = g.y * 65536u + g.x;
    yb[i] = vec4<f32>(f32(i));
}
@compute @workgroup_size(64)
fn store_small(@builtin(global_invocation_id) g: vec3<u32>) {
    let i = g.y * 65536u + g.x;
    yb[i % 16384u] = vec4<f32>(f32(i));
}
@compute @workgroup_size(64)
fn store_primed(@builtin(global_invocation_id) g: vec3<u32>) {
    let i = g.y * 65536u + g.x;
    let old = yb[i];
    yb[i] = select(vec4<f32>(f32(i)), old, old.x == 1.5e30);
}
// Which lanes write which lines: 36 texels a row (144 channels), 32768 rows (the 4.7 M
// floats). map_cols: lane = texel of the row (36 of 64 lanes), loop over 64 rows a workgroup
// (the BN kernels' layout: a batch of 8 lanes writes 2 lines a row); map_rows: lane = row,
// 4 consecutive texels (one line) a lane, loop over the row's 9 lines in 9 workgroups.
@compute @workgroup_size(64)
fn map_cols(@builtin(workgroup_id) w: vec3<u32>, @builtin(local_invocation_id) l: vec3<u32>) {
    if (l.x >= 36u) { return; }
    let r0 = (w.y * 256u + w.x) * 64u;
    for (var r = r0; r < r0 + 64u; r = r + 1u) {
        let i = r * 36u + l.x;
        yb[i] = 2.0 * textureLoad(xt, vec2<u32>(i % 1024u, i / 1024u));
    }
}
@compute @workgroup_size(64)
fn map_rows(@builtin(workgroup_id) w: vec3<u32>, @builtin(local_invocation_id) l: vec3<u32>) {
    let r = w.y * 64u + l.x;
    let g0 = w.x * 4u;
    for (var t = 0u; t < 4u; t = t + 1u) {
        let i = r * 36u + g0 + t;
        yb[i] = 2.0 * textureLoad(xt, vec2<u32>(i % 1024u, i / 1024u));
    }
}
@compute @workgroup_size(64)
fn map_rows_loop(@builtin(workgroup_id) w: vec3<u32>, @builtin(local_invocation_id) l: vec3<u32>) {
    let g0 = w.x * 4u;
    for (var r = w.y * 512u + l.x; r < w.y * 512u + 512u; r = r + 64u) {
        for (var t = 0u; t < 4u; t = t + 1u) {
            let i = r * 36u + g0 + t;
            yb[i] = 2.0 * textureLoad(xt, vec2<u32>(i % 1024u, i / 1024u));
        }
    }
}
@compute @workgroup_size(64)
fn buf_to_buf(@builtin(global_invocation_id) g: vec3<u32>) {
    let i = g.y * 65536u + g.x;
    yb[i] = 2.0 * xb[i];
}
"#;
    let src = with_storage_loads(src, &["map_cols", "map_rows", "bn_unroll4"]);
    let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
        label: None,
        source: wgpu::ShaderSource::Wgsl(src.into()),
    });
    let entries = [
        "bn_flat",
        "bn_loop",
        "map_cols",
        "map_rows",
        "map_rows_loop",
        "store_big",
        "store_small",
        "store_primed",
        "bn_unroll4",
        "empty",
        "tex_to_buf16",
        "tex_to_tex16",
        "tex_to_buf",
        "tex_to_tex",
        "tex_to_tex_2d",
        "buf_to_buf",
        "buf_map_cols",
        "buf_map_rows",
        "buf_bn_unroll4",
    ];
    let groups1 = [1024u32, N_TEXELS / 65536, 1];
    let only = std::env::var("PROBE_ONLY").ok();
    for e in entries {
        if only.as_deref().is_some_and(|o| o != e) {
            continue;
        }
        let pipe = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: None,
            layout: None,
            module: &module,
            entry_point: Some(e),
            compilation_options: Default::default(),
            cache: None,
        });
        let layout = pipe.get_bind_group_layout(0);
        let mut ents = vec![];
        let src = r#""#;
        let _ = src;
        match e {
            "tex_to_buf" | "tex_to_buf16" | "map_cols" | "map_rows" | "map_rows_loop" => {
                ents.push(wgpu::BindGroupEntry {
                    binding: 0,
                    resource: wgpu::BindingResource::TextureView(&xtv),
                });
                ents.push(wgpu::BindGroupEntry {
                    binding: 1,
                    resource: yb.as_entire_binding(),
                });
            }
            "empty" | "store_big" | "store_small" | "store_primed" => {
                ents.push(wgpu::BindGroupEntry {
                    binding: 1,
                    resource: yb.as_entire_binding(),
                });
            }
            "bn_flat" => {
                ents.push(wgpu::BindGroupEntry {
                    binding: 0,
                    resource: wgpu::BindingResource::TextureView(&xtv),
                });
                ents.push(wgpu::BindGroupEntry {
                    binding: 1,
                    resource: yb.as_entire_binding(),
                });
                ents.push(wgpu::BindGroupEntry {
                    binding: 4,
                    resource: wgpu::BindingResource::TextureView(&ptv),
                });
            }
            "bn_loop" | "bn_unroll4" => {
                ents.push(wgpu::BindGroupEntry {
                    binding: 0,
                    resource: wgpu::BindingResource::TextureView(&xtv),
                });
                ents.push(wgpu::BindGroupEntry {
                    binding: 1,
                    resource: yb.as_entire_binding(),
                });
                ents.push(wgpu::BindGroupEntry {
                    binding: 5,
                    resource: pbuf.as_entire_binding(),
                });
            }
            "buf_to_buf" | "buf_map_cols" | "buf_map_rows" | "buf_bn_unroll4" => {
                ents.push(wgpu::BindGroupEntry {
                    binding: 3,
                    resource: xb.as_entire_binding(),
                });
                if e == "buf_bn_unroll4" {
                    ents.push(wgpu::BindGroupEntry {
                        binding: 5,
                        resource: pbuf.as_entire_binding(),
                    });
                }
                ents.push(wgpu::BindGroupEntry {
                    binding: 1,
                    resource: yb.as_entire_binding(),
                });
            }
            _ => {
                ents.push(wgpu::BindGroupEntry {
                    binding: 0,
                    resource: wgpu::BindingResource::TextureView(&xtv),
                });
                ents.push(wgpu::BindGroupEntry {
                    binding: 2,
                    resource: wgpu::BindingResource::TextureView(&ytv),
                });
            }
        }
        let bg = device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: None,
            layout: &layout,
            entries: &ents,
        });
        let groups = match e {
            "bn_loop" | "map_cols" | "buf_map_cols" => [256, 2, 1],
            "map_rows" | "buf_map_rows" => [9, 512, 1],
            "map_rows_loop" => [9, 64, 1],
            "bn_unroll4" | "buf_bn_unroll4" => [4096, 2, 1],
            "tex_to_tex_2d" => [1024 / 8, N_TEXELS / 1024 / 8, 1],
            _ if e.ends_with("16") => [1024, N_TEXELS / 1024 / 1024, 1],
            _ => groups1,
        };
        let t = median(&device, &queue, |enc| {
            let mut p = enc.begin_compute_pass(&Default::default());
            p.set_pipeline(&pipe);
            p.set_bind_group(0, &bg, &[]);
            p.dispatch_workgroups(groups[0], groups[1], groups[2]);
        });
        println!(
            "{e:<14} {:.2} ms  ({:.2} ns/float)",
            t * 1e3,
            t * 1e9 / (N_TEXELS as f64 * 4.0)
        );
    }
    if only.as_deref().is_none_or(|o| o.starts_with("frag")) {
        fragment_probes(&device, &queue, &xtv, &ytv);
    }
    let t = median(&device, &queue, |enc| {
        enc.copy_buffer_to_texture(
            wgpu::TexelCopyBufferInfo {
                buffer: &xb,
                layout: wgpu::TexelCopyBufferLayout {
                    offset: 0,
                    bytes_per_row: Some(1024 * 16),
                    rows_per_image: None,
                },
            },
            xt.as_image_copy(),
            wgpu::Extent3d {
                width: 1024,
                height: N_TEXELS / 1024,
                depth_or_array_layers: 1,
            },
        );
    });
    println!("buf->tex copy  {:.2} ms", t * 1e3);
    let t = median(&device, &queue, |enc| {
        enc.copy_texture_to_buffer(
            yt.as_image_copy(),
            wgpu::TexelCopyBufferInfo {
                buffer: &yb,
                layout: wgpu::TexelCopyBufferLayout {
                    offset: 0,
                    bytes_per_row: Some(1024 * 16),
                    rows_per_image: None,
                },
            },
            wgpu::Extent3d {
                width: 1024,
                height: N_TEXELS / 1024,
                depth_or_array_layers: 1,
            },
        );
    });
    println!("tex->buf copy  {:.2} ms", t * 1e3);
    let t = median(&device, &queue, |enc| {
        enc.copy_buffer_to_buffer(&xb, 0, &yb, 0, bytes);
    });
    println!("buf->buf copy  {:.2} ms", t * 1e3);
}

/// The same y = 2x pass as a render pass: a full-target triangle whose fragment shader reads
/// x's texel at its pixel and returns 2x as the colour of an rgba32float attachment, so the
/// driver's fragment back end writes the output instead of per-lane storage stores.
/// `frag_to_tex` reads x as a sampled texture; `frag_bn` does the BN-normalise arithmetic as
/// well, its per-channel factors read from x's own texture (a fetch costs the same wherever).
fn fragment_probes(
    device: &wgpu::Device,
    queue: &wgpu::Queue,
    xtv: &wgpu::TextureView,
    ytv: &wgpu::TextureView,
) {
    let src = r#"
@group(0) @binding(0) var xt: texture_2d<f32>;
@vertex
fn cover(@builtin(vertex_index) v: u32) -> @builtin(position) vec4<f32> {
    // One triangle that covers the whole target.
    let p = vec2<f32>(f32((v << 1u) & 2u), f32(v & 2u));
    return vec4<f32>(p * 2.0 - 1.0, 0.0, 1.0);
}
@fragment
fn frag_to_tex(@builtin(position) pos: vec4<f32>) -> @location(0) vec4<f32> {
    return 2.0 * textureLoad(xt, vec2<u32>(pos.xy), 0);
}
@fragment
fn frag_bn(@builtin(position) pos: vec4<f32>) -> @location(0) vec4<f32> {
    let c = vec2<u32>(pos.xy);
    let ch = (c.y * 1024u + c.x) % 36u;
    let mu = textureLoad(xt, vec2<u32>(ch, 0u), 0);
    let sc = textureLoad(xt, vec2<u32>(ch + 36u, 0u), 0);
    let sh = textureLoad(xt, vec2<u32>(ch + 72u, 0u), 0);
    return clamp(fma(textureLoad(xt, c, 0) - mu, sc, sh), vec4<f32>(0.0), vec4<f32>(6.0));
}
"#;
    let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
        label: None,
        source: wgpu::ShaderSource::Wgsl(src.into()),
    });
    for e in ["frag_to_tex", "frag_bn"] {
        let pipe = device.create_render_pipeline(&wgpu::RenderPipelineDescriptor {
            label: None,
            layout: None,
            vertex: wgpu::VertexState {
                module: &module,
                entry_point: Some("cover"),
                compilation_options: Default::default(),
                buffers: &[],
            },
            primitive: Default::default(),
            depth_stencil: None,
            multisample: Default::default(),
            fragment: Some(wgpu::FragmentState {
                module: &module,
                entry_point: Some(e),
                compilation_options: Default::default(),
                targets: &[Some(wgpu::ColorTargetState {
                    format: wgpu::TextureFormat::Rgba32Float,
                    blend: None,
                    write_mask: wgpu::ColorWrites::ALL,
                })],
            }),
            multiview_mask: None,
            cache: None,
        });
        let bg = device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: None,
            layout: &pipe.get_bind_group_layout(0),
            entries: &[wgpu::BindGroupEntry {
                binding: 0,
                resource: wgpu::BindingResource::TextureView(xtv),
            }],
        });
        let t = median(device, queue, |enc| {
            let mut p = enc.begin_render_pass(&wgpu::RenderPassDescriptor {
                label: None,
                color_attachments: &[Some(wgpu::RenderPassColorAttachment {
                    view: ytv,
                    depth_slice: None,
                    resolve_target: None,
                    ops: wgpu::Operations {
                        load: wgpu::LoadOp::Load,
                        store: wgpu::StoreOp::Store,
                    },
                })],
                ..Default::default()
            });
            p.set_pipeline(&pipe);
            p.set_bind_group(0, &bg, &[]);
            p.draw(0..3, 0..1);
        });
        println!(
            "{e:<14} {:.2} ms  ({:.2} ns/float)",
            t * 1e3,
            t * 1e9 / (N_TEXELS as f64 * 4.0)
        );
    }
}

fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let rest = stat.rsplit(')').next().unwrap_or("");
    rest.split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|v| v.parse::<f64>().ok())
        .sum::<f64>()
        / 100.0
}

fn median(
    device: &wgpu::Device,
    queue: &wgpu::Queue,
    f: impl Fn(&mut wgpu::CommandEncoder),
) -> f64 {
    let c0 = cpu_seconds();
    let mut ts = vec![];
    let reps: usize = std::env::var("PROBE_REPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(13);
    for i in 0..reps {
        let mut enc = device.create_command_encoder(&Default::default());
        f(&mut enc);
        let t0 = Instant::now();
        queue.submit([enc.finish()]);
        device.poll(wgpu::PollType::wait_indefinitely()).unwrap();
        if i >= 3 {
            ts.push(t0.elapsed().as_secs_f64());
        }
    }
    ts.sort_by(f64::total_cmp);
    let wall: f64 = ts.iter().sum();
    print!(
        "[cpu/wall {:.2}] ",
        (cpu_seconds() - c0) / (wall * reps as f64 / (reps - 3) as f64)
    );
    ts[ts.len() / 2]
}

/// `src` with a copy of each entry point in `names` renamed `buf_NAME` that reads x from the
/// storage buffer `xb` where the original reads the texture: the same code but for the load
/// (a load inside a real loop in map_cols, in a constant-count loop NIR unrolls in map_rows and
/// bn_unroll4, with lanes on different rows).
fn with_storage_loads(src: &str, names: &[&str]) -> String {
    let mut out = src.to_string();
    for name in names {
        let head = format!("@compute @workgroup_size(64)\nfn {name}(");
        let start = src.find(&head).expect("entry point in the probe source");
        let len = src[start..].find("\n}\n").expect("end of the entry point") + 3;
        out += &src[start..start + len]
            .replace(&format!("fn {name}("), &format!("fn buf_{name}("))
            .replace("textureLoad(xt, vec2<u32>(i % 1024u, i / 1024u))", "xb[i]");
    }
    out
}
