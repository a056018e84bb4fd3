//! Temporary: store-cost microbenchmarks on lavapipe.
use proxyless::gpu::{Access, Gpu, GpuOptions, KernelSpec};

const SRC: &str = r#"
struct Params { a: u32, b: u32, c: u32, d: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;
@group(0) @binding(2) var<storage, read_write> dst4: array<vec4<f32>>;

@compute @workgroup_size(64)
fn st1_loop(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let base = wid.x * 4096u + lid.x;
    let v = f32(lid.x);
    for (var i = 0u; i < p.a; i = i + 1u) {
{{ST1}}
    }
}
@compute @workgroup_size(64)
fn st1_loop_if(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let base = wid.x * 4096u + lid.x;
    let v = f32(lid.x);
    for (var i = 0u; i < p.a; i = i + 1u) {
{{ST1IF}}
    }
}
@compute @workgroup_size(64)
fn st4_loop(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let base = wid.x * 1024u + lid.x;
    let v = vec4<f32>(f32(lid.x));
    for (var i = 0u; i < p.a; i = i + 1u) {
{{ST4}}
    }
}
@compute @workgroup_size(64)
fn st4_loop_if(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let base = wid.x * 1024u + lid.x;
    let v = vec4<f32>(f32(lid.x));
    for (var i = 0u; i < p.a; i = i + 1u) {
{{ST4IF}}
    }
}
@compute @workgroup_size(64)
fn st4_top(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let base = wid.x * 1024u + lid.x;
    let v = vec4<f32>(f32(lid.x));
    let i = 0u;
{{ST4}}
}
"#;

fn cpu_ns() -> u64 {
    let mut t = 0;
    if let Ok(dir) = std::fs::read_dir("/proc/self/task") {
        for e in dir.flatten() {
            if let Ok(s) = std::fs::read_to_string(e.path().join("schedstat")) {
                t += s
                    .split_whitespace()
                    .next()
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0);
            }
        }
    }
    t
}

fn main() -> anyhow::Result<()> {
    let gpu = Gpu::new(&GpuOptions::default())?;
    let mut st1 = String::new();
    let mut st1if = String::new();
    let mut st4 = String::new();
    let mut st4if = String::new();
    for j in 0..16 {
        st1 += &format!("        dst[base + (i * 16u + {j}u) * 64u % 4096u] = v;\n");
        st1if += &format!(
            "        if (i + {j}u < p.b) {{ dst[base + (i * 16u + {j}u) * 64u % 4096u] = v; }}\n"
        );
        st4 += &format!("        dst4[base + (i * 16u + {j}u) * 64u % 1024u] = v;\n");
        st4if += &format!(
            "        if (i + {j}u < p.b) {{ dst4[base + (i * 16u + {j}u) * 64u % 1024u] = v; }}\n"
        );
    }
    let vals = vec![
        ("ST1", st1),
        ("ST1IF", st1if),
        ("ST4", st4),
        ("ST4IF", st4if),
    ];
    let groups = 2048u32;
    let x = gpu.upload(&vec![1.0f32; 16], &[16])?;
    let y = gpu.empty(&[groups as usize * 4096]);
    let iters = 4u32;
    for (entry, stores) in [
        ("st1_loop", 16 * iters),
        ("st1_loop_if", 16 * iters),
        ("st4_loop", 16 * iters),
        ("st4_loop_if", 16 * iters),
        ("st4_top", 16),
    ] {
        let spec = KernelSpec {
            file: "micro",
            source: SRC,
            entry,
            bindings: &[Access::Read, Access::ReadWrite],
        };
        let k = gpu.kernel(&spec, &vals)?;
        let params = [iters, 1000, 0, 0];
        gpu.time_median(2, 3, || {
            gpu.dispatch(&k, &params, &[&x.buf, &y.buf], [groups, 1, 1])
        })?;
        let c0 = cpu_ns();
        for _ in 0..5 {
            gpu.dispatch(&k, &params, &[&x.buf, &y.buf], [groups, 1, 1])?;
            gpu.sync()?;
        }
        let cpu = (cpu_ns() - c0) as f64 / 5.0;
        let simd_ops = groups as u64 * 8 * stores as u64;
        println!(
            "{entry:16} cpu {:8.2} ms {:6.1} cpu ns per SIMD-8 store",
            cpu / 1e6,
            cpu / simd_ops as f64
        );
    }
    Ok(())
}
