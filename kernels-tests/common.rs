//! One device for every test (kernels compile once), and a family runner that asserts every
//! output within tolerance and prints the table when one is not.

use std::sync::OnceLock;

use proxyless::gpu::{Gpu, GpuOptions};
use proxyless::verify::{run_family, TOLERANCE};

pub fn gpu() -> &'static Gpu {
    static GPU: OnceLock<Gpu> = OnceLock::new();
    GPU.get_or_init(|| {
        Gpu::new(&GpuOptions::default()).unwrap_or_else(|e| {
            panic!("{e:#}\n(the tests need a wgpu adapter; lavapipe: apt-get install -y mesa-vulkan-drivers)")
        })
    })
}

/// n distinct, non-zero values in (-1, 1), different for every seed (inputs that a stale or
/// unwritten element cannot match by chance).
pub fn values(seed: u64, n: usize) -> Vec<f32> {
    (0..n)
        .map(|i| (((i as u64 * 2654435761 + seed * 40503) % 1997) as f32 / 998.0) - 1.0 + 1e-3)
        .collect()
}

/// Runs a verification family with a fresh seed per run and asserts every outcome.
pub fn check_family(name: &str) {
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1);
    let outcomes = run_family(gpu(), name, seed)
        .unwrap_or_else(|e| panic!("family {name} (seed {seed}) failed to run: {e:#}"));
    assert!(!outcomes.is_empty(), "family {name} compared nothing");
    let bad: Vec<String> = outcomes
        .iter()
        .filter(|o| !o.pass())
        .map(|o| {
            format!(
                "{} {} {}: rel error {:.3e}",
                o.kernel, o.shape, o.output, o.rel_error
            )
        })
        .collect();
    assert!(
        bad.is_empty(),
        "family {name} (seed {seed}): {} of {} outputs over {TOLERANCE:e}:\n{}",
        bad.len(),
        outcomes.len(),
        bad.join("\n")
    );
}

/// A zero tensor of `shape` on the shared device.
pub fn zeros(shape: &[usize]) -> proxyless::gpu::Tensor {
    gpu().zeros(shape)
}

/// Asserts `r` is an error whose message names `op`.
pub fn assert_err<T>(r: anyhow::Result<T>, op: &str, case: &str) {
    match r {
        Ok(_) => panic!("{case}: {op} accepted bad input"),
        Err(e) => {
            let msg = format!("{e:#}");
            assert!(msg.contains(op), "{case}: error does not name {op}: {msg}");
        }
    }
}

/// Runs the `proxyless` binary as a user would: (success, stdout, stderr).
pub fn proxyless(args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_proxyless"))
        .args(args)
        .output()
        .expect("run the proxyless binary");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Observes a run and, at the end of each epoch (after its checkpoint), makes the `.1`-th sync
/// from then on fail as a lost device would (`Gpu::inject_device_loss_after`).
pub struct LoseDeviceAfterEpoch<'a>(pub &'a Gpu, pub usize);

impl proxyless::train::Observer for LoseDeviceAfterEpoch<'_> {
    fn epoch_done(&mut self, _: &serde_json::Value) {
        self.0.inject_device_loss_after(self.1);
    }
}
