//! Fully connected layer: x `[n, in]`, w `[out, in]`, bias `[out]`, y = x W^T + b `[n, out]`.
//! The three matrix products go through `gemm` (with the strides of `pointwise`); the bias is
//! added by `shaders/linear.wgsl` and its gradient is a per-column sum (`reduce::channel_sum`).

use anyhow::Result;

use super::elementwise::unit_template;
use super::gemm::{gemm, Gemm};
use super::{ensure, expect_rank, expect_shape, reduce, u32_of};
use crate::gpu::{groups_for, Access, Gpu, KernelSpec, Tensor};

const ADD_BIAS: KernelSpec = KernelSpec {
    file: "linear",
    source: include_str!("../../shaders/linear.wgsl"),
    entry: "add_bias",
    bindings: &[Access::ReadWrite, Access::Read],
};

/// (n, in, out) after checking x and w.
fn dims(x: &Tensor, w: &Tensor, op: &str) -> Result<(usize, usize, usize)> {
    expect_rank(x, 2, op, "input")?;
    expect_rank(w, 2, op, "weight")?;
    let fin = x.shape[1];
    ensure(w.shape[1] == fin, op, || {
        format!(
            "weight {:?} (out, in) does not take the {fin} features of input {:?}",
            w.shape, x.shape
        )
    })?;
    Ok((x.shape[0], fin, w.shape[0]))
}

/// y[i, o] = sum_k x[i, k] w[o, k] + b[o].
pub fn linear_forward(gpu: &Gpu, x: &Tensor, w: &Tensor, b: &Tensor) -> Result<Tensor> {
    let op = "linear_forward";
    let (n, fin, fout) = dims(x, w, op)?;
    expect_shape(b, &[fout], op, "bias")?;
    let count = u32_of(n * fout, op)?;
    let y = gpu.empty(&[n, fout]);
    let g = Gemm {
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
    gemm(gpu, &x.buf, &w.buf, &y.buf, g, false)?;
    let vec4 = fout % 4 == 0;
    let per_unit = if vec4 { 4 } else { 1 };
    let units = count / per_unit;
    let kernel = gpu.kernel(&ADD_BIAS, &unit_template(vec4))?;
    let groups = groups_for(units.div_ceil(64), gpu.max_groups_per_dim());
    let params = [units, groups[0], u32_of(fout, op)? / per_unit];
    gpu.dispatch(&kernel, &params, &[&y.buf, &b.buf], groups)?;
    Ok(y)
}

/// Returns (dx, dw, db) for the upstream gradient `dy` `[n, out]`:
/// dx = dy W, dw = dy^T x, db = the column sums of dy.
pub fn linear_backward(
    gpu: &Gpu,
    x: &Tensor,
    w: &Tensor,
    dy: &Tensor,
) -> Result<(Tensor, Tensor, Tensor)> {
    let op = "linear_backward";
    let (n, fin, fout) = dims(x, w, op)?;
    expect_shape(dy, &[n, fout], op, "dy")?;
    u32_of(n * fin.max(fout), op)?;
    let dx = gpu.empty(&x.shape);
    let g = Gemm {
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
    gemm(gpu, &dy.buf, &w.buf, &dx.buf, g, false)?;
    let dw = gpu.empty(&w.shape);
    let g = Gemm {
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
    gemm(gpu, &dy.buf, &x.buf, &dw.buf, g, false)?;
    let db = gpu.empty(&[fout]);
    reduce::channel_sum(gpu, &dy.buf, n, fout, &db.buf, false)?;
    Ok((dx, dw, db))
}
