//! `proxyless kernels --dump DIR`: the exact WGSL of every kernel variant a workload compiles,
//! one file each, named by kernel and parameters.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};

use proxyless::gpu::Gpu;
use proxyless::workloads::{run as run_workload, WORKLOADS};

#[derive(clap::Args)]
pub struct Args {
    /// Where to write the `.wgsl` files (created if needed).
    #[arg(long)]
    dump: PathBuf,
    /// The workload whose kernels to dump (one run of it): pw, dw5, dw3s2, mbconv or step.
    #[arg(long, default_value = "step")]
    workload: String,
    /// Write the text as compiled, loops over constants unrolled (long), instead of the
    /// kernel as written with its holes filled.
    #[arg(long)]
    unrolled: bool,
}

/// A file name from a kernel's cache key (`file::entry k=v ...`): the file and entry point, the
/// parameters' first 80 characters, and a hash of the whole key (parameters can be long
/// generated code). Characters other than letters, digits, `.`, `=` and `-` become `_`.
fn file_name(key: &str) -> String {
    let clean = |t: &str| -> String {
        t.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '.' | '=' | '-') {
                    c
                } else {
                    '_'
                }
            })
            .collect()
    };
    let (kernel, params) = key.split_once(' ').unwrap_or((key, ""));
    let kernel = clean(&kernel.replace(".wgsl::", "__"));
    let params: String = clean(params.trim()).chars().take(80).collect();
    let hash = super::digest(key);
    format!("{kernel}__{params}__{:08x}.wgsl", hash as u32)
}

pub fn run(gpu: &Gpu, a: Args) -> Result<()> {
    if a.workload == "memory" || !WORKLOADS.contains(&a.workload.as_str()) {
        bail!(
            "--workload {:?}: one of pw, dw5, dw3s2, mbconv, step",
            a.workload
        );
    }
    run_workload(gpu, &a.workload, 1)?;
    std::fs::create_dir_all(&a.dump)
        .with_context(|| format!("cannot create {}", a.dump.display()))?;
    let kernels = gpu.compiled_kernels();
    for k in &kernels {
        let path = a.dump.join(file_name(k.name()));
        let body = if a.unrolled {
            k.compiled_source()?
        } else {
            k.source().to_string()
        };
        let text = format!("// kernel: {}\n{body}", k.name());
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    println!(
        "{} kernel variants of workload {} written to {}",
        kernels.len(),
        a.workload,
        a.dump.display()
    );
    Ok(())
}
