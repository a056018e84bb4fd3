//! Times the parts of the fused BN + ReLU6 + depthwise op at one MBConv shape, each alone
//! (device synchronised, median of 7 after 2 warm-ups), to see where its time goes.
//! `cargo run --release --example fused_time -- [N H C K S]` (default 32 32 144 5 1).
use proxyless::gpu::Gpu;
use proxyless::ops::bn_relu6_conv::{self, NextConv};
use proxyless::ops::{batchnorm, depthwise};

fn main() -> anyhow::Result<()> {
    // lavapipe's threads, before any other thread starts (`gpu::cpu_driver_threads`).
    if let Some(n) = proxyless::gpu::cpu_driver_threads() {
        std::env::set_var("LP_NUM_THREADS", n);
    }
    let a: Vec<usize> = std::env::args()
        .skip(1)
        .map(|s| s.parse())
        .collect::<Result<_, _>>()?;
    let [n, h, c, k, s] = <[usize; 5]>::try_from(if a.is_empty() {
        vec![32, 32, 144, 5, 1]
    } else {
        a
    })
    .map_err(|_| anyhow::anyhow!("usage: fused_time N H C K S"))?;
    let gpu = Gpu::new(&Default::default())?;
    let len = n * h * h * c;
    let vals: Vec<f32> = (0..len)
        .map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0)
        .collect();
    let x = gpu.upload(&vals, &[n, h, h, c])?;
    let ones = gpu.upload(&vec![1.0f32; c], &[c])?;
    let zeros = gpu.zeros(&[c]);
    let (rm, rv) = (gpu.zeros(&[c]), gpu.upload(&vec![1.0f32; c], &[c])?);
    let w = gpu.upload(&vec![0.1f32; c * k * k], &[c, k, k])?;
    let ho = (h - 1) / s + 1;
    let dy = gpu.upload(&vals[..n * ho * ho * c], &[n, ho, ho, c])?;
    let (mean, rstd) = batchnorm::batchnorm_train_stats(&gpu, &x, None, (&rm, &rv), 0.1, 1e-3)?;
    // Wall median, and process CPU time per run (steadier than wall time while other jobs
    // share the cores; about twice the wall time when lavapipe's two threads both work).
    let time = |name: &str, f: &mut dyn FnMut() -> anyhow::Result<()>| -> anyhow::Result<()> {
        let t = gpu.time_median(2, 7, &mut *f)?;
        let c0 = cpu_seconds();
        for _ in 0..7 {
            f()?;
            gpu.sync()?;
        }
        let cpu = (cpu_seconds() - c0) / 7.0;
        println!(
            "{name:<40} {:8.2} ms wall {:8.2} ms cpu",
            t.as_secs_f64() * 1e3,
            cpu * 1e3
        );
        Ok(())
    };
    println!(
        "x [{n},{h},{h},{c}] k{k} s{s}: {:.1} M floats",
        len as f64 / 1e6
    );
    time("to_texture(x)", &mut || {
        gpu.to_texture(&x.buf, len).map(|_| ())
    })?;
    time("bn stats", &mut || {
        batchnorm::batchnorm_train_stats(&gpu, &x, None, (&rm, &rv), 0.1, 1e-3).map(|_| ())
    })?;
    time("bn+relu6 forward (unfused)", &mut || {
        batchnorm::batchnorm_act_train_forward(
            &gpu,
            &x,
            &ones,
            &zeros,
            (&rm, &rv),
            0.1,
            1e-3,
            batchnorm::BnAct::Relu6,
        )
        .map(|_| ())
    })?;
    time("dw forward", &mut || {
        depthwise::depthwise_forward(&gpu, &x, &w, s).map(|_| ())
    })?;
    time("fused forward", &mut || {
        bn_relu6_conv::bn_relu6_conv_forward(
            &gpu,
            &x,
            &ones,
            &zeros,
            (&rm, &rv),
            0.1,
            1e-3,
            &w,
            NextConv::Depthwise { stride: s },
        )
        .map(|_| ())
    })?;
    time("dw backward (input + weight)", &mut || {
        depthwise::depthwise_backward(&gpu, &x, &w, s, &dy).map(|_| ())
    })?;
    let da = gpu.upload(&vals, &[n, h, h, c])?;
    time("bn+relu6 backward", &mut || {
        batchnorm::batchnorm_act_train_backward(
            &gpu,
            &x,
            &ones,
            &zeros,
            (&mean, &rstd),
            &da,
            batchnorm::BnAct::Relu6,
        )
        .map(|_| ())
    })?;
    time("fused backward", &mut || {
        bn_relu6_conv::bn_relu6_conv_backward(
            &gpu,
            &x,
            &ones,
            &zeros,
            (&mean, &rstd),
            &w,
            NextConv::Depthwise { stride: s },
            &dy,
            true,
        )
        .map(|_| ())
    })?;
    Ok(())
}

/// User + system CPU time of this process, from /proc/self/stat (Linux; 0 elsewhere).
fn cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // Fields after the command name (which may hold spaces): utime and stime are the 12th
    // and 13th, in clock ticks of 1/100 s.
    let rest = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<f64> = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|v| v.parse().ok())
        .collect();
    f.iter().sum::<f64>() / 100.0
}
