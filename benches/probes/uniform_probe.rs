//! Probe: does a weight operand read from a uniform buffer at addresses the driver can prove
//! uniform (constants and uniforms only: the k loop unrolled, the column block a uniform)
//! make a GEMM-like kernel cheaper than reading it through a storage texture per lane? On
//! lavapipe such a load is one scalar load and a broadcast instead of a per-lane gather.
//! C[m, 16] = A[m, 40] B[16, 40]^T, 8 rows x 16 columns per invocation, m = 32768.
//! `cargo run --release --example uniform_probe`
use std::fmt::Write;
use std::time::Instant;

mod probe;

const M: u32 = 32768;
const K: u32 = 40;

fn main() {
    // lavapipe's threads, before any other thread starts (`gpu::cpu_driver_threads`).
    if let Some(n) = proxyless::gpu::cpu_driver_threads() {
        std::env::set_var("LP_NUM_THREADS", n);
    }
    let (device, queue) = probe::device();
    // A as a storage texture [M*K/4 texels] 1024 wide; B as texture and as uniform.
    let values = |texels: u32| -> Vec<f32> {
        (0..texels.div_ceil(1024) * 1024 * 4)
            .map(|i| ((i * 7919) % 1000) as f32 / 1000.0)
            .collect()
    };
    let at = probe::operand_texture(&device, &queue, &values(M * K / 4));
    let bt = probe::operand_texture(&device, &queue, &values(16 * K / 4));
    let ubo = device.create_buffer(&wgpu::BufferDescriptor {
        label: None,
        size: (16 * K * 4) as u64 + 256,
        usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    queue.write_buffer(
        &ubo,
        0,
        bytemuck::cast_slice(
            &(0..16 * K + 64)
                .map(|i| i as f32 / 640.0)
                .collect::<Vec<f32>>(),
        ),
    );
    let out = device.create_buffer(&wgpu::BufferDescriptor {
        label: None,
        size: (M * 16 * 4) as u64,
        usage: wgpu::BufferUsages::STORAGE,
        mapped_at_creation: false,
    });
    for variant in ["texture_b", "uniform_b", "texture_b_loop"] {
        let mut src = String::new();
        let _ = writeln!(
            src,
            "@group(0) @binding(0) var a: texture_storage_2d<rgba32float, read>;"
        );
        let _ = writeln!(
            src,
            "@group(0) @binding(1) var b: texture_storage_2d<rgba32float, read>;"
        );
        let _ = writeln!(
            src,
            "struct U {{ w: array<vec4<f32>, {}>, j0: u32 }}",
            16 * K / 4
        );
        let _ = writeln!(src, "@group(0) @binding(2) var<uniform> u: U;");
        let _ = writeln!(
            src,
            "@group(0) @binding(3) var<storage, read_write> c: array<vec4<f32>>;"
        );
        let _ = writeln!(src, "fn ld_a(t: u32) -> vec4<f32> {{ return textureLoad(a, vec2<u32>(t & 1023u, t >> 10u)); }}");
        let _ = writeln!(src, "fn ld_b(t: u32) -> vec4<f32> {{ return textureLoad(b, vec2<u32>(t & 1023u, t >> 10u)); }}");
        let _ = writeln!(src, "@compute @workgroup_size(64)\nfn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {{");
        let _ = writeln!(src, "    let g = wid.x * 64u + lid.x;");
        for r in 0..8 {
            let _ = writeln!(src, "    let ra{r} = (g * 8u + {r}u) * {}u;", K / 4);
            for c in 0..16 {
                let _ = writeln!(src, "    var acc{r}_{c} = 0.0;");
            }
        }
        let body = |src: &mut String, k: &str| {
            for r in 0..8 {
                let _ = writeln!(src, "        let a{r} = ld_a(ra{r} + {k});");
            }
            for c in 0..16 {
                let v = match variant {
                    "uniform_b" => format!("u.w[(u.j0 + {c}u) * {}u + {k}]", K / 4),
                    _ => format!("ld_b((u.j0 + {c}u) * {}u + {k})", K / 4),
                };
                let _ = writeln!(src, "        let b{c} = {v};");
            }
            for r in 0..8 {
                for c in 0..16 {
                    for t in 0..4 {
                        let _ = writeln!(
                            src,
                            "        acc{r}_{c} = fma(a{r}[{t}], b{c}[{t}], acc{r}_{c});"
                        );
                    }
                }
            }
        };
        if variant == "texture_b_loop" {
            let _ = writeln!(src, "    for (var k = 0u; k < {}u; k = k + 1u) {{", K / 4);
            body(&mut src, "k");
            let _ = writeln!(src, "    }}");
        } else {
            for k in 0..K / 4 {
                let _ = writeln!(src, "    {{");
                body(&mut src, &format!("{k}u"));
                let _ = writeln!(src, "    }}");
            }
        }
        for r in 0..8 {
            for cc in 0..4 {
                let _ = writeln!(
                    src,
                    "    c[(g * 8u + {r}u) * 4u + {cc}u] = vec4<f32>(acc{r}_{}, acc{r}_{}, acc{r}_{}, acc{r}_{});",
                    cc * 4, cc * 4 + 1, cc * 4 + 2, cc * 4 + 3
                );
            }
        }
        let _ = writeln!(src, "}}");
        let t0 = Instant::now();
        let pipe = probe::pipeline(&device, &src);
        let compile = t0.elapsed().as_secs_f64();
        let av = at.create_view(&Default::default());
        let bv = bt.create_view(&Default::default());
        let layout = pipe.get_bind_group_layout(0);
        let mut entries = vec![
            wgpu::BindGroupEntry {
                binding: 0,
                resource: wgpu::BindingResource::TextureView(&av),
            },
            wgpu::BindGroupEntry {
                binding: 2,
                resource: ubo.as_entire_binding(),
            },
            wgpu::BindGroupEntry {
                binding: 3,
                resource: out.as_entire_binding(),
            },
        ];
        if variant != "uniform_b" {
            entries.push(wgpu::BindGroupEntry {
                binding: 1,
                resource: wgpu::BindingResource::TextureView(&bv),
            });
        }
        let bg = device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: None,
            layout: &layout,
            entries: &entries,
        });
        let mut ts = vec![];
        for i in 0..23 {
            let mut enc = device.create_command_encoder(&Default::default());
            {
                let mut p = enc.begin_compute_pass(&Default::default());
                p.set_pipeline(&pipe);
                p.set_bind_group(0, &bg, &[]);
                p.dispatch_workgroups(M / 512, 1, 1);
            }
            let t0 = Instant::now();
            queue.submit([enc.finish()]);
            device.poll(wgpu::PollType::wait_indefinitely()).unwrap();
            if i >= 3 {
                ts.push(t0.elapsed().as_secs_f64());
            }
        }
        ts.sort_by(f64::total_cmp);
        let t = ts[ts.len() / 2];
        println!(
            "{variant:<16} {:.2} ms  {:.1} GFLOP/s  (compile {:.2} s)",
            t * 1e3,
            2.0 * (M * 16 * K) as f64 / t / 1e9,
            compile
        );
    }
}
