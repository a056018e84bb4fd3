//! Kept texture copies (`Gpu::to_texture`): a kernel reading a tensor through a texture must
//! see every write made to the tensor since the copy, whatever command made it.

use proxyless::gpu::{Gpu, GpuOptions, Tensor};
use proxyless::ops::pointwise::pointwise_forward;
use proxyless::ops::reduce::sum_slices;
use proxyless::reference;

use crate::common::values;

/// Its own device, so that the pool counters below are this test's alone; with texture
/// copies, which these tests are about, even where textures could alias buffers
/// (kernels-tests/texture_alias.rs).
fn private_gpu() -> Gpu {
    Gpu::new(&GpuOptions {
        copy_textures: true,
        ..Default::default()
    })
    .expect("a wgpu adapter (lavapipe: mesa-vulkan-drivers)")
}

const M: usize = 2 * 5 * 7;
const CIN: usize = 12;
const COUT: usize = 20;

/// The pointwise product of x and w on the device, against the CPU reference of `x_host`.
fn assert_product(gpu: &Gpu, x: &Tensor, w: &Tensor, x_host: &[f32], w_host: &[f32], what: &str) {
    let y = gpu
        .read_f32(&pointwise_forward(gpu, x, w).unwrap())
        .unwrap();
    let xd: Vec<f64> = x_host.iter().map(|&v| v as f64).collect();
    let wd: Vec<f64> = w_host.iter().map(|&v| v as f64).collect();
    let want = reference::pointwise::pointwise_forward(&xd, M, CIN, &wd, COUT);
    let err: f64 = y
        .iter()
        .zip(&want)
        .map(|(a, b)| (*a as f64 - b).powi(2))
        .sum::<f64>();
    let norm: f64 = want.iter().map(|b| b * b).sum::<f64>();
    assert!(
        (err / norm.max(1e-30)).sqrt() < 1e-4,
        "after {what}: the product read a stale copy of x"
    );
}

#[test]
fn a_texture_copy_is_not_reused_after_its_buffer_is_written() {
    let gpu = private_gpu();
    let w_host = values(1, COUT * CIN);
    let w = gpu.upload(&w_host, &[COUT, CIN]).unwrap();
    let mut x_host = values(2, M * CIN);
    let x = gpu.upload(&x_host, &[2, 5, 7, CIN]).unwrap();
    assert_product(&gpu, &x, &w, &x_host, &w_host, "the upload");
    // Reused while nothing writes x: same result.
    assert_product(&gpu, &x, &w, &x_host, &w_host, "no write");

    x_host = values(3, M * CIN);
    gpu.write(&x.buf, &x_host).unwrap();
    assert_product(&gpu, &x, &w, &x_host, &w_host, "Gpu::write");

    x_host = values(4, M * CIN);
    let src = gpu.upload(&x_host, &[M * CIN]).unwrap();
    gpu.copy(&src.buf, &x.buf).unwrap();
    assert_product(&gpu, &x, &w, &x_host, &w_host, "Gpu::copy");

    // A kernel writing x through a storage binding (one slice summed is a copy).
    x_host = values(5, M * CIN);
    let src = gpu.upload(&x_host, &[M * CIN]).unwrap();
    sum_slices(&gpu, &src.buf, &x.buf, M * CIN, 1, false).unwrap();
    assert_product(&gpu, &x, &w, &x_host, &w_host, "a kernel's write");

    // The weight's copy too.
    let w_host = values(6, COUT * CIN);
    gpu.write(&w.buf, &w_host).unwrap();
    assert_product(&gpu, &x, &w, &x_host, &w_host, "a write of w");

    gpu.clear(&x.buf);
    let y = gpu
        .read_f32(&pointwise_forward(&gpu, &x, &w).unwrap())
        .unwrap();
    assert!(
        y.iter().all(|&v| v == 0.0),
        "after Gpu::clear: a stale copy of x"
    );
}

#[test]
fn kept_textures_count_as_live_memory_and_go_with_their_buffer() {
    let gpu = private_gpu();
    let x = gpu.upload(&values(7, 4096), &[4096]).unwrap();
    let before = gpu.pool_stats();
    assert_eq!(before.texture_bytes, 0);
    let t = gpu.to_texture(&x.buf, 4096).unwrap();
    drop(t);
    let kept = gpu.pool_stats();
    assert!(kept.texture_bytes >= 4096 * 4, "{kept:?}");
    assert_eq!(kept.live_bytes, before.live_bytes + kept.texture_bytes);
    assert!(kept.high_water_bytes >= kept.live_bytes);
    drop(x);
    let after = gpu.pool_stats();
    assert_eq!((after.live_bytes, after.texture_bytes), (0, 0), "{after:?}");
}

