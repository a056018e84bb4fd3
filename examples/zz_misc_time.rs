// Temporary: timings of the misc kernels.
use proxyless::gpu::{Gpu, GpuOptions};
use proxyless::ops;
fn main() -> anyhow::Result<()> {
    let gpu = Gpu::new(&GpuOptions::default())?;
    let t =
        |name: &str, d: std::time::Duration| println!("{name:50} {:9.3} ms", d.as_secs_f64() * 1e3);
    for &(n, fin, fout) in &[(64usize, 1280usize, 1000usize), (32, 1280, 10)] {
        let x = gpu.upload(&vec![0.5f32; n * fin], &[n, fin])?;
        let w = gpu.upload(&vec![0.25f32; fout * fin], &[fout, fin])?;
        let b = gpu.upload(&vec![0.1f32; fout], &[fout])?;
        let dy = gpu.upload(&vec![0.1f32; n * fout], &[n, fout])?;
        t(
            &format!("linear_forward [{n},{fin}]->{fout}"),
            gpu.time_median(2, 5, || {
                ops::linear::linear_forward(&gpu, &x, &w, &b)?;
                Ok(())
            })?,
        );
        t(
            &format!("linear_backward [{n},{fin}]->{fout}"),
            gpu.time_median(2, 5, || {
                ops::linear::linear_backward(&gpu, &x, &w, &dy)?;
                Ok(())
            })?,
        );
    }
    let len = 64 * 56 * 56 * 24usize; // a big activation of the network at batch 64
    let x = gpu.upload(&vec![0.5f32; len], &[len])?;
    let y = gpu.upload(&vec![0.5f32; len], &[len])?;
    let z = gpu.upload(&vec![0.5f32; len], &[len])?;
    let n = len as f64 * 4.0;
    let bw = |d: std::time::Duration, bytes: f64| bytes / d.as_secs_f64() / 1e9;
    let d = gpu.time_median(2, 7, || {
        ops::elementwise::relu6_forward(&gpu, &x)?;
        Ok(())
    })?;
    t(
        &format!("relu6_forward [{len}]  {:.1} GB/s", bw(d, 2.0 * n)),
        d,
    );
    let d = gpu.time_median(2, 7, || {
        ops::elementwise::relu6_backward(&gpu, &x, &y)?;
        Ok(())
    })?;
    t(
        &format!("relu6_backward [{len}]  {:.1} GB/s", bw(d, 3.0 * n)),
        d,
    );
    let d = gpu.time_median(2, 7, || {
        ops::elementwise::add(&gpu, &x, &y)?;
        Ok(())
    })?;
    t(&format!("add [{len}]  {:.1} GB/s", bw(d, 3.0 * n)), d);
    let d = gpu.time_median(2, 7, || ops::elementwise::add_assign(&gpu, &z, &y))?;
    t(
        &format!("add_assign [{len}]  {:.1} GB/s", bw(d, 3.0 * n)),
        d,
    );
    let d = gpu.time_median(2, 7, || {
        ops::elementwise::scale(&gpu, &x, 0.5)?;
        Ok(())
    })?;
    t(&format!("scale [{len}]  {:.1} GB/s", bw(d, 2.0 * n)), d);
    let d = gpu.time_median(2, 7, || {
        ops::dropout::dropout_forward(&gpu, &x, 0.2, 7)?;
        Ok(())
    })?;
    t(
        &format!("dropout_forward [{len}]  {:.1} GB/s", bw(d, 2.0 * n)),
        d,
    );
    let m = gpu.zeros(&[len]);
    let v = gpu.zeros(&[len]);
    let d = gpu.time_median(2, 7, || {
        ops::optim::sgd_step(&gpu, &z, &y, &m, 0.1, 0.9, 1e-4, true)
    })?;
    t(&format!("sgd_step [{len}]  {:.1} GB/s", bw(d, 5.0 * n)), d);
    let d = gpu.time_median(2, 7, || {
        ops::optim::adam_step(&gpu, &z, &y, &m, &v, 0.1, 0.0, 0.999, 1e-8, 0.0, 3)
    })?;
    t(&format!("adam_step [{len}]  {:.1} GB/s", bw(d, 7.0 * n)), d);
    let copy = gpu.empty(&[len]);
    let d = gpu.time_median(2, 7, || gpu.copy(&x.buf, &copy.buf))?;
    t(
        &format!("buffer copy [{len}]  {:.1} GB/s", bw(d, 2.0 * n)),
        d,
    );
    let px = gpu.upload(&vec![0.5f32; 64 * 49 * 1280], &[64, 7, 7, 1280])?;
    let pdy = gpu.upload(&vec![0.5f32; 64 * 1280], &[64, 1280])?;
    t(
        "global_avg_pool_forward [64,7,7,1280]",
        gpu.time_median(2, 7, || {
            ops::pool::global_avg_pool_forward(&gpu, &px)?;
            Ok(())
        })?,
    );
    t(
        "global_avg_pool_backward [64,7,7,1280]",
        gpu.time_median(2, 7, || {
            ops::pool::global_avg_pool_backward(&gpu, &pdy, &[64, 7, 7, 1280])?;
            Ok(())
        })?,
    );
    for &(n, k) in &[(64usize, 1000usize), (256, 1000), (64, 10)] {
        let z = gpu.upload(&vec![0.5f32; n * k], &[n, k])?;
        let l = gpu.upload(&vec![3u32; n], &[n])?;
        t(
            &format!("softmax_cross_entropy [{n},{k}]"),
            gpu.time_median(2, 7, || {
                ops::loss::softmax_cross_entropy(&gpu, &z, &l, 0.1)?;
                Ok(())
            })?,
        );
        t(
            &format!("count_correct [{n},{k}]"),
            gpu.time_median(2, 7, || {
                ops::loss::count_correct(&gpu, &z, &l)?;
                Ok(())
            })?,
        );
    }
    Ok(())
}
