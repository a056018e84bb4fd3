use proxyless::gpu::Gpu;
use proxyless::ops::gemm::{gemm, Gemm};
fn cpu() -> f64 {
    let s = std::fs::read_to_string("/proc/self/stat").unwrap();
    let f: Vec<&str> = s.rsplit(')').next().unwrap().split_whitespace().collect();
    (f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap()) / 100.0
}
fn main() -> anyhow::Result<()> {
    let gpu = Gpu::new(&Default::default())?;
    let k: usize = std::env::var("K").ok().and_then(|s| s.parse().ok()).unwrap_or(40);
    let (m, n) = (8192usize, 240usize);
    let x = gpu.upload(&vec![0.5f32; m * k], &[m, k])?;
    let w = gpu.upload(&vec![0.25f32; n * k], &[n, k])?;
    let dy = gpu.upload(&vec![0.5f32; m * n], &[m, n])?;
    let y = gpu.empty(&[m, n]);
    let dx = gpu.empty(&[m, k]);
    let dw = gpu.empty(&[n, k]);
    let fl = 2.0 * (m * n * k) as f64;
    let cases = vec![
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
    let mut total = 0.0;
    for (name, g, a, b, c) in cases {
        gemm(&gpu, a, b, c, g, false)?;
        gpu.sync()?;
        let reps = 10;
        let c0 = cpu();
        let t0 = std::time::Instant::now();
        for _ in 0..reps {
            gemm(&gpu, a, b, c, g, false)?;
            gpu.sync()?;
        }
        let wall = t0.elapsed().as_secs_f64() / reps as f64;
        let cpu_ms = (cpu() - c0) / reps as f64 * 1e3;
        total += cpu_ms;
        println!(
            "{name}: wall {:.2} ms, cpu {:.1} ms ({:.2} GFLOP/s at cpu/2)",
            wall * 1e3,
            cpu_ms,
            fl / (cpu_ms / 2e3) / 1e9
        );
    }
    println!("total cpu {total:.1} ms");
    Ok(())
}
