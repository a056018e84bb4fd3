//! Pointwise (1x1) convolution on NHWC tensors: a matrix product over m = n*h*w rows.
//! Forward y = x W^T; backward dx = dy W (W read transposed where `gemm` reads storage
//! textures) and dW = dy^T x (a reduction over every pixel of the batch, split by `gemm`).

use anyhow::{Context, Result};

use super::gemm::{
    gemm_sharing_a, gemm_with, product_reads_textures, reads_storage_textures, reads_textures,
    takes_pre, Gemm, GemmPre, PreOn,
};
use super::linear::transpose;
use super::{ensure, expect_bindable, expect_rank};
use crate::gpu::{Gpu, GpuTexture, Tensor};

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

/// The forward product y = x W^T over m pixels.
pub fn forward_product(m: usize, cin: usize, cout: usize) -> Gemm {
    Gemm {
        m,
        n: cout,
        k: cin,
        a_si: cin,
        a_sk: 1,
        b_sk: 1,
        b_sj: cin,
        c_si: cout,
        c_sj: 1,
    }
}

/// The weight-gradient product dW = dy^T x.
fn weight_product(m: usize, cin: usize, cout: usize) -> Gemm {
    Gemm {
        m: cout,
        n: cin,
        k: m,
        a_si: 1,
        a_sk: cout,
        b_sk: cin,
        b_sj: 1,
        c_si: cin,
        c_sj: 1,
    }
}

/// Whether the products of a pointwise conv of x by w can apply an input transform to x as
/// they load it (`GemmPre`; the channel count must suit the vec4 kernel), and whether they read
/// x through a texture (which a caller can then make once and share).
pub fn input_transform_support(gpu: &Gpu, x: &Tensor, w: &Tensor) -> Result<(bool, bool)> {
    let (m, cin, cout) = dims(gpu, x, w, "pointwise")?;
    let ok = takes_pre(&forward_product(m, cin, cout), PreOn::A)
        && takes_pre(&weight_product(m, cin, cout), PreOn::B);
    Ok((ok, reads_textures(gpu)))
}

/// y[n,h,w,cout] = sum_ci x[n,h,w,ci] * w[cout,ci].
pub fn pointwise_forward(gpu: &Gpu, x: &Tensor, w: &Tensor) -> Result<Tensor> {
    pointwise_forward_with(gpu, x, None, w, None)
}

/// `pointwise_forward` of relu6(bn(x)) when `bn_relu6` (a texture copy of the packed
/// per-channel [gamma | beta | mean | rstd], see `GemmPre`) is given, reading x through
/// `x_tex` when given (where the product reads textures).
pub fn pointwise_forward_with(
    gpu: &Gpu,
    x: &Tensor,
    x_tex: Option<&GpuTexture>,
    w: &Tensor,
    bn_relu6: Option<&GpuTexture>,
) -> Result<Tensor> {
    let op = "pointwise_forward";
    let (m, cin, cout) = dims(gpu, x, w, op)?;
    let pre = bn_relu6.map(|packed| GemmPre {
        on: PreOn::A,
        packed,
        channels: cin,
    });
    let pre = pre.as_ref();
    // A copy made here stays with x for the weight gradient (`Gpu::to_texture_for_backward`)
    // where both products read it.
    let both_read_x_texture = || {
        product_reads_textures(gpu, &forward_product(m, cin, cout))
            && product_reads_textures(gpu, &weight_product(m, cin, cout))
    };
    let own = match x_tex {
        None if both_read_x_texture() => Some(gpu.to_texture_for_backward(&x.buf, x.numel())?),
        _ => None,
    };
    let x_tex = x_tex.or(own.as_deref());
    let y = gpu.empty(&[x.shape[0], x.shape[1], x.shape[2], cout]);
    let g = forward_product(m, cin, cout);
    gemm_with(gpu, (&x.buf, x_tex), (&w.buf, None), &y.buf, g, false, pre)?;
    Ok(y)
}

