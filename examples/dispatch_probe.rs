use proxyless::gpu::{Access, Gpu, KernelSpec};
const SRC: &str = r#"
struct Params { n: u32, pad0: u32, pad1: u32, pad2: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> o: array<f32>;
@compute @workgroup_size(64)
fn tiny(@builtin(global_invocation_id) gid: vec3<u32>) {
    o[gid.x] = f32(p.n);
}
"#;
fn main() -> anyhow::Result<()> {
    let gpu = Gpu::new(&Default::default())?;
    let o = gpu.empty(&[1 << 16]);
    let spec = KernelSpec {
        file: "probe",
        source: SRC,
        entry: "tiny",
        bindings: &[Access::ReadWrite],
    };
    let k = gpu.kernel(&spec, &[])?;
    for groups in [1u32, 16] {
        let t = gpu.time_median(1, 5, || {
            for i in 0..500 {
                gpu.dispatch(&k, &[i, 0, 0, 0], &[&o.buf], [groups, 1, 1])?;
            }
            Ok(())
        })?;
        println!(
            "{groups} groups: {:.1} us per dispatch",
            t.as_secs_f64() * 1e6 / 500.0
        );
    }
    Ok(())
}
