//! Times batch norm train forward + backward on the dw5 activation shape [32,16,16,240].
use proxyless::gpu::Gpu;
use proxyless::ops::batchnorm::{batchnorm_train_backward, batchnorm_train_forward};
fn main() -> anyhow::Result<()> {
    let gpu = Gpu::new(&Default::default())?;
    let shape = [32, 16, 16, 240];
    let n: usize = shape.iter().product();
    let vals: Vec<f32> = (0..n)
        .map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0)
        .collect();
    let x = gpu.upload(&vals, &shape)?;
    let dy = gpu.upload(&vals, &shape)?;
    let gamma = gpu.upload(&vec![1.0f32; 240], &[240])?;
    let beta = gpu.upload(&vec![0.0f32; 240], &[240])?;
    let rm = gpu.zeros(&[240]);
    let rv = gpu.zeros(&[240]);
    let t = gpu.time_median(3, 10, || {
        let (_y, mean, rstd) =
            batchnorm_train_forward(&gpu, &x, &gamma, &beta, &rm, &rv, 0.1, 1e-3)?;
        batchnorm_train_backward(&gpu, &x, &gamma, &mean, &rstd, &dy)?;
        Ok(())
    })?;
    println!(
        "batchnorm train fwd+bwd {:?}: {:.2} ms",
        shape,
        t.as_secs_f64() * 1e3
    );
    Ok(())
}
