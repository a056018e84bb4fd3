//! Timing one kernel: the 1x1 convolution (a matrix product) of a training step's expand
//! layer, [64, 32, 32, 48] x [96, 48]^T, median of 10 synchronised runs after 3 warm-ups, as
//! GFLOP/s. `cargo run --release --example time_kernel [BATCH]`.
use anyhow::Result;
use proxyless::gpu::{Gpu, GpuOptions};
use proxyless::ops::pointwise::pointwise_forward;

fn main() -> Result<()> {
    // lavapipe's threads, before any other thread starts (`gpu::cpu_driver_threads`).
    if let Some(n) = proxyless::gpu::cpu_driver_threads() {
        std::env::set_var("LP_NUM_THREADS", n);
    }
    let batch: usize = std::env::args().nth(1).map_or(Ok(64), |s| s.parse())?;
    let (hw, cin, cout) = (32usize, 48usize, 96usize);
    let gpu = Gpu::new(&GpuOptions::default())?;
    let x: Vec<f32> = (0..batch * hw * hw * cin)
        .map(|i| ((i % 97) as f32 - 48.0) / 97.0)
        .collect();
    let w: Vec<f32> = (0..cout * cin)
        .map(|i| ((i % 31) as f32 - 15.0) / 31.0)
        .collect();
    let x = gpu.upload(&x, &[batch, hw, hw, cin])?;
    let w = gpu.upload(&w, &[cout, cin])?;
    let t = gpu.time_median(3, 10, || pointwise_forward(&gpu, &x, &w).map(drop))?;
    let flops = 2.0 * (batch * hw * hw * cin * cout) as f64;
    println!(
        "pointwise [{batch}, {hw}, {hw}, {cin}] -> {cout} on {}: {:.3} ms, {:.1} GFLOP/s",
        gpu.adapter_name(),
        t.as_secs_f64() * 1e3,
        flops / t.as_secs_f64() / 1e9
    );
    Ok(())
}
