//! The compute workloads of `shared/bench/WORKLOADS.md`, timed on the device: median of
//! repeated runs after warm-up, the device synchronised before each clock read.

use anyhow::{bail, Result};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

pub mod memory;
mod network;

use crate::gpu::{Gpu, Tensor};
use crate::ops;

/// Peak sgemm of the 2-core AVX-512 machine this project is developed on (measured there);
/// fractions of it are only printed when the adapter is a CPU driver.
pub const CPU_SGEMM_PEAK_GFLOPS: f64 = 260.0;
/// Memory copy bandwidth of that machine, GB/s.
pub const CPU_COPY_GBPS: f64 = 19.0;

/// Names of the workloads `bench` knows.
pub const WORKLOADS: &[&str] = &["pw", "dw5", "dw3s2", "mbconv", "step", "memory"];

/// One measured workload.
#[derive(Clone, Debug, Serialize)]
pub struct BenchResult {
    pub workload: String,
    pub median_ms: f64,
    pub gflops: f64,
    pub adapter: String,
    /// Minimum bytes the workload must move (inputs read, outputs written), for the memory
    /// ceiling; not part of the WORKLOADS.md line format.
    #[serde(skip)]
    pub bytes_moved: f64,
    /// `step` only: training images per second.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub images_per_s: Option<f64>,
    /// `mbconv` and `step`: the pool's live-byte high-water mark during one run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pool_high_water_bytes: Option<u64>,
}

fn uniform(rng: &mut StdRng, n: usize, bound: f32) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(-bound..bound)).collect()
}

fn tensor(gpu: &Gpu, rng: &mut StdRng, shape: &[usize], bound: f32) -> Result<Tensor> {
    let n = shape.iter().product();
    gpu.upload(&uniform(rng, n, bound), shape)
}

/// Times `workload` (`reps` timed runs after 3 warm-ups).
pub fn run(gpu: &Gpu, workload: &str, reps: usize) -> Result<BenchResult> {
    let mut rng = StdRng::seed_from_u64(2019);
    let (flops, bytes, median) = match workload {
        "pw" => {
            // x [32,40,16,16] NCHW, w [240,40,1,1]
            let x = tensor(gpu, &mut rng, &[32, 16, 16, 40], 1.0)?;
            let w = tensor(gpu, &mut rng, &[240, 40], (6.0f32 / 40.0).sqrt())?;
            let dy = tensor(gpu, &mut rng, &[32, 16, 16, 240], 1.0)?;
            let t = gpu.time_median(3, reps, || {
                gpu.mark_written(&[&x, &w, &dy]);
                let _y = ops::pointwise::pointwise_forward(gpu, &x, &w)?;
                let _g = ops::pointwise::pointwise_backward(gpu, &x, &w, &dy)?;
                Ok(())
            })?;
            let m = 32.0 * 16.0 * 16.0;
            (
                3.0 * 2.0 * m * 40.0 * 240.0,
                4.0 * m * (40.0 * 3.0 + 240.0 * 2.0),
                t,
            )
        }
        "dw5" | "dw3s2" => {
            let (shape, k, s) = if workload == "dw5" {
                ([32, 16, 16, 240], 5, 1)
            } else {
                ([32, 32, 32, 144], 3, 2)
            };
            let c = shape[3];
            let x = tensor(gpu, &mut rng, &shape, 1.0)?;
            let w = tensor(gpu, &mut rng, &[c, k, k], (6.0 / (k * k) as f32).sqrt())?;
            let (ho, wo) = crate::reference::conv_out_hw(shape[1], shape[2], k, s);
            let dy = tensor(gpu, &mut rng, &[32, ho, wo, c], 1.0)?;
            let t = gpu.time_median(3, reps, || {
                gpu.mark_written(&[&x, &w, &dy]);
                let _y = ops::depthwise::depthwise_forward(gpu, &x, &w, s)?;
                let _g = ops::depthwise::depthwise_backward(gpu, &x, &w, s, &dy)?;
                Ok(())
            })?;
            let xin = x.numel() as f64;
            let yout = dy.numel() as f64;
            let macs = yout * (k * k) as f64;
            // fwd reads x, writes y; bwd reads x and dy, writes dx.
            (3.0 * 2.0 * macs, 4.0 * (3.0 * xin + 2.0 * yout), t)
        }
        "mbconv" => return network::mbconv(gpu, &mut rng, reps),
        "step" => return network::step(gpu, &mut rng, reps),
        "memory" => bail!("memory is run by memory::run (it reports three modes)"),
        other => bail!(
            "unknown workload {other:?}; valid: {}",
            WORKLOADS.join(", ")
        ),
    };
    let secs = median.as_secs_f64();
    Ok(BenchResult {
        workload: workload.to_string(),
        median_ms: secs * 1e3,
        gflops: flops / secs / 1e9,
        adapter: gpu.adapter_name(),
        bytes_moved: bytes,
        images_per_s: None,
        pool_high_water_bytes: None,
    })
}

/// A human line for a result; fractions of this machine's ceilings on CPU adapters.
pub fn describe(gpu: &Gpu, r: &BenchResult) -> String {
    let mut line = format!(
        "{:<6} median {:>8.2} ms  {:>7.2} GFLOP/s",
        r.workload, r.median_ms, r.gflops
    );
    if let Some(ips) = r.images_per_s {
        line += &format!("  {ips:.1} images/s");
    }
    if let Some(hw) = r.pool_high_water_bytes {
        line += &format!(
            "  pool high-water {:.1} MiB",
            hw as f64 / (1u64 << 20) as f64
        );
    }
    if gpu.info.device_type == wgpu::DeviceType::Cpu && r.bytes_moved > 0.0 {
        let mem_ms = r.bytes_moved / (CPU_COPY_GBPS * 1e9) * 1e3;
        line += &format!(
            "  ({:.1}% of {CPU_SGEMM_PEAK_GFLOPS} GFLOP/s sgemm peak; {:.0} MB moved = {:.2} ms at \
             {CPU_COPY_GBPS} GB/s: {:.1}% of the memory ceiling)",
            100.0 * r.gflops / CPU_SGEMM_PEAK_GFLOPS,
            r.bytes_moved / 1e6,
            mem_ms,
            100.0 * mem_ms / r.median_ms
        );
    }
    line
}
