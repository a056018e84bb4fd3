//! Subcommands, one file each.

mod bench;
mod check;
mod devices;
mod info;
mod kernels;
mod plot;
mod sample;
mod search;
mod train;
mod values;

use anyhow::Result;
use clap::{Parser, Subcommand};

use proxyless::dist::Group;
use proxyless::gpu::{load_tuning, Gpu, GpuOptions, Profile};

#[derive(Parser)]
#[command(
    name = "proxyless",
    version,
    about = "ProxylessNAS on a from-scratch wgpu/WGSL engine"
)]
struct Cli {
    /// Use the first adapter whose name contains this (case-insensitive); also WGPU_ADAPTER_NAME.
    /// WGPU_BACKEND (vulkan, metal, dx12, gl) limits the backends searched.
    #[arg(long, global = true)]
    adapter: Option<String>,
    /// native (kernel choices follow the adapter) or gpu (a CPU adapter takes every decision a
    /// discrete GPU would: the variants a real GPU runs, testable here); also PROXYLESS_PROFILE.
    #[arg(long, global = true)]
    profile: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// List the adapters wgpu can use, with the limits that matter here.
    Devices,
    /// Check every kernel against the f64 CPU reference on this adapter.
    Check(check::Args),
    /// Time a workload of shared/bench/WORKLOADS.md on this adapter.
    Bench(bench::Args),
    /// Layer table, parameter count and multiply-accumulates of a net config.
    Info(info::Args),
    /// Train a net config from scratch (CIFAR-10, an image folder, or the synthetic set).
    Train(train::Args),
    /// Accuracy of saved weights on a test set.
    Eval(train::EvalArgs),
    /// ProxylessNAS: search a space for an accurate and fast net on this adapter.
    Search(Box<search::Args>),
    /// Measure a latency table on this adapter, or predict a net's latency from a table.
    Latency(search::LatencyArgs),
    /// Draw a random architecture of a space near a latency (the random-search baseline).
    Sample(sample::Args),
    /// Write the exact WGSL of every kernel variant a workload compiles, one file each.
    Kernels(kernels::Args),
    /// Redraw a search's plots (architecture probabilities, curves, latency) from its logs.
    Plot(plot::Args),
}

pub fn run() -> Result<()> {
    let cli = Cli::parse();
    // Every PROXYLESS_* knob is read and checked here, once (`gpu::tuning`).
    let profile = cli.profile.as_deref().map(Profile::parse).transpose()?;
    load_tuning(profile)?;
    let parallel = matches!(cli.command, Command::Train(_) | Command::Search(_));
    let (group, local_rank) = if parallel {
        open_group()?
    } else {
        (Group::solo(), 0)
    };
    let opts = GpuOptions {
        adapter: cli.adapter,
        nth_best: local_rank,
        ..Default::default()
    };
    let result = match cli.command {
        Command::Devices => devices::run(),
        Command::Check(a) => check::run(&open(&opts)?, a),
        Command::Bench(a) => bench::run(&open(&opts)?, a),
        Command::Info(a) => info::run(&open(&opts)?, a),
        Command::Train(a) => open_as(&opts, &group).and_then(|gpu| train::run(&gpu, a, &group)),
        Command::Eval(a) => train::eval(&open(&opts)?, a),
        Command::Search(a) => open_as(&opts, &group).and_then(|gpu| search::run(&gpu, *a, &group)),
        Command::Latency(a) => search::latency(&open(&opts)?, a),
        Command::Sample(a) => sample::run(&opts, a),
        Command::Plot(a) => plot::run(a),
        Command::Kernels(a) => kernels::run(&open(&opts)?, a),
    };
    if let Err(e) = &result {
        if group.ranks() > 1 {
            // The other ranks would wait for this one forever: stop the job.
            eprintln!("error on rank {} of {}: {e:#}", group.rank(), group.ranks());
            group.abort(1);
        }
    }
    result
}

/// The ranks of this job and this rank's index on its machine: mpirun's ranks when it started
/// this process (and the `mpi` feature is built in), else this process alone.
fn open_group() -> Result<(Group, usize)> {
    let launched = ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK"]
        .iter()
        .any(|k| std::env::var_os(k).is_some());
    if !launched {
        return Ok((Group::solo(), 0));
    }
    #[cfg(feature = "mpi")]
    {
        proxyless::dist::from_mpi()
    }
    #[cfg(not(feature = "mpi"))]
    {
        anyhow::bail!(
            "started by mpirun, but this proxyless was built without MPI: every rank would run the whole job alone; build with `cargo build --release --features mpi`"
        )
    }
}

/// FNV-1a, 64 bits: a short fingerprint of a text (a run's costs stored with its checkpoint, a
/// kernel's cache key in its dump file name).
fn digest(text: &str) -> u64 {
    proxyless::dist::fnv1a(text.as_bytes())
}

fn open(opts: &GpuOptions) -> Result<Gpu> {
    open_as(opts, &Group::solo())
}

/// Opens the adapter and says which, with the rank when there are several.
fn open_as(opts: &GpuOptions, group: &Group) -> Result<Gpu> {
    let gpu = Gpu::new(opts)?;
    if group.ranks() > 1 {
        eprintln!(
            "rank {} of {}: adapter {}",
            group.rank(),
            group.ranks(),
            gpu.adapter_name()
        );
    } else {
        eprintln!("adapter: {}", gpu.adapter_name());
    }
    Ok(gpu)
}