/// Returns (dx, dw) for upstream gradient dy of the forward output.
pub fn pointwise_backward(
    gpu: &Gpu,
    x: &Tensor,
    w: &Tensor,
    dy: &Tensor,
) -> Result<(Tensor, Tensor)> {
    let (dx, dw) = pointwise_backward_with(gpu, x, None, w, dy, None, true)?;
    Ok((dx, dw.context("pointwise_backward: no weight gradient")?))
}

/// The backward of `pointwise_forward_with`: dx is the gradient with respect to the product's
/// input, relu6(bn(x)) when `bn_relu6` is given (the weight gradient recomputes it from x).
/// The weight gradient only with `weight_grad` (frozen weights need none: architecture steps).
pub fn pointwise_backward_with(
    gpu: &Gpu,
    x: &Tensor,
    x_tex: Option<&GpuTexture>,
    w: &Tensor,
    dy: &Tensor,
    bn_relu6: Option<&GpuTexture>,
    weight_grad: bool,
) -> Result<(Tensor, Option<Tensor>)> {
    let op = "pointwise_backward";
    let (m, cin, cout) = dims(gpu, x, w, op)?;
    let pre = bn_relu6.map(|packed| GemmPre {
        on: PreOn::B,
        packed,
        channels: cin,
    });
    let pre = pre.as_ref();
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
        gemm_sharing_a(gpu, &dy.buf, dy_texture.as_deref(), &wt, &dx.buf, g, false)?;
    } else {
        gemm_sharing_a(
            gpu,
            &dy.buf,
            dy_texture.as_deref(),
            &w.buf,
            &dx.buf,
            g,
            false,
        )?;
    }
    if !weight_grad {
        return Ok((dx, None));
    }
    let dw = gpu.empty(&w.shape);
    if weight_gradient_transposed(gpu, m, cin, cout) {
        // dW^T = x^T dy, then transposed: the long side (cin) along the lanes, where B loads
        // can be shared (benches/NOTES.md: -4 to -33% on the step's projections).
        let dwt = gpu.alloc((cout * cin * 4) as u64);
        let pre_t = pre.map(|p| GemmPre {
            on: PreOn::A,
            packed: p.packed,
            channels: cin,
        });
        gemm_with(
            gpu,
            (&x.buf, x_tex),
            (&dy.buf, dy_texture.as_deref()),
            &dwt,
            transposed_weight_product(m, cin, cout),
            false,
            pre_t.as_ref(),
        )?;
        transpose(gpu, &dwt, &dw.buf, cin, cout)?;
    } else {
        let g = weight_product(m, cin, cout);
        gemm_with(
            gpu,
            (&dy.buf, dy_texture.as_deref()),
            (&x.buf, x_tex),
            &dw.buf,
            g,
            false,
            pre,
        )?;
    }
    Ok((dx, Some(dw)))
}

/// Whether the weight gradient is computed as dW^T = x^T dy: where `gemm` reads storage
/// textures (CPU adapters), for a conv narrowing its channels (cout < cin) over many pixels.
/// With dy^T x the short cout lay along the lanes, too few for B loads to be shared.
fn weight_gradient_transposed(gpu: &Gpu, m: usize, cin: usize, cout: usize) -> bool {
    reads_storage_textures(gpu)
        && cout < cin
        && m >= 512
        && cin.is_multiple_of(4)
        && cout.is_multiple_of(4)
}

/// The weight-gradient product transposed, dW^T = x^T dy ([cin, cout]), over m pixels.
pub fn transposed_weight_product(m: usize, cin: usize, cout: usize) -> Gemm {
    Gemm {
        m: cin,
        n: cout,
        k: m,
        a_si: 1,
        a_sk: cin,
        b_sk: cout,
        b_sj: 1,
        c_si: cout,
        c_sj: 1,
    }
}
