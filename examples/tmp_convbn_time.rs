// Temporary: timings of the stem conv and batchnorm on this adapter.
use proxyless::gpu::{Gpu, GpuOptions};
use proxyless::ops::{batchnorm as bn, conv};
fn main() -> anyhow::Result<()> {
    let gpu = Gpu::new(&GpuOptions::default())?;
    println!("{}", gpu.adapter_name());
    let r = |n: usize| -> Vec<f32> {
        (0..n)
            .map(|i| ((i * 7919 % 1000) as f32 / 500.0) - 1.0 + 1e-3)
            .collect()
    };
    for &(n, h, cin, cout, s) in &[
        (32usize, 32usize, 3usize, 32usize, 1usize),
        (8, 224, 3, 32, 2),
    ] {
        let x = gpu.upload(&r(n * h * h * cin), &[n, h, h, cin])?;
        let w = gpu.upload(&r(cout * cin * 9), &[cout, cin, 3, 3])?;
        let y = conv::conv2d_forward(&gpu, &x, &w, s)?;
        let dy = gpu.upload(&r(y.numel()), &y.shape)?;
        let tf = gpu.time_median(3, 10, || {
            conv::conv2d_forward(&gpu, &x, &w, s)?;
            Ok(())
        })?;
        let tb = gpu.time_median(3, 10, || {
            conv::conv2d_backward(&gpu, &x, &w, s, &dy)?;
            Ok(())
        })?;
        let macs = (y.numel() * cin * 9) as f64;
        println!("conv x[{n},{h},{h},{cin}]->{cout} s{s}: fwd {:.2} ms ({:.1} GFLOP/s), bwd (dx+dw) {:.2} ms ({:.1} GFLOP/s)",
            tf.as_secs_f64()*1e3, 2.0*macs/tf.as_secs_f64()/1e9, tb.as_secs_f64()*1e3, 4.0*macs/tb.as_secs_f64()/1e9);
    }
    let shape = [32usize, 16, 16, 240];
    let numel: usize = shape.iter().product();
    let x = gpu.upload(&r(numel), &shape)?;
    let dy = gpu.upload(&r(numel).iter().rev().cloned().collect::<Vec<_>>(), &shape)?;
    let c = 240;
    let g = gpu.upload(&vec![1.0f32; c], &[c])?;
    let b = gpu.upload(&vec![0.0f32; c], &[c])?;
    let rm = gpu.upload(&vec![0.0f32; c], &[c])?;
    let rv = gpu.upload(&vec![1.0f32; c], &[c])?;
    let (_, mean, rstd) = bn::batchnorm_train_forward(&gpu, &x, &g, &b, &rm, &rv, 0.1, 1e-3)?;
    let tf = gpu.time_median(3, 20, || {
        bn::batchnorm_train_forward(&gpu, &x, &g, &b, &rm, &rv, 0.1, 1e-3)?;
        Ok(())
    })?;
    let te = gpu.time_median(3, 20, || {
        bn::batchnorm_eval_forward(&gpu, &x, &g, &b, &rm, &rv, 1e-3)?;
        Ok(())
    })?;
    let tb = gpu.time_median(3, 20, || {
        bn::batchnorm_train_backward(&gpu, &x, &g, &mean, &rstd, &dy)?;
        Ok(())
    })?;
    let mb = numel as f64 * 4.0 / 1e6;
    println!("batchnorm {shape:?} ({mb:.1} MB): train fwd {:.2} ms, eval fwd {:.2} ms, train bwd {:.2} ms",
        tf.as_secs_f64()*1e3, te.as_secs_f64()*1e3, tb.as_secs_f64()*1e3);
    let tc = gpu.time_median(3, 20, || {
        let o = gpu.empty(&shape);
        gpu.copy(&x.buf, &o.buf)?;
        Ok(())
    })?;
    let out = gpu.empty(&[c]);
    let ts = gpu.time_median(3, 20, || {
        proxyless::ops::reduce::channel_sum(&gpu, &x.buf, numel / c, c, &out.buf, false)
    })?;
    println!(
        "  (channel_sum of the same tensor: {:.2} ms)",
        ts.as_secs_f64() * 1e3
    );
    println!(
        "  (a device copy of the same tensor: {:.2} ms)",
        tc.as_secs_f64() * 1e3
    );
    Ok(())
}
