use proxyless::gpu::{Access, Gpu, KernelSpec};
const SRC: &str = r#"
struct Params { n: u32, pad0: u32, pad1: u32, pad2: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
@group(0) @binding(1) var<storage, read> x4: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> y4: array<vec4<f32>>;
@compute @workgroup_size(64)
fn scale(@builtin(global_invocation_id) gid: vec3<u32>) {
    if (gid.x < p.n) { y[gid.x] = 2.0 * x[gid.x]; }
}
@compute @workgroup_size(64)
fn scale4(@builtin(global_invocation_id) gid: vec3<u32>) {
    if (gid.x < p.n / 4u) { y4[gid.x] = 2.0 * x4[gid.x]; }
}
@compute @workgroup_size(64)
fn scale_loop(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let per = p.n / 256u;
    for (var i = wid.x * per + lid.x; i < (wid.x + 1u) * per; i += 64u) { y[i] = 2.0 * x[i]; }
}
"#;
fn main() -> anyhow::Result<()> {
    let gpu = Gpu::new(&Default::default())?;
    let n = 1usize << 21;
    let x = gpu.upload(&vec![1.0f32; n], &[n])?;
    let y = gpu.empty(&[n]);
    for (entry, groups) in [("scale", n / 64), ("scale4", n / 256), ("scale_loop", 256)] {
        let spec = KernelSpec {
            file: "probe",
            source: SRC,
            entry,
            bindings: &[Access::Read, Access::ReadWrite],
        };
        let k = gpu.kernel(&spec, &[])?;
        let t = gpu.time_median(1, 5, || {
            gpu.dispatch(
                &k,
                &[n as u32, 0, 0, 0],
                &[&x.buf, &y.buf],
                [groups as u32, 1, 1],
            )
        })?;
        println!(
            "{entry}: {:.2} ms for {} floats: {:.2} GB/s",
            t.as_secs_f64() * 1e3,
            n,
            8.0 * n as f64 / t.as_secs_f64() / 1e9
        );
    }
    Ok(())
}
