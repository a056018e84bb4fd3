// Temporary: worst relative error per output for the misc families.
use proxyless::gpu::{Gpu, GpuOptions};
use proxyless::verify::run_family;
use std::collections::BTreeMap;
fn main() {
    let gpu = Gpu::new(&GpuOptions::default()).unwrap();
    let fams: Vec<String> = std::env::args().skip(1).collect();
    for f in fams {
        let t = std::time::Instant::now();
        let out = run_family(&gpu, &f, 12345).unwrap_or_else(|e| panic!("{f}: {e:#}"));
        let el = t.elapsed();
        let mut worst: BTreeMap<(String, String), (f64, String)> = BTreeMap::new();
        for o in &out {
            let e = worst
                .entry((o.kernel.clone(), o.output.to_string()))
                .or_insert((-1.0, String::new()));
            if o.rel_error > e.0 {
                *e = (o.rel_error, o.shape.clone());
            }
            if !o.pass() {
                println!(
                    "FAIL {} {} {} {:e}",
                    o.kernel, o.shape, o.output, o.rel_error
                );
            }
        }
        println!("== {f}: {} outcomes in {:.2?}", out.len(), el);
        for ((k, o), (e, s)) in worst {
            println!("  {k:22} {o:16} {e:.3e}  at {s}");
        }
    }
}
