//! `proxyless plot`: redraws a search's plots from its logs.

use std::path::PathBuf;

use anyhow::Result;

use proxyless::train::search::write_plots;
use proxyless::train::RunDir;

#[derive(clap::Args)]
pub struct Args {
    /// A search's output directory (it reads `arch_history.jsonl` and `log.jsonl`).
    #[arg(long)]
    run: PathBuf,
}

pub fn run(a: Args) -> Result<()> {
    write_plots(&RunDir(a.run.clone()))?;
    for f in ["arch_probs.png", "curves.png", "latency.png"] {
        println!("{}", a.run.join(f).display());
    }
    Ok(())
}
