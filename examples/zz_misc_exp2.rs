// Temporary: reference vs GPU time for the big linear shape.
use proxyless::gpu::{Gpu, GpuOptions};
use proxyless::{ops, reference};
fn main() -> anyhow::Result<()> {
    let gpu = Gpu::new(&GpuOptions::default())?;
    let (n, fin, fout) = (64usize, 1280usize, 1000usize);
    let xd = vec![0.5f64; n * fin];
    let wd = vec![0.25f64; fin * fout];
    let bd = vec![0.1; fout];
    let dyd = vec![0.1; n * fout];
    let t0 = std::time::Instant::now();
    let y = reference::linear_forward(&xd, n, fin, &wd, &bd, fout);
    let r = reference::linear_backward(&xd, n, fin, &wd, fout, &dyd);
    println!("reference {:?} {}", t0.elapsed(), y.len() + r.0.len());
    let x = gpu.upload(&vec![0.5f32; n * fin], &[n, fin])?;
    let w = gpu.upload(&vec![0.25f32; fout * fin], &[fout, fin])?;
    let b = gpu.upload(&vec![0.1f32; fout], &[fout])?;
    let dy = gpu.upload(&vec![0.1f32; n * fout], &[n, fout])?;
    for _ in 0..3 {
        let t0 = std::time::Instant::now();
        ops::linear::linear_forward(&gpu, &x, &w, &b)?;
        gpu.sync()?;
        println!("fwd {:?}", t0.elapsed());
        let t0 = std::time::Instant::now();
        ops::linear::linear_backward(&gpu, &x, &w, &dy)?;
        gpu.sync()?;
        println!("bwd {:?}", t0.elapsed());
    }
    Ok(())
}
