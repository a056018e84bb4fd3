use proxyless::gpu::Gpu;
use proxyless::ops::gemm::{gemm, Gemm};
fn main() -> anyhow::Result<()> {
    let gpu = Gpu::new(&Default::default())?;
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|s| s.parse().unwrap())
        .collect();
    let (m, k, n) = if args.len() == 3 {
        (args[0], args[1], args[2])
    } else {
        (8192, 40, 240)
    };
    let x = gpu.upload(&vec![0.5f32; m * k], &[m, k])?;
    let w = gpu.upload(&vec![0.25f32; n * k], &[n, k])?;
    let dy = gpu.upload(&vec![0.5f32; m * n], &[m, n])?;
    let y = gpu.empty(&[m, n]);
    let dx = gpu.empty(&[m, k]);
    let dw = gpu.empty(&[n, k]);
    let fl = 2.0 * (m * n * k) as f64;
    let cases: Vec<(
        &str,
        Gemm,
        &proxyless::gpu::GpuBuffer,
        &proxyless::gpu::GpuBuffer,
        &proxyless::gpu::GpuBuffer,
    )> = vec![
        (
            "fwd",
            Gemm {
                m,
                n,
                k,
                a_si: k,
                a_sk: 1,
                b_sk: 1,
                b_sj: k,
                c_si: n,
                c_sj: 1,
            },
            &x.buf,
            &w.buf,
            &y.buf,
        ),
        (
            "dx",
            Gemm {
                m,
                n: k,
                k: n,
                a_si: n,
                a_sk: 1,
                b_sk: k,
                b_sj: 1,
                c_si: k,
                c_sj: 1,
            },
            &dy.buf,
            &w.buf,
            &dx.buf,
        ),
        (
            "dw",
            Gemm {
                m: n,
                n: k,
                k: m,
                a_si: 1,
                a_sk: n,
                b_sk: k,
                b_sj: 1,
                c_si: k,
                c_sj: 1,
            },
            &dy.buf,
            &x.buf,
            &dw.buf,
        ),
    ];
    for (name, g, a, b, c) in cases {
        let t = gpu.time_median(1, 3, || gemm(&gpu, a, b, c, g, false))?;
        println!(
            "{name}: {:.2} ms {:.2} GFLOP/s",
            t.as_secs_f64() * 1e3,
            fl / t.as_secs_f64() / 1e9
        );
    }
    Ok(())
}
