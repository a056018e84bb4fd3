//! Times the three products of the `pw` workload (and pw fwd+bwd) under several environment
//! settings, alternating the settings round by round so that machine drift hits all alike.
//! Usage: gemm_time [ROUNDS] [NAME:KEY=VAL,KEY=VAL ...] ("base" for no change).
//! GT_SHAPE=n,h,w,cin,cout times another pointwise shape (default the pw workload's
//! 32,16,16,40,240); GT_ONLY=i times only product i (0 fwd, 1 dx, 2 dw, 3 pw, 4 dxKK, 5 dwT:
//! the weight gradient transposed, x^T dy).

use std::time::Instant;

use anyhow::Result;
use proxyless::gpu::{Gpu, GpuOptions};
use proxyless::ops::gemm::{gemm, Gemm};
use proxyless::ops::pointwise::{pointwise_backward, pointwise_forward, transposed_weight_product};

fn main() -> Result<()> {
    // lavapipe's threads, before any other thread starts (`gpu::cpu_driver_threads`).
    if let Some(n) = proxyless::gpu::cpu_driver_threads() {
        std::env::set_var("LP_NUM_THREADS", n);
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rounds: usize = args.first().and_then(|s| s.parse().ok()).unwrap_or(5);
    let mut variants: Vec<(String, Vec<(String, String)>)> = args
        .iter()
        .skip(1)
        .map(|v| {
            let (name, kv) = v.split_once(':').unwrap_or((v, ""));
            let kv = kv
                .split(',')
                .filter(|s| !s.is_empty())
                .map(|s| {
                    let (k, v) = s.split_once('=').expect("KEY=VAL");
                    (k.to_string(), v.to_string())
                })
                .collect();
            (name.to_string(), kv)
        })
        .collect();
    if variants.is_empty() {
        variants.push(("base".into(), vec![]));
    }
    let gpu = Gpu::new(&GpuOptions::default())?;
    let shape: Vec<usize> = std::env::var("GT_SHAPE")
        .unwrap_or_else(|_| "32,16,16,40,240".into())
        .split(',')
        .map(|v| v.trim().parse().expect("GT_SHAPE=n,h,w,cin,cout"))
        .collect();
    let [n, h, wd, cin, cout] = shape[..] else {
        panic!("GT_SHAPE=n,h,w,cin,cout");
    };
    let m = n * h * wd;
    let fill = |n: usize, s: f32| -> Vec<f32> {
        (0..n)
            .map(|i| ((i * 7919 % 1000) as f32 / 500.0 - 1.0) * s)
            .collect()
    };
    let x = gpu.upload(&fill(m * cin, 1.0), &[n, h, wd, cin])?;
    let w = gpu.upload(&fill(cout * cin, 0.4), &[cout, cin])?;
    let dy = gpu.upload(&fill(m * cout, 1.0), &[n, h, wd, cout])?;
    let y = gpu.empty(&[n, h, wd, cout]);
    let dx = gpu.empty(&[n, h, wd, cin]);
    let dw = gpu.empty(&[cout, cin]);
    let g_fwd = Gemm {
        m,
        n: cout,
        k: cin,
        a_si: cin,
        a_sk: 1,
        b_sk: 1,
        b_sj: cin,
        c_si: cout,
        c_sj: 1,
    };
    let g_dx = Gemm {
        m,
        n: cin,
        k: cout,
        a_si: cout,
        a_sk: 1,
        b_sk: cin,
        b_sj: 1,
        c_si: cin,
        c_sj: 1,
    };
    let g_dw = Gemm {
        m: cout,
        n: cin,
        k: m,
        a_si: 1,
        a_sk: cout,
        b_sk: cin,
        b_sj: 1,
        c_si: cin,
        c_sj: 1,
    };
    // dx with W read along k, as from a transposed copy of the weights (timing only).
    let g_dx_kk = Gemm {
        b_sk: 1,
        b_sj: cout,
        ..g_dx
    };
    let g_dwt = transposed_weight_product(m, cin, cout);
    let names = ["fwd", "dx", "dw", "pw", "dxKK", "dwT"];
    let mut times = vec![vec![Vec::new(); 6]; variants.len()];
    for round in 0..rounds + 1 {
        for (vi, (_, kv)) in variants.iter().enumerate() {
            let base = proxyless::gpu::tuning();
            proxyless::gpu::set_tuning(proxyless::gpu::Tuning::from_vars(
                kv.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            )?);
            let only: Option<usize> = std::env::var("GT_ONLY").ok().and_then(|s| s.parse().ok());
            for (pi, _) in names.iter().enumerate() {
                if only.is_some_and(|o| o != pi) {
                    continue;
                }
                let run = || -> Result<()> {
                    match pi {
                        0 => gemm(&gpu, &x.buf, &w.buf, &y.buf, g_fwd, false),
                        1 => gemm(&gpu, &dy.buf, &w.buf, &dx.buf, g_dx, false),
                        2 => gemm(&gpu, &dy.buf, &x.buf, &dw.buf, g_dw, false),
                        4 => gemm(&gpu, &dy.buf, &w.buf, &dx.buf, g_dx_kk, false),
                        5 => gemm(&gpu, &x.buf, &dy.buf, &dw.buf, g_dwt, false),
                        _ => {
                            let _y = pointwise_forward(&gpu, &x, &w)?;
                            let _g = pointwise_backward(&gpu, &x, &w, &dy)?;
                            Ok(())
                        }
                    }
                };
                let reps = 5;
                if round == 0 {
                    run()?;
                    gpu.sync()?;
                    continue;
                }
                for _ in 0..reps {
                    let t0 = Instant::now();
                    run()?;
                    gpu.sync()?;
                    times[vi][pi].push(t0.elapsed().as_secs_f64() * 1e3);
                }
            }
            proxyless::gpu::set_tuning(base);
        }
    }
    for (vi, (name, _)) in variants.iter().enumerate() {
        let mut line = format!("{name:<14}");
        for (pi, p) in names.iter().enumerate() {
            let t = &mut times[vi][pi];
            if t.is_empty() {
                continue;
            }
            t.sort_by(|a, b| a.partial_cmp(b).unwrap());
            line += &format!("  {p} {:6.2}", t[t.len() / 2]);
        }
        println!("{line}");
    }
    Ok(())
}
