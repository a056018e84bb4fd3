use proxyless::gpu::Gpu;
const SRC: &str = r#"
@group(0) @binding(0) var t: texture_2d<f32>;
@group(0) @binding(1) var<storage, read_write> o: array<vec4<f32>>;
@compute @workgroup_size(64)
fn tex_lane(@builtin(global_invocation_id) gid: vec3<u32>) {
    var acc = vec4<f32>();
    for (var k = 0u; k < 256u; k++) {
        let i = (k * 64u + gid.x) & 1048575u;
        acc += textureLoad(t, vec2<u32>(i & 1023u, i >> 10u), 0);
    }
    o[gid.x] = acc;
}
@compute @workgroup_size(64)
fn tex_scale(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x;
    o[i] = 2.0 * textureLoad(t, vec2<u32>(i & 1023u, i >> 10u), 0);
}
"#;
fn main() -> anyhow::Result<()> {
    let gpu = Gpu::new(&Default::default())?;
    let d = &gpu.device;
    let tex = d.create_texture(&wgpu::TextureDescriptor {
        label: None,
        size: wgpu::Extent3d {
            width: 1024,
            height: 1024,
            depth_or_array_layers: 1,
        },
        mip_level_count: 1,
        sample_count: 1,
        dimension: wgpu::TextureDimension::D2,
        format: wgpu::TextureFormat::Rgba32Float,
        usage: wgpu::TextureUsages::TEXTURE_BINDING | wgpu::TextureUsages::COPY_DST,
        view_formats: &[],
    });
    let view = tex.create_view(&Default::default());
    let src = gpu.upload(&vec![1.0f32; 1 << 22], &[1 << 22])?;
    let o = gpu.empty(&[1 << 22]);
    let module = d.create_shader_module(wgpu::ShaderModuleDescriptor {
        label: None,
        source: wgpu::ShaderSource::Wgsl(SRC.into()),
    });
    for (entry, groups) in [("tex_lane", 1024u32), ("tex_scale", 16384)] {
        let p = d.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: None,
            layout: None,
            module: &module,
            entry_point: Some(entry),
            compilation_options: Default::default(),
            cache: None,
        });
        let bg = d.create_bind_group(&wgpu::BindGroupDescriptor {
            label: None,
            layout: &p.get_bind_group_layout(0),
            entries: &[
                wgpu::BindGroupEntry {
                    binding: 0,
                    resource: wgpu::BindingResource::TextureView(&view),
                },
                wgpu::BindGroupEntry {
                    binding: 1,
                    resource: o.raw().as_entire_binding(),
                },
            ],
        });
        let run = |copy: bool| {
            let mut enc = d.create_command_encoder(&Default::default());
            if copy {
                enc.copy_buffer_to_texture(
                    wgpu::TexelCopyBufferInfo {
                        buffer: src.raw(),
                        layout: wgpu::TexelCopyBufferLayout {
                            offset: 0,
                            bytes_per_row: Some(1024 * 16),
                            rows_per_image: None,
                        },
                    },
                    wgpu::TexelCopyTextureInfo {
                        texture: &tex,
                        mip_level: 0,
                        origin: wgpu::Origin3d::ZERO,
                        aspect: wgpu::TextureAspect::All,
                    },
                    wgpu::Extent3d {
                        width: 1024,
                        height: 1024,
                        depth_or_array_layers: 1,
                    },
                );
            } else {
                let mut pass = enc.begin_compute_pass(&Default::default());
                pass.set_pipeline(&p);
                pass.set_bind_group(0, &bg, &[]);
                pass.dispatch_workgroups(groups, 1, 1);
            }
            gpu.queue.submit([enc.finish()]);
            Ok(())
        };
        let t = gpu.time_median(1, 5, || run(false))?;
        let c = gpu.time_median(1, 5, || run(true))?;
        println!(
            "{entry}: {:.2} ms; copy 16 MB buffer->texture {:.2} ms",
            t.as_secs_f64() * 1e3,
            c.as_secs_f64() * 1e3
        );
    }
    Ok(())
}
