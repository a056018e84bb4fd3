// Temporary experiment: units per invocation for an elementwise kernel on lavapipe.
use proxyless::gpu::{groups_for, Access, Gpu, GpuOptions, KernelSpec};
const SRC: &str = r#"
alias V = {{V}};
const ITER = {{ITER}}u;
struct Params { count: u32, start: u32, stride_groups: u32, s: f32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<V>;
@group(0) @binding(2) var<storage, read_write> y: array<V>;
@compute @workgroup_size(64)
fn k(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let first = (wid.x + wid.y * p.stride_groups) * (64u * ITER) + lid.x;
    for (var j = 0u; j < ITER; j = j + 1u) {
        let f = first + j * 64u;
        if (f >= p.count) { return; }
        let i = p.start + f;
        y[i] = clamp(x[i], V(0.0), V(6.0));
    }
}
"#;
fn main() -> anyhow::Result<()> {
    let gpu = Gpu::new(&GpuOptions::default())?;
    let spec = KernelSpec {
        file: "exp",
        source: SRC,
        entry: "k",
        bindings: &[Access::Read, Access::ReadWrite],
    };
    let len = 64 * 56 * 56 * 24usize;
    let x = gpu.upload(&vec![0.5f32; len], &[len])?;
    let y = gpu.empty(&[len]);
    let copy = gpu.empty(&[len]);
    for round in 0..3 {
        for (v, w) in [("vec4<f32>", 4usize), ("f32", 1)] {
            for iter in [1usize, 4, 16, 64] {
                let k = gpu.kernel(&spec, &[("V", v.into()), ("ITER", iter.to_string())])?;
                let count = len / w;
                let groups = groups_for(count.div_ceil(64 * iter) as u32, 65535);
                let d = gpu.time_median(1, 5, || {
                    gpu.dispatch(
                        &k,
                        &[count as u32, 0, groups[0], 0],
                        &[&x.buf, &y.buf],
                        groups,
                    )
                })?;
                println!(
                    "round {round} {v:10} iter {iter:3}: {:8.3} ms {:.1} GB/s",
                    d.as_secs_f64() * 1e3,
                    8.0 * len as f64 / d.as_secs_f64() / 1e9
                );
            }
        }
        let d = gpu.time_median(1, 5, || gpu.copy(&x.buf, &copy.buf))?;
        println!("round {round} copy: {:8.3} ms", d.as_secs_f64() * 1e3);
    }
    Ok(())
}
