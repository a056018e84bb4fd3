//! Temporary: load-cost microbenchmarks on lavapipe.
use proxyless::gpu::{Access, Gpu, GpuOptions, KernelSpec};

const SRC: &str = r#"
struct Params { a: u32, b: u32, c: u32, d: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;
@group(0) @binding(1) var<storage, read> src4: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> dst4: array<vec4<f32>>;

@compute @workgroup_size(64)
fn lane_loop(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let base = wid.x * 4096u + lid.x;
    var acc = 0.0;
    for (var i = 0u; i < p.a; i = i + 1u) {
        acc = acc + src[base + i * 64u];
    }
    dst[wid.x * 64u + lid.x] = acc;
}
@compute @workgroup_size(64)
fn uni_loop(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let base = wid.x * 4096u;
    var acc = 0.0;
    for (var i = 0u; i < p.a; i = i + 1u) {
        acc = fma(acc, 1.0001, src[base + i * 64u]);
    }
    dst[wid.x * 64u + lid.x] = acc;
}
@compute @workgroup_size(64)
fn uni_unrolled(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let base = wid.x * 4096u;
    var acc = 0.0;
{{UNI}}
    dst[wid.x * 64u + lid.x] = acc;
}
@compute @workgroup_size(64)
fn lane_unrolled(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let base = wid.x * 4096u + lid.x;
    var acc = 0.0;
{{LANE}}
    dst[wid.x * 64u + lid.x] = acc;
}
@compute @workgroup_size(64)
fn lane4_unrolled(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let base = wid.x * 1024u + lid.x;
    var acc = vec4<f32>(0.0);
{{LANE4}}
    dst4[wid.x * 64u + lid.x] = acc;
}
@compute @workgroup_size(64)
fn uni_unrolled_in_loop(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    var acc = 0.0;
    for (var j = 0u; j < p.b; j = j + 1u) {
    let base = wid.x * 4096u + j * 64u;
{{UNI}}
    }
    dst[wid.x * 64u + lid.x] = acc;
}
@compute @workgroup_size(64)
fn alu(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    var a0 = f32(lid.x); var a1 = a0 + 1.0; var a2 = a0 + 2.0; var a3 = a0 + 3.0;
    var b0 = f32(lid.x); var b1 = a0 + 1.0; var b2 = a0 + 2.0; var b3 = a0 + 3.0;
    var c0 = f32(lid.x); var c1 = a0 + 1.0; var c2 = a0 + 2.0; var c3 = a0 + 3.0;
    var d0 = f32(lid.x); var d1 = a0 + 1.0; var d2 = a0 + 2.0; var d3 = a0 + 3.0;
    let m = p.c;
{{ALU}}
    dst[wid.x * 64u + lid.x] = a0 + a1 + a2 + a3 + b0 + b1 + b2 + b3 + c0 + c1 + c2 + c3 + d0 + d1 + d2 + d3;
}
@compute @workgroup_size(64)
fn stores(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let base = wid.x * 4096u + lid.x;
    let v = f32(lid.x);
{{STORE}}
}
"#;

fn spec(entry: &'static str, rw4: bool) -> KernelSpec {
    let _ = rw4;
    KernelSpec {
        file: "micro",
        source: SRC,
        entry,
        bindings: &[Access::Read, Access::ReadWrite],
    }
}

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
    let mut uni = String::new();
    let mut lane = String::new();
    let mut lane4 = String::new();
    let mut store = String::new();
    let nu: usize = std::env::var("N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64);
    for i in 0..nu {
        uni += &format!(
            "    acc = fma(acc, 1.0001, src[base + {}u]);\n",
            (i % 64) * 64
        );
        lane += &format!("    acc = acc + src[base + {}u];\n", (i % 64) * 64);
        store += &format!("    dst[base + {}u] = v;\n", (i % 64) * 64);
    }
    for i in 0..16 {
        lane4 += &format!("    acc = acc + src4[base + {}u];\n", i * 64);
    }
    let mut alu = String::new();
    for _ in 0..nu {
        for v in ["a", "b", "c", "d"] {
            for i in 0..4 {
                alu += &format!("    {v}{i} = fma({v}{i}, 1.0001, 0.5);\n");
            }
        }
    }
    let vals = vec![
        ("ALU", alu),
        ("UNI", uni),
        ("LANE", lane),
        ("LANE4", lane4),
        ("STORE", store),
    ];
    let groups = 2048u32;
    let x = gpu.upload(
        &vec![1.0f32; groups as usize * 4096],
        &[groups as usize * 4096],
    )?;
    let y = gpu.empty(&[groups as usize * 4096]);
    for (entry, loads_per_inv, params) in [
        ("lane_loop", 64u64, [64u32, 0, 0, 0]),
        ("lane_unrolled", nu as u64, [0, 0, 0, 0]),
        ("lane4_unrolled", 16, [0, 0, 0, 0]),
        ("uni_loop", 64, [64, 0, 0, 0]),
        ("uni_unrolled", nu as u64, [0, 0, 0, 0]),
        ("uni_unrolled_in_loop", nu as u64, [0, 1, 0, 0]),
        ("alu", 16 * nu as u64, [0, 0, 0, 0]),
        ("stores", nu as u64, [0, 0, 0, 0]),
    ] {
        let k = gpu.kernel(&spec(entry, false), &vals)?;
        let t = gpu.time_median(2, 7, || {
            gpu.dispatch(&k, &params, &[&x.buf, &y.buf], [groups, 1, 1])
        })?;
        let c0 = cpu_ns();
        for _ in 0..5 {
            gpu.dispatch(&k, &params, &[&x.buf, &y.buf], [groups, 1, 1])?;
            gpu.sync()?;
        }
        let cpu = (cpu_ns() - c0) as f64 / 5.0;
        let simd_ops = groups as u64 * 8 * loads_per_inv;
        println!(
            "{entry:24} {:8.2} ms  cpu {:8.2} ms {:6.1} cpu ns per SIMD-8 op, wall {:6.1}",
            t.as_secs_f64() * 1e3,
            cpu / 1e6,
            cpu / simd_ops as f64,
            t.as_secs_f64() * 1e9 / simd_ops as f64
        );
    }
    Ok(())
}
