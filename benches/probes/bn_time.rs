//! Times batch norm train forward + backward (fused ReLU6) on one activation shape, default the
//! dw5 workload's [32,16,16,240] (`BT_SHAPE=n,h,w,c` changes it). Arguments: rounds (of 10
//! runs), then variants `NAME:ENV=VAL[,ENV=VAL]`, run in turn within each repetition (the
//! environment is set for the variant's run; kernels are keyed by what it changes).
//! `BT_PROFILE=1` then times each kernel alone. `cargo run --release --example bn_time -- 4 base
//! g64:PROXYLESS_PARALLEL_GROUPS=64`
use proxyless::gpu::Gpu;
use proxyless::ops::batchnorm::{batchnorm_act_train_backward, batchnorm_act_train_forward, BnAct};
fn main() -> anyhow::Result<()> {
    // lavapipe's threads, before any other thread starts (`gpu::cpu_driver_threads`).
    if let Some(n) = proxyless::gpu::cpu_driver_threads() {
        std::env::set_var("LP_NUM_THREADS", n);
    }
    let gpu = Gpu::new(&Default::default())?;
    let shape: Vec<usize> = std::env::var("BT_SHAPE")
        .unwrap_or_else(|_| "32,16,16,240".into())
        .split(',')
        .map(|s| s.trim().parse())
        .collect::<Result<_, _>>()?;
    let c = *shape.last().unwrap_or(&1);
    let n: usize = shape.iter().product();
    let vals: Vec<f32> = (0..n)
        .map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0)
        .collect();
    let x = gpu.upload(&vals, &shape)?;
    let dy = gpu.upload(&vals, &shape)?;
    let gamma = gpu.upload(&vec![1.0f32; c], &[c])?;
    let beta = gpu.upload(&vec![0.5f32; c], &[c])?;
    let rm = gpu.zeros(&[c]);
    let rv = gpu.zeros(&[c]);
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rounds: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(1);
    let mut variants: Vec<(String, Vec<(String, String)>)> = args
        .iter()
        .skip(1)
        .map(|a| {
            let (name, envs) = a.split_once(':').unwrap_or((a, ""));
            let envs = envs
                .split(',')
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            (name.to_string(), envs)
        })
        .collect();
    if variants.is_empty() {
        variants.push(("base".into(), vec![]));
    }
    // Interleaved: every repetition runs each variant once, so the machine's drift hits all
    // variants alike; each variant warms up (compiles) first.
    // Each variant's knobs as the tuning in force (`gpu::tuning`), then the base again.
    let base = proxyless::gpu::tuning();
    let set = |envs: &[(String, String)]| {
        let t =
            proxyless::gpu::Tuning::from_vars(envs.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        proxyless::gpu::set_tuning(t.unwrap_or_else(|e| panic!("{e:#}")));
    };
    let unset = |_: &[(String, String)]| proxyless::gpu::set_tuning(base);
    let run = |timed: &mut Vec<(f64, f64)>| -> anyhow::Result<()> {
        let t0 = std::time::Instant::now();
        let (_y, mean, rstd) = batchnorm_act_train_forward(
            &gpu,
            &x,
            &gamma,
            &beta,
            (&rm, &rv),
            0.1,
            1e-3,
            BnAct::Relu6,
        )?;
        gpu.sync()?;
        let t1 = std::time::Instant::now();
        batchnorm_act_train_backward(&gpu, &x, &gamma, &beta, (&mean, &rstd), &dy, BnAct::Relu6)?;
        gpu.sync()?;
        timed.push((
            (t1 - t0).as_secs_f64() * 1e3,
            t1.elapsed().as_secs_f64() * 1e3,
        ));
        Ok(())
    };
    let mut times = vec![vec![]; variants.len()];
    for (_, envs) in &variants {
        set(envs);
        for _ in 0..3 {
            run(&mut vec![])?;
        }
        unset(envs);
    }
    for _ in 0..rounds * 10 {
        for (i, (_, envs)) in variants.iter().enumerate() {
            set(envs);
            run(&mut times[i])?;
            unset(envs);
        }
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    println!(
        "batchnorm + relu6 train {shape:?}, median of {} interleaved runs, ms:",
        rounds * 10
    );
    for ((name, _), t) in variants.iter().zip(&times) {
        let f = median(t.iter().map(|x| x.0).collect());
        let b = median(t.iter().map(|x| x.1).collect());
        println!("  {name:<10} fwd {f:.2}  bwd {b:.2}");
    }
    // BT_PROFILE=1: each kernel timed alone (synchronised), summed over 10 runs per variant.
    if std::env::var("BT_PROFILE").is_ok() {
        for (name, envs) in &variants {
            set(envs);
            gpu.profile_kernels();
            for _ in 0..10 {
                run(&mut vec![])?;
            }
            unset(envs);
            for (kernel, s, calls) in gpu.kernel_profile_report() {
                let short: String = kernel.chars().take(40).collect();
                println!(
                    "  {name:<10} {:8.2} ms / run  {calls:4} calls  {short}",
                    s * 100.0
                );
            }
        }
    }
    Ok(())
}
