// Temporary: worst relative error per output of the conv and batchnorm families.
use proxyless::gpu::{Gpu, GpuOptions};
use proxyless::verify::run_family;
fn main() -> anyhow::Result<()> {
    let gpu = Gpu::new(&GpuOptions::default())?;
    let fams: Vec<String> = std::env::args().skip(1).collect();
    for fam in fams {
        let seeds: Vec<u64> = (1..=3).collect();
        let mut worst: Vec<(String, String, f64, String)> = Vec::new();
        for s in seeds {
            let t0 = std::time::Instant::now();
            let outs = run_family(&gpu, &fam, s)?;
            eprintln!(
                "{fam} seed {s}: {} outcomes in {:?}",
                outs.len(),
                t0.elapsed()
            );
            for o in outs {
                if std::env::var("ALL").is_ok() {
                    eprintln!(
                        "  {} {} {} {:.2e}",
                        o.kernel, o.shape, o.output, o.rel_error
                    );
                }
                match worst
                    .iter_mut()
                    .find(|w| w.0 == o.kernel && w.1 == o.output)
                {
                    Some(w) => {
                        if o.rel_error > w.2 {
                            w.2 = o.rel_error;
                            w.3 = o.shape.clone();
                        }
                    }
                    None => worst.push((
                        o.kernel.clone(),
                        o.output.to_string(),
                        o.rel_error,
                        o.shape.clone(),
                    )),
                }
            }
        }
        for w in worst {
            println!("{:10} {:8} worst {:.2e} at {}", w.0, w.1, w.2, w.3);
        }
    }
    Ok(())
}
