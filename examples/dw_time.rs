//! Temporary: times depthwise forward + backward on the benchmark workloads.
use proxyless::gpu::{Gpu, GpuOptions};
use proxyless::ops::depthwise::{depthwise_backward, depthwise_forward};
use std::time::Instant;

fn rnd(n: usize, seed: &mut u64) -> Vec<f32> {
    (0..n)
        .map(|_| {
            *seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((*seed >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// CPU time of every thread of this process (ns), from /proc/self/task/*/schedstat.
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

/// (median wall ms, min wall ms, min cpu ms) over 15 reps after 3 warm-ups.
fn bench(gpu: &Gpu, mut f: impl FnMut() -> anyhow::Result<()>) -> anyhow::Result<(f64, f64, f64)> {
    for _ in 0..3 {
        f()?;
    }
    gpu.sync()?;
    let mut walls = Vec::new();
    let mut cpus = Vec::new();
    for _ in 0..15 {
        let c0 = cpu_ns();
        let t0 = Instant::now();
        f()?;
        gpu.sync()?;
        walls.push(t0.elapsed().as_secs_f64() * 1e3);
        cpus.push((cpu_ns() - c0) as f64 / 1e6);
    }
    walls.sort_by(|a, b| a.total_cmp(b));
    cpus.sort_by(|a, b| a.total_cmp(b));
    Ok((walls[walls.len() / 2], walls[0], cpus[0]))
}

fn main() -> anyhow::Result<()> {
    let gpu = Gpu::new(&GpuOptions::default())?;
    let mut seed = 1u64;
    let which: Vec<String> = std::env::args().skip(1).collect();
    if which.iter().any(|a| a == "compile") {
        for &(k, s) in &[(3usize, 1usize), (3, 2), (5, 1), (5, 2), (7, 1), (7, 2)] {
            for c in [8usize, 3] {
                let x = gpu.upload(&rnd(2 * 9 * 9 * c, &mut seed), &[2, 9, 9, c])?;
                let wt = gpu.upload(&rnd(c * k * k, &mut seed), &[c, k, k])?;
                let o = (9 - 1) / s + 1;
                let dy = gpu.upload(&rnd(2 * o * o * c, &mut seed), &[2, o, o, c])?;
                let t0 = Instant::now();
                depthwise_forward(&gpu, &x, &wt, s)?;
                gpu.sync()?;
                let t1 = Instant::now();
                depthwise_backward(&gpu, &x, &wt, s, &dy)?;
                gpu.sync()?;
                println!("compile k{k} s{s} c{c}: fwd {:.0} ms, bwd {:.0} ms", (t1 - t0).as_secs_f64() * 1e3, t1.elapsed().as_secs_f64() * 1e3);
            }
        }
        return Ok(());
    }
    for &(name, n, h, w, c, k, s, mflop) in &[
        (
            "dw5", 32usize, 16usize, 16usize, 240usize, 5usize, 1usize, 294.9f64,
        ),
        ("dw3s2", 32, 32, 32, 144, 3, 2, 63.7),
        ("dw5n2", 2, 16, 16, 240, 5, 1, 294.9 / 16.0),
        ("dw5n8", 8, 16, 16, 240, 5, 1, 294.9 / 4.0),
    ] {
        if !which.is_empty() && !which.iter().any(|a| a == name) {
            continue;
        }
        let x = gpu.upload(&rnd(n * h * w * c, &mut seed), &[n, h, w, c])?;
        let wt = gpu.upload(&rnd(c * k * k, &mut seed), &[c, k, k])?;
        let ho = (h - 1) / s + 1;
        let wo = (w - 1) / s + 1;
        let dy = gpu.upload(&rnd(n * ho * wo * c, &mut seed), &[n, ho, wo, c])?;
        let t0 = Instant::now();
        let y = depthwise_forward(&gpu, &x, &wt, s)?;
        gpu.sync()?;
        let t1 = Instant::now();
        let g = depthwise_backward(&gpu, &x, &wt, s, &dy)?;
        gpu.sync()?;
        eprintln!(
            "{name}: first call fwd {:?} bwd {:?}",
            t1 - t0,
            t1.elapsed()
        );
        drop((y, g));
        if std::env::var("LOOP").is_ok() {
            loop {
                if std::env::var("LOOP").map(|v| v == "b").unwrap_or(false) {
                    let _g = depthwise_backward(&gpu, &x, &wt, s, &dy)?;
                } else {
                    let _y = depthwise_forward(&gpu, &x, &wt, s)?;
                }
                gpu.sync()?;
            }
        }
        let tc = bench(&gpu, || {
            let _t = gpu.to_texture(&x.buf, x.numel())?;
            Ok(())
        })?;
        println!(
            "{name}: texture copy of x: {:.2}/{:.2} cpu {:.2}",
            tc.0, tc.1, tc.2
        );
        for slices in [16usize, 64] {
            let part = gpu.upload(&rnd(slices * c * k * k, &mut seed), &[slices * c * k * k])?;
            let out = gpu.empty(&[c * k * k]);
            let t = bench(&gpu, || {
                proxyless::ops::reduce::sum_slices(&gpu, &part.buf, &out.buf, c * k * k, slices, false)
            })?;
            println!("{name}: sum_slices {slices}: {:.2}/{:.2} cpu {:.2}", t.0, t.1, t.2);
        }
        let f = bench(&gpu, || {
            depthwise_forward(&gpu, &x, &wt, s)?;
            Ok(())
        })?;
        let b = bench(&gpu, || {
            depthwise_backward(&gpu, &x, &wt, s, &dy)?;
            Ok(())
        })?;
        let t = bench(&gpu, || {
            depthwise_forward(&gpu, &x, &wt, s)?;
            depthwise_backward(&gpu, &x, &wt, s, &dy)?;
            Ok(())
        })?;
        println!(
            "{name}: (median/min wall ms, min cpu ms) fwd {:.1}/{:.1} cpu {:.1} | bwd {:.1}/{:.1} cpu {:.1} | both {:.1}/{:.1} cpu {:.1} = {:.2} GFLOP/s (median)",
            f.0, f.1, f.2, b.0, b.1, b.2, t.0, t.1, t.2, mflop / t.0
        );
    }
    Ok(())
}
