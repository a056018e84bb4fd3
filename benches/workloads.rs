//! `cargo bench`: the same workloads as `proxyless bench`, printed as text and JSON lines.

fn main() -> anyhow::Result<()> {
    // lavapipe's threads, before any other thread starts (`gpu::cpu_driver_threads`).
    if let Some(n) = proxyless::gpu::cpu_driver_threads() {
        std::env::set_var("LP_NUM_THREADS", n);
    }
    let gpu = proxyless::gpu::Gpu::new(&Default::default())?;
    println!("adapter: {}", gpu.adapter_name());
    for w in proxyless::workloads::WORKLOADS {
        if *w == "memory" {
            for r in proxyless::workloads::memory::run(&gpu, "cifar", 1.0, 32)? {
                println!("{}", serde_json::to_string(&r)?);
            }
            continue;
        }
        let r = proxyless::workloads::run(&gpu, w, 10)?;
        println!("{}", proxyless::workloads::describe(&gpu, &r));
        println!("{}", serde_json::to_string(&r)?);
    }
    Ok(())
}
