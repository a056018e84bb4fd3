use proxyless::gpu::{Access, Gpu, KernelSpec};
const SRC: &str = r#"
struct Params { n: u32, pad0: u32, pad1: u32, pad2: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> s: array<f32>;
@group(0) @binding(2) var<storage, read_write> o: array<f32>;
@group(0) @binding(3) var<uniform> u: array<vec4<f32>, 4096>;
@group(0) @binding(1) var<storage, read> s4: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> o4: array<vec4<f32>>;
var<workgroup> sh: array<f32, 4096>;
@compute @workgroup_size(64)
fn loop_only(@builtin(global_invocation_id) gid: vec3<u32>) {
    var acc = f32(gid.x);
    for (var k = 0u; k < p.n; k++) { acc = fma(acc, 0.999, 1.0); }
    o[gid.x] = acc;
}
@compute @workgroup_size(64)
fn ssbo_lane(@builtin(global_invocation_id) gid: vec3<u32>) {
    var acc = 0.0;
    for (var k = 0u; k < p.n; k++) { acc += s[k * 64u + gid.x]; }
    o[gid.x] = acc;
}
@compute @workgroup_size(64)
fn ssbo_lane_vec4(@builtin(global_invocation_id) gid: vec3<u32>) {
    var acc = vec4<f32>();
    for (var k = 0u; k < p.n; k++) { acc += s4[k * 64u + gid.x]; }
    o[gid.x] = acc.x + acc.y + acc.z + acc.w;
}
@compute @workgroup_size(64)
fn ssbo_store(@builtin(global_invocation_id) gid: vec3<u32>) {
    for (var k = 0u; k < p.n; k++) { o[(k * 64u + gid.x) & 65535u] = f32(k); }
}
@compute @workgroup_size(64)
fn ssbo_store_vec4(@builtin(global_invocation_id) gid: vec3<u32>) {
    for (var k = 0u; k < p.n; k++) { o4[(k * 64u + gid.x) & 16383u] = vec4<f32>(f32(k)); }
}
@compute @workgroup_size(64)
fn ubo_uniform(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    var acc = vec4<f32>();
    for (var k = 0u; k < p.n; k++) { acc += u[(k + wid.x) & 4095u]; }
    o[gid.x] = acc.x + acc.y + acc.z + acc.w;
}
@compute @workgroup_size(64)
fn shared_lane(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    sh[li] = f32(li);
    workgroupBarrier();
    var acc = 0.0;
    for (var k = 0u; k < p.n; k++) { acc += sh[(k * 64u + li) & 4095u]; }
    o[gid.x] = acc;
}
@compute @workgroup_size(64)
fn shared_uniform(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    sh[li] = f32(li);
    workgroupBarrier();
    var acc = 0.0;
    for (var k = 0u; k < p.n; k++) { acc += sh[k & 4095u]; }
    o[gid.x] = acc;
}
"#;
fn main() -> anyhow::Result<()> {
    let gpu = Gpu::new(&Default::default())?;
    let n = 256u32;
    let groups = 1024u32;
    let s = gpu.upload(&vec![1.0f32; 1 << 22], &[1 << 22])?;
    let o = gpu.empty(&[1 << 16]);
    let u = gpu.upload(&vec![1.0f32; 16384], &[16384])?;
    for entry in [
        "loop_only",
        "ssbo_lane",
        "ssbo_lane_vec4",
        "ssbo_store",
        "ssbo_store_vec4",
        "ubo_uniform",
        "shared_lane",
        "shared_uniform",
    ] {
        let spec = KernelSpec {
            file: "probe",
            source: SRC,
            entry,
            bindings: &[Access::Read, Access::ReadWrite, Access::Uniform],
        };
        let k = gpu.kernel(&spec, &[])?;
        let t = gpu.time_median(1, 5, || {
            gpu.dispatch(&k, &[n, 0, 0, 0], &[&s.buf, &o.buf, &u.buf], [groups, 1, 1])
        })?;
        let iters = (groups * 64 / 8 * n) as f64;
        println!(
            "{entry:>16}: {:7.2} ms, {:6.2} ns per 8-lane iteration (wall, 2 cores)",
            t.as_secs_f64() * 1e3,
            t.as_secs_f64() * 1e9 / iters
        );
    }
    Ok(())
}
