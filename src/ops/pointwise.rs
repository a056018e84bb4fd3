//! Pointwise (1x1) convolution on NHWC tensors: a matrix product over m = n*h*w rows.
//! Forward y = x W^T; backward dx = dy W (W read transposed where `gemm` reads storage
//! textures) and dW = dy^T x (a reduction over every pixel of the batch, split by `gemm`).

use anyhow::Result;

use super::gemm::{gemm, gemm_sharing_a, reads_storage_textures, reads_textures, Gemm};
use super::linear::transpose;
use super::{ensure, expect_bindable, expect_rank};
use crate::gpu::{Gpu, Tensor};

fn dims(gpu: &Gpu, x: &Tensor, w: &Tensor, op: &str) -> Result<(usize, usize, usize)> {
    expect_rank(x, 4, op, "input")?;
    expect_rank(w, 2, op, "weight")?;
    expect_bindable(gpu, x, op, "input")?;
    let cin = x.shape[3];
    ensure(w.shape[1] == cin, op, || {
        format!(
            "weight {:?} (out, in) does not take the {cin} channels of input {:?}",
            w.shape, x.shape
        )
    })?;
    let (m, cout) = (x.numel() / cin, w.shape[0]);
    ensure((m * cout * 4) as u64 <= gpu.max_binding_bytes(), op, || {
        format!(
            "output [{m}, {cout}] of input {:?} is over this adapter's storage-binding limit of {} MiB \
             (split the batch)",
            x.shape,
            gpu.max_binding_bytes() >> 20
        )
    })?;
    Ok((m, cin, cout))
}

/// y[n,h,w,cout] = sum_ci x[n,h,w,ci] * w[cout,ci].
pub fn pointwise_forward(gpu: &Gpu, x: &Tensor, w: &Tensor) -> Result<Tensor> {
    let op = "pointwise_forward";
    let (m, cin, cout) = dims(gpu, x, w, op)?;
    let y = gpu.empty(&[x.shape[0], x.shape[1], x.shape[2], cout]);
    let g = Gemm {
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
    gemm(gpu, &x.buf, &w.buf, &y.buf, g, false)?;
    Ok(y)
}

/// Returns (dx, dw) for upstream gradient dy of the forward output.
pub fn pointwise_backward(
    gpu: &Gpu,
    x: &Tensor,
    w: &Tensor,
    dy: &Tensor,
) -> Result<(Tensor, Tensor)> {
    let op = "pointwise_backward";
    let (m, cin, cout) = dims(gpu, x, w, op)?;
    super::expect_shape(dy, &[x.shape[0], x.shape[1], x.shape[2], cout], op, "dy")?;
    // dy feeds both products: one texture copy serves both where products read textures.
    let dy_texture = if reads_textures(gpu) {
        Some(gpu.to_texture(&dy.buf, dy.numel())?)
    } else {
        None
    };
    let dx = gpu.empty(&x.shape);
    let g = Gemm {
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
    if reads_storage_textures(gpu) {
        // Read W along k from a transposed copy wt [cin, cout]: with both operands along k
        // the product is ~1.4x faster on lavapipe (benches/NOTES.md), the copy is tiny.
        let wt = gpu.alloc((cout * cin * 4) as u64);
        transpose(gpu, &w.buf, &wt, cout, cin)?;
        let g = Gemm {
            b_sk: 1,
            b_sj: cout,
            ..g
        };
        gemm_sharing_a(gpu, &dy.buf, dy_texture.as_ref(), &wt, &dx.buf, g, false)?;
    } else {
        gemm_sharing_a(gpu, &dy.buf, dy_texture.as_ref(), &w.buf, &dx.buf, g, false)?;
    }
    let dw = gpu.empty(&w.shape);
    let g = Gemm {
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
    gemm_sharing_a(gpu, &dy.buf, dy_texture.as_ref(), &x.buf, &dw.buf, g, false)?;
    Ok((dx, dw))
}