#[test]
fn a_buffer_released_to_its_texture_comes_back_when_used() {
    let gpu = private_gpu();
    let w_host = values(8, COUT * CIN);
    let w = gpu.upload(&w_host, &[COUT, CIN]).unwrap();
    let x_host = values(9, M * CIN);
    let x = gpu.upload(&x_host, &[2, 5, 7, CIN]).unwrap();
    gpu.sync().unwrap();
    let resident = gpu.pool_stats();

    let t = gpu.to_texture(&x.buf, x.numel()).unwrap();
    gpu.keep_only_texture(&x.buf, x.numel(), &t);
    drop(t);
    let released = gpu.pool_stats();
    assert_eq!(
        released.live_bytes - released.texture_bytes,
        resident.live_bytes - x.device_bytes(),
        "the buffer went back to the pool"
    );
    assert!(released.texture_bytes >= (M * CIN * 4) as u64);

    // The pool hands the released buffer out again: overwrite it, so that only a real
    // restore from the texture gives x back.
    let scratch = gpu.upload(&vec![f32::NAN; M * CIN], &[M * CIN]).unwrap();
    // Read through the texture: no restore needed, same product.
    assert_product(&gpu, &x, &w, &x_host, &w_host, "release");
    // Read back: the buffer is restored from the texture.
    assert_eq!(gpu.read_f32(&x).unwrap(), x_host, "restored contents");
    let restored = gpu.pool_stats();
    assert_eq!(
        restored.live_bytes - restored.texture_bytes,
        resident.live_bytes + scratch.device_bytes(),
        "the buffer is back"
    );

    // Released again, then written by a kernel: the write lands in a restored buffer and the
    // texture copy is dropped.
    let t = gpu.to_texture(&x.buf, x.numel()).unwrap();
    gpu.keep_only_texture(&x.buf, x.numel(), &t);
    drop(t);
    let x_host = values(10, M * CIN);
    let src = gpu.upload(&x_host, &[M * CIN]).unwrap();
    sum_slices(&gpu, &src.buf, &x.buf, M * CIN, 1, false).unwrap();
    assert_product(
        &gpu,
        &x,
        &w,
        &x_host,
        &w_host,
        "a kernel's write after release",
    );

    // Released, then partly overwritten from the host: the rest must survive.
    let t = gpu.to_texture(&x.buf, x.numel()).unwrap();
    gpu.keep_only_texture(&x.buf, x.numel(), &t);
    drop(t);
    let scratch2 = gpu.upload(&vec![f32::NAN; M * CIN], &[M * CIN]).unwrap();
    let head = values(11, 5);
    gpu.write(&x.buf, &head).unwrap();
    let mut want = x_host.clone();
    want[..5].copy_from_slice(&head);
    assert_eq!(
        gpu.read_f32(&x).unwrap(),
        want,
        "a partial write after release"
    );
    drop((x, src, w, scratch, scratch2));
    let end = gpu.pool_stats();
    assert_eq!((end.live_bytes, end.texture_bytes), (0, 0), "{end:?}");
}

/// A depthwise input larger than the kept-copy limit for ordinary copies (64 Ki floats).
const DW_SHAPE: [usize; 4] = [2, 33, 31, 36];

#[test]
fn an_op_input_keeps_its_copy_for_the_backward_and_can_live_in_it_alone() {
    use proxyless::ops::depthwise::{depthwise_backward, depthwise_forward};
    let gpu = private_gpu();
    let n: usize = DW_SHAPE.iter().product();
    assert!(n > 1 << 16);
    let x_host = values(12, n);
    let x = gpu.upload(&x_host, &DW_SHAPE).unwrap();
    let w = gpu.upload(&values(13, 36 * 25), &[36, 5, 5]).unwrap();
    let dy = gpu.upload(&values(14, n), &DW_SHAPE).unwrap();
    // Nothing to release before an op has made a copy, and an ordinary copy of this many
    // floats is not kept.
    drop(gpu.to_texture(&x.buf, n).unwrap());
    assert_eq!(
        gpu.pool_stats().texture_bytes,
        0,
        "an ordinary copy was kept"
    );
    assert!(!gpu.keep_only_kept_texture(&x.buf, n));

    drop(depthwise_forward(&gpu, &x, &w, 1).unwrap());
    assert!(
        gpu.pool_stats().texture_bytes >= (n * 4) as u64,
        "the forward keeps x's copy"
    );
    let kept = gpu.to_texture(&x.buf, n).unwrap();
    assert!(
        std::sync::Arc::ptr_eq(&kept, &gpu.to_texture(&x.buf, n).unwrap()),
        "the same copy is handed out again"
    );
    drop(kept);
    let with_kept = {
        let (dx, dw) = depthwise_backward(&gpu, &x, &w, 1, &dy).unwrap();
        (gpu.read_f32(&dx).unwrap(), gpu.read_f32(&dw).unwrap())
    };
    // A fresh copy gives the same gradients.
    gpu.mark_written(&[&x]);
    let fresh = depthwise_backward(&gpu, &x, &w, 1, &dy).unwrap();
    assert_eq!(gpu.read_f32(&fresh.0).unwrap(), with_kept.0);
    assert_eq!(gpu.read_f32(&fresh.1).unwrap(), with_kept.1);

    // Texture only: the buffer goes back to the pool; overwrite what the pool hands out next,
    // then the backward (through the texture) and a read of x (restored) must be unchanged.
    drop(depthwise_forward(&gpu, &x, &w, 1).unwrap());
    gpu.sync().unwrap();
    let before = gpu.pool_stats();
    assert!(gpu.keep_only_kept_texture(&x.buf, n));
    let after = gpu.pool_stats();
    assert_eq!(
        after.live_bytes - after.texture_bytes,
        before.live_bytes - before.texture_bytes - x.device_bytes(),
        "x's buffer went back to the pool"
    );
    let scratch = gpu.upload(&vec![f32::NAN; n], &[n]).unwrap();
    let released = depthwise_backward(&gpu, &x, &w, 1, &dy).unwrap();
    assert_eq!(gpu.read_f32(&released.0).unwrap(), with_kept.0);
    assert_eq!(gpu.read_f32(&released.1).unwrap(), with_kept.1);
    assert_eq!(gpu.read_f32(&x).unwrap(), x_host, "restored contents");
    drop((x, w, dy, scratch, released, fresh));
    let end = gpu.pool_stats();
    assert_eq!((end.live_bytes, end.texture_bytes), (0, 0), "{end:?}");
}
