//! Training a net from Rust: a config in the official format, the synthetic set, two epochs of
//! SGD, then the held-out accuracy, as `proxyless train` does.
//! `cargo run --release --example train_net [NET.config]` (default `data/nets/tiny.config`).
use anyhow::Result;
use proxyless::gpu::{Gpu, GpuOptions};
use proxyless::nn::optim::OptimizerKind;
use proxyless::nn::{NetConfig, Network};
use proxyless::train::{self, DataSource, Quiet, RunDir, TrainConfig};

fn main() -> Result<()> {
    // lavapipe's threads, before any other thread starts (`gpu::cpu_driver_threads`).
    if let Some(n) = proxyless::gpu::cpu_driver_threads() {
        std::env::set_var("LP_NUM_THREADS", n);
    }
    let path = std::env::args()
        .nth(1)
        .unwrap_or("data/nets/tiny.config".into());
    let gpu = Gpu::new(&GpuOptions::default())?;
    let config = NetConfig::load(std::path::Path::new(&path))?;
    let net = Network::new(&gpu, &config, 0)?;
    // The synthetic set at 16 x 16 (no --data), 500 images held out for validation.
    let data = DataSource::open(None, 16, Some(500), 0)?;
    let cfg = TrainConfig {
        epochs: 2,
        batch: 64,
        lr: 0.2,
        warmup_epochs: 0,
        optimizer: OptimizerKind::nesterov(4e-5),
        label_smoothing: 0.1,
        seed: 0,
        stop_after: None,
        parts: 1,
        group: Default::default(),
    };
    let out = RunDir(std::env::temp_dir().join("proxyless-example-train"));
    let s = train::train(&gpu, &net, &data, &cfg, &out, false, &mut Quiet)?;
    println!(
        "{path} on {}: valid {:.2}%, test {:.2}%, {:.0} images/s; outputs in {}",
        gpu.adapter_name(),
        100.0 * s.valid_accuracy.unwrap_or(f64::NAN),
        100.0 * s.test_accuracy.unwrap_or(f64::NAN),
        s.images_per_s,
        out.0.display()
    );
    Ok(())
}
