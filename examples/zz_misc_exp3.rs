// Temporary: gemm orientations for the classifier shape.
use proxyless::gpu::{Gpu, GpuOptions};
use proxyless::ops::gemm::{gemm, Gemm};
fn main() -> anyhow::Result<()> {
    let gpu = Gpu::new(&GpuOptions::default())?;
    let (n, fin, fout) = (64usize, 1280usize, 1000usize);
    let x = gpu.upload(&vec![0.5f32; n * fin], &[n, fin])?;
    let w = gpu.upload(&vec![0.25f32; fout * fin], &[fout, fin])?;
    let dy = gpu.upload(&vec![0.1f32; n * fout], &[n, fout])?;
    let y = gpu.empty(&[n, fout]);
    let dx = gpu.empty(&[n, fin]);
    let dw = gpu.empty(&[fout, fin]);
    let fwd = Gemm {
        m: n,
        n: fout,
        k: fin,
        a_si: fin,
        a_sk: 1,
        b_sk: 1,
        b_sj: fin,
        c_si: fout,
        c_sj: 1,
    };
    let fwd_t = Gemm {
        m: fout,
        n,
        k: fin,
        a_si: fin,
        a_sk: 1,
        b_sk: 1,
        b_sj: fin,
        c_si: n,
        c_sj: 1,
    };
    let dx_g = Gemm {
        m: n,
        n: fin,
        k: fout,
        a_si: fout,
        a_sk: 1,
        b_sk: fin,
        b_sj: 1,
        c_si: fin,
        c_sj: 1,
    };
    // dx^T [fin, n] = W^T dy^T: A(i,k) = w[k*fin + i], B(k,j) = dy[j*fout + k]
    let dx_t = Gemm {
        m: fin,
        n,
        k: fout,
        a_si: 1,
        a_sk: fin,
        b_sk: 1,
        b_sj: fout,
        c_si: n,
        c_sj: 1,
    };
    let dw_g = Gemm {
        m: fout,
        n: fin,
        k: n,
        a_si: 1,
        a_sk: fout,
        b_sk: fin,
        b_sj: 1,
        c_si: fin,
        c_sj: 1,
    };
    for _ in 0..2 {
        for (name, g, a, b, c) in [
            ("fwd", fwd, &x, &w, &y),
            ("fwd_t", fwd_t, &w, &x, &y),
            ("dx", dx_g, &dy, &w, &dx),
            ("dx_t", dx_t, &w, &dy, &dx),
            ("dw", dw_g, &dy, &x, &dw),
        ] {
            let d = gpu.time_median(0, 3, || gemm(&gpu, &a.buf, &b.buf, &c.buf, g, false))?;
            println!("{name:6} {:8.1} ms", d.as_secs_f64() * 1e3);
        }
    }
    Ok(())
}
