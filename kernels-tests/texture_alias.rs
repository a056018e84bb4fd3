//! Textures that share a buffer's memory (`gpu::alias`, on CPU Vulkan adapters such as
//! lavapipe): `to_texture` is then a view, not a copy. It must show the buffer's current
//! contents, keep the memory from being handed out again while it lives, count no extra
//! memory, and a kernel must not be let read through one the buffer it writes.

use proxyless::gpu::{Gpu, GpuOptions};
use proxyless::ops::gemm::gemm_sharing_a;
use proxyless::ops::pointwise::{forward_product, pointwise_forward};
use proxyless::reference;

use crate::common::values;

fn private_gpu() -> Gpu {
    Gpu::new(&GpuOptions::default()).expect("a wgpu adapter (lavapipe: mesa-vulkan-drivers)")
}

/// A device of its own if the adapter should alias textures (lavapipe, on CI), which it then
/// must do; None, with a note, elsewhere.
fn aliasing_gpu() -> Option<Gpu> {
    let gpu = private_gpu();
    let info = &gpu.info;
    // lavapipe, the driver aliasing is for (`gpu::alias`).
    if info.device_type != wgpu::DeviceType::Cpu
        || info.backend != wgpu::Backend::Vulkan
        || info.driver != "llvmpipe"
    {
        eprintln!(
            "adapter {} does not alias textures; skipped",
            gpu.adapter_name()
        );
        return None;
    }
    assert!(
        gpu.aliases_textures(),
        "lavapipe-like adapter but no aliasing"
    );
    Some(gpu)
}

// [7, 9, 11, 32] floats: 22176, over one texture row (4096 floats) and not a whole number
// of rows, so the pool bucket (whole rows) is bigger than the tensor.
const SHAPE: [usize; 4] = [7, 9, 11, 32];
const COUT: usize = 24;

fn rel_err(got: &[f32], want: &[f64]) -> f64 {
    let got: Vec<f64> = got.iter().map(|&v| v as f64).collect();
    reference::rel_error(&got, want)
}

#[test]
fn an_aliasing_texture_shows_the_buffer_as_it_is_and_holds_its_memory() {
    let Some(gpu) = aliasing_gpu() else {
        return;
    };
    let n: usize = SHAPE.iter().product();
    let m = n / SHAPE[3];
    let w_host = values(1, COUT * SHAPE[3]);
    let w = gpu.upload(&w_host, &[COUT, SHAPE[3]]).unwrap();
    let wd: Vec<f64> = w_host.iter().map(|&v| v as f64).collect();
    let product = |x_host: &[f32]| {
        let xd: Vec<f64> = x_host.iter().map(|&v| v as f64).collect();
        reference::pointwise::pointwise_forward(&xd, m, SHAPE[3], &wd, COUT)
    };

    let mut x_host = values(2, n);
    let x = gpu.upload(&x_host, &SHAPE).unwrap();
    gpu.sync().unwrap();
    let before = gpu.pool_stats();
    let t = gpu.to_texture(&x.buf, n).unwrap();
    let during = gpu.pool_stats();
    assert_eq!(
        (during.texture_bytes, during.live_bytes),
        (before.texture_bytes, before.live_bytes),
        "an aliasing texture took memory of its own"
    );
    // The product reads x through its texture: written since, the view shows the new values.
    let y = pointwise_forward(&gpu, &x, &w).unwrap();
    assert!(rel_err(&gpu.read_f32(&y).unwrap(), &product(&x_host)) < 1e-4);
    x_host = values(3, n);
    gpu.write(&x.buf, &x_host).unwrap();
    let y = pointwise_forward(&gpu, &x, &w).unwrap();
    assert!(
        rel_err(&gpu.read_f32(&y).unwrap(), &product(&x_host)) < 1e-4,
        "the product read old contents after Gpu::write"
    );

    // The texture outlives the tensor: the memory stays on loan (counted live), the pool
    // hands out other memory for a tensor of the same size, and the texture still shows x.
    let x_bytes = x.device_bytes();
    let live = gpu.pool_stats().live_bytes;
    drop(x);
    assert_eq!(
        gpu.pool_stats().live_bytes,
        live,
        "x's memory went back early"
    );
    let other = gpu.upload(&vec![f32::NAN; n], &SHAPE).unwrap();
    let y = gpu.empty(&[m, COUT]);
    let g = forward_product(m, SHAPE[3], COUT);
    gemm_sharing_a(&gpu, &other.buf, Some(&t), &w.buf, &y.buf, g, false).unwrap();
    assert!(
        rel_err(&gpu.read_f32(&y).unwrap(), &product(&x_host)) < 1e-4,
        "the memory under a live texture was handed out again"
    );
    drop(t);
    drop((other, y));
    let end = gpu.pool_stats();
    assert_eq!(end.live_bytes, live - x_bytes, "x's memory did not go back");
}

#[test]
fn a_kernel_may_not_read_through_a_texture_the_buffer_it_writes() {
    let Some(gpu) = aliasing_gpu() else {
        return;
    };
    let n: usize = SHAPE.iter().product();
    let m = n / SHAPE[3];
    // C = A B with A read through the texture of C itself (square product so the shapes fit).
    let c = gpu
        .upload(&values(4, m * SHAPE[3]), &[m, SHAPE[3]])
        .unwrap();
    let b = gpu
        .upload(&values(5, SHAPE[3] * SHAPE[3]), &[SHAPE[3], SHAPE[3]])
        .unwrap();
    let t = gpu.to_texture(&c.buf, m * SHAPE[3]).unwrap();
    let g = forward_product(m, SHAPE[3], SHAPE[3]);
    let err = gemm_sharing_a(&gpu, &c.buf, Some(&t), &b.buf, &c.buf, g, false)
        .expect_err("a texture view of the output was accepted as an input");
    assert!(err
        .to_string()
        .contains("texture view of a buffer the kernel also writes"));
}

/// Trimming the pool while a recorded dispatch still reads an aliasing texture: the tensor and
/// its texture handle are dropped and the pool trimmed before the dispatch is submitted, and
/// a tensor of the same size is then filled with NaN (likely in the memory just freed). The
/// texture keeps its buffer's memory alive until the device is done with it, so the product
/// reads x's values.
#[test]
fn trimming_the_pool_keeps_the_memory_a_queued_texture_reads() {
    let Some(gpu) = aliasing_gpu() else {
        return;
    };
    let n: usize = SHAPE.iter().product();
    let m = n / SHAPE[3];
    let w_host = values(6, COUT * SHAPE[3]);
    let w = gpu.upload(&w_host, &[COUT, SHAPE[3]]).unwrap();
    let x_host = values(7, n);
    let wd: Vec<f64> = w_host.iter().map(|&v| v as f64).collect();
    let xd: Vec<f64> = x_host.iter().map(|&v| v as f64).collect();
    let want = reference::pointwise::pointwise_forward(&xd, m, SHAPE[3], &wd, COUT);
    for round in 0..8 {
        let x = gpu.upload(&x_host, &SHAPE).unwrap();
        gpu.sync().unwrap();
        let y = pointwise_forward(&gpu, &x, &w).unwrap();
        drop(x);
        gpu.trim_pool();
        let others: Vec<_> = (0..4)
            .map(|_| gpu.upload(&vec![f32::NAN; n], &SHAPE).unwrap())
            .collect();
        let got = gpu.read_f32(&y).unwrap();
        assert!(
            rel_err(&got, &want) < 1e-4,
            "round {round}: the product read memory freed under its texture"
        );
        drop(others);
    }
}
