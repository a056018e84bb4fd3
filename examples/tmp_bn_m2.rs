// Temporary: distribution of the BN backward dx error for tiny m.
use proxyless::gpu::{Gpu, GpuOptions};
use proxyless::verify::{f64s, Checker};
use proxyless::{ops, reference};
fn main() -> anyhow::Result<()> {
    let gpu = Gpu::new(&GpuOptions::default())?;
    let mut c = Checker::new(&gpu, 7);
    for &(m, ch, eps, r) in &[
        (2usize, 1usize, 1e-3f32, 0.05f32),
        (2, 3, 1e-3, 0.05),
        (2, 24, 1e-3, 0.05),
        (3, 1, 1e-3, 1.0),
        (3, 1, 1e-5, 1.0),
        (4, 1, 1e-5, 1.0),
        (7, 1, 1e-5, 1.0),
    ] {
        let mut worst = 0.0f64;
        let mut worst_y = 0.0f64;
        for _ in 0..1000 {
            let xv = c.random_in(m * ch, -r, r);
            let gv = c.random_in(ch, 0.5, 1.5);
            let dyv = c.random(m * ch);
            let x = c.upload(&xv, &[m, ch])?;
            let g = c.upload(&gv, &[ch])?;
            let b = c.upload(&gv, &[ch])?;
            let rm = c.upload(&gv, &[ch])?;
            let rv = c.upload(&gv, &[ch])?;
            let dy = c.upload(&dyv, &[m, ch])?;
            let (y, mean, rstd) =
                ops::batchnorm::batchnorm_train_forward(&gpu, &x, &g, &b, &rm, &rv, 0.1, eps)?;
            let (dx, _, _) =
                ops::batchnorm::batchnorm_train_backward(&gpu, &x, &g, &mean, &rstd, &dy)?;
            let (dx_ref, _, _) = reference::batchnorm_train_backward(
                &f64s(&xv),
                m,
                ch,
                &f64s(&gv),
                eps as f64,
                &f64s(&dyv),
            );
            let (y_ref, _, _) = reference::batchnorm_train_forward(
                &f64s(&xv),
                m,
                ch,
                &f64s(&gv),
                &f64s(&gv),
                eps as f64,
            );
            let e = reference::rel_error(&f64s(&gpu.read_f32(&dx)?), &dx_ref);
            let ey = reference::rel_error(&f64s(&gpu.read_f32(&y)?), &y_ref);
            worst = worst.max(e);
            worst_y = worst_y.max(ey);
        }
        println!("m={m} c={ch} eps={eps}: worst dx {worst:.2e} y {worst_y:.2e}");
    }
    Ok(())
}
