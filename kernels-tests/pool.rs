//! The buffer pool: repeated kernels reuse memory instead of allocating.

use proxyless::gpu::{Gpu, GpuOptions};
use proxyless::ops::pointwise::{pointwise_backward, pointwise_forward};

/// Its own device, so that tests running in parallel do not move this pool's counters.
fn private_gpu() -> Gpu {
    Gpu::new(&GpuOptions::default()).expect("a wgpu adapter (lavapipe: mesa-vulkan-drivers)")
}

#[test]
fn repeating_a_kernel_leaves_the_high_water_mark_unchanged() {
    let gpu = private_gpu();
    let x = gpu
        .upload(&vec![0.5f32; 2 * 5 * 5 * 24], &[2, 5, 5, 24])
        .unwrap();
    let w = gpu.upload(&vec![0.25f32; 144 * 24], &[144, 24]).unwrap();
    let dy = gpu
        .upload(&vec![1.0f32; 2 * 5 * 5 * 144], &[2, 5, 5, 144])
        .unwrap();
    let step = || {
        let y = pointwise_forward(&gpu, &x, &w).unwrap();
        let (dx, dw) = pointwise_backward(&gpu, &x, &w, &dy).unwrap();
        drop((y, dx, dw));
    };
    step();
    gpu.sync().unwrap();
    let first = gpu.pool_stats();
    assert!(first.high_water_bytes > 0 && first.allocations > 0);
    for _ in 0..100 {
        step();
    }
    gpu.sync().unwrap();
    let after = gpu.pool_stats();
    assert_eq!(
        after.high_water_bytes, first.high_water_bytes,
        "high-water mark moved"
    );
    assert_eq!(
        after.allocations, first.allocations,
        "the pool allocated again"
    );
    assert_eq!(after.live_bytes, first.live_bytes, "buffers leaked");
}

#[test]
fn live_bytes_return_to_zero_when_tensors_drop() {
    let gpu = private_gpu();
    assert_eq!(gpu.pool_stats().live_bytes, 0);
    let a = gpu.empty(&[1000]);
    let b = gpu.zeros(&[3, 7]);
    let live = gpu.pool_stats().live_bytes;
    assert!(live >= 4000 + 84, "live {live}");
    drop((a, b));
    assert_eq!(gpu.pool_stats().live_bytes, 0);
    assert_eq!(gpu.pool_stats().high_water_bytes, live);
}

#[test]
fn poison_scope_fills_new_allocations_with_nan() {
    let gpu = private_gpu();
    let clean = gpu.zeros(&[10]);
    drop(clean);
    let scope = gpu.poison_scope();
    let t = gpu.empty(&[10]);
    assert!(gpu.read_f32(&t).unwrap().iter().all(|v| v.is_nan()));
    drop((t, scope));
    let t = gpu.zeros(&[10]);
    assert!(gpu.read_f32(&t).unwrap().iter().all(|&v| v == 0.0));
}
