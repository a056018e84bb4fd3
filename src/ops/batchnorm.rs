//! Batch normalisation (`shaders/batchnorm.wgsl`) per channel of the last dimension: an NHWC
//! activation `[n, h, w, c]` or a `[n, c]` matrix, viewed as `[m, c]` with `m = numel / c`.
//!
//! Training uses the batch statistics: per chunk of rows a mean and a sum of squared
//! deviations from it, combined per channel (a numerically safe split of the two-pass
//! variance), which also updates the running statistics in place with PyTorch's convention.
//! Evaluation uses the running statistics. The backward reduces `dbeta = sum dy` and
//! `dgamma = sum dy * xhat` as per-chunk partials summed by `ops::reduce::sum_slices`.

use anyhow::Result;

use super::{ensure, expect_shape, reduce, u32_of};
use crate::gpu::{Access, Gpu, KernelSpec, Tensor};

const SOURCE: &str = include_str!("../../shaders/batchnorm.wgsl");
const STATS_PARTIAL: KernelSpec = KernelSpec {
    file: "batchnorm",
    source: SOURCE,
    entry: "bn_stats_partial",
    bindings: &[Access::Read, Access::ReadWrite],
};
const STATS_FINALIZE: KernelSpec = KernelSpec {
    file: "batchnorm",
    source: SOURCE,
    entry: "bn_stats_finalize",
    bindings: &[
        Access::Read,
        Access::ReadWrite,
        Access::ReadWrite,
        Access::ReadWrite,
        Access::ReadWrite,
    ],
};
const TRAIN_NORMALIZE: KernelSpec = KernelSpec {
    file: "batchnorm",
    source: SOURCE,
    entry: "bn_train_normalize",
    bindings: &[
        Access::Read,
        Access::Read,
        Access::Read,
        Access::Read,
        Access::Read,
        Access::ReadWrite,
    ],
};
const EVAL_FORWARD: KernelSpec = KernelSpec {
    file: "batchnorm",
    source: SOURCE,
    entry: "bn_eval_forward",
    bindings: &[
        Access::Read,
        Access::Read,
        Access::Read,
        Access::Read,
        Access::Read,
        Access::ReadWrite,
    ],
};
const BACKWARD_PARTIAL: KernelSpec = KernelSpec {
    file: "batchnorm",
    source: SOURCE,
    entry: "bn_backward_partial",
    bindings: &[
        Access::Read,
        Access::Read,
        Access::Read,
        Access::Read,
        Access::ReadWrite,
        Access::ReadWrite,
    ],
};
const BACKWARD_DX: KernelSpec = KernelSpec {
    file: "batchnorm",
    source: SOURCE,
    entry: "bn_backward_dx",
    bindings: &[
        Access::Read,
        Access::Read,
        Access::Read,
        Access::Read,
        Access::Read,
        Access::Read,
        Access::Read,
        Access::ReadWrite,
    ],
};

/// The `[m, c]` view of `x` and how its rows are chunked.
#[derive(Clone, Copy, Debug)]
struct Layout {
    m: usize,
    c: usize,
    chunk: usize,
    chunks: usize,
}

impl Layout {
    /// Uniform words of `Params` in `shaders/batchnorm.wgsl`.
    fn params(&self, momentum: f32, eps: f32, op: &str) -> Result<Vec<u32>> {
        let unbias = if self.m > 1 {
            (self.m as f64 / (self.m as f64 - 1.0)) as f32
        } else {
            1.0
        };
        Ok(vec![
            u32_of(self.c, op)?,
            u32_of(self.m, op)?,
            u32_of(self.chunk, op)?,
            u32_of(self.chunks, op)?,
            momentum.to_bits(),
            eps.to_bits(),
            unbias.to_bits(),
        ])
    }

    /// The grid of the per-row kernels: channel blocks of 64 by row chunks.
    fn row_grid(&self) -> [u32; 3] {
        [self.c.div_ceil(64) as u32, self.chunks as u32, 1]
    }
}

/// Checks `x` (rank >= 2, no zero dimension, channels last) and chunks its rows.
fn layout(gpu: &Gpu, x: &Tensor, op: &str) -> Result<Layout> {
    ensure(x.shape.len() >= 2, op, || {
        format!(
            "input must have at least 2 dims ([n, c] or [n, h, w, c]), got shape {:?}",
            x.shape
        )
    })?;
    ensure(x.shape.iter().all(|&d| d > 0), op, || {
        format!("input has a zero-sized dimension: {:?}", x.shape)
    })?;
    let c = x.shape[x.shape.len() - 1];
    let m = x.numel() / c;
    u32_of(x.numel(), op)?;
    let chunk = reduce::row_chunk(m);
    let chunks = m.div_ceil(chunk);
    let max = gpu.max_groups_per_dim() as usize;
    ensure(c.div_ceil(64) <= max && chunks <= max, op, || {
        format!(
            "input {:?}: {} channel blocks over the device limit of {max} workgroups",
            x.shape,
            c.div_ceil(64)
        )
    })?;
    Ok(Layout {
        m,
        c,
        chunk,
        chunks,
    })
}

/// Checks that each of `(tensor, name)` has shape `[c]`.
fn expect_channels(ts: &[(&Tensor, &str)], c: usize, op: &str) -> Result<()> {
    for (t, name) in ts {
        expect_shape(t, &[c], op, name)?;
    }
    Ok(())
}

fn expect_eps(eps: f32, op: &str) -> Result<()> {
    ensure(eps.is_finite() && eps > 0.0, op, || {
        format!("eps must be positive and finite, got {eps}")
    })
}

/// Training-mode forward with batch statistics. Returns `(y, mean, rstd)` with `mean` and
/// `rstd = 1 / sqrt(biased var + eps)` of shape `[c]` (kept for the backward), and updates
/// `running_mean` and `running_var` in place: `r = (1 - momentum) r + momentum stat`, the
/// variance unbiased (`* m / (m - 1)`, biased when `m == 1`).
// The argument list mirrors the reference op and the kernels' bindings.
#[allow(clippy::too_many_arguments)]
pub fn batchnorm_train_forward(
    gpu: &Gpu,
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    running_mean: &Tensor,
    running_var: &Tensor,
    momentum: f32,
    eps: f32,
) -> Result<(Tensor, Tensor, Tensor)> {
    let op = "batchnorm_train_forward";
    let l = layout(gpu, x, op)?;
    expect_channels(
        &[
            (gamma, "gamma"),
            (beta, "beta"),
            (running_mean, "running_mean"),
            (running_var, "running_var"),
        ],
        l.c,
        op,
    )?;
    ensure(running_mean.raw() != running_var.raw(), op, || {
        "running_mean and running_var must be different tensors".into()
    })?;
    expect_eps(eps, op)?;
    ensure((0.0..=1.0).contains(&momentum), op, || {
        format!("momentum must be in [0, 1], got {momentum}")
    })?;
    let params = l.params(momentum, eps, op)?;
    let k_partial = gpu.kernel(&STATS_PARTIAL, &[])?;
    let k_finalize = gpu.kernel(&STATS_FINALIZE, &[])?;
    let k_normalize = gpu.kernel(&TRAIN_NORMALIZE, &[])?;

    let part = gpu.alloc((2 * l.chunks * l.c * 4) as u64);
    gpu.dispatch(&k_partial, &params, &[&x.buf, &part], l.row_grid())?;
    let mean = gpu.empty(&[l.c]);
    let rstd = gpu.empty(&[l.c]);
    gpu.dispatch(
        &k_finalize,
        &params,
        &[
            &part,
            &running_mean.buf,
            &running_var.buf,
            &mean.buf,
            &rstd.buf,
        ],
        [l.c.div_ceil(64) as u32, 1, 1],
    )?;
    let y = gpu.empty(&x.shape);
    gpu.dispatch(
        &k_normalize,
        &params,
        &[&x.buf, &gamma.buf, &beta.buf, &mean.buf, &rstd.buf, &y.buf],
        l.row_grid(),
    )?;
    Ok((y, mean, rstd))
}

/// Evaluation-mode forward: `y = gamma * (x - running_mean) / sqrt(running_var + eps) + beta`.
pub fn batchnorm_eval_forward(
    gpu: &Gpu,
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    running_mean: &Tensor,
    running_var: &Tensor,
    eps: f32,
) -> Result<Tensor> {
    let op = "batchnorm_eval_forward";
    let l = layout(gpu, x, op)?;
    expect_channels(
        &[
            (gamma, "gamma"),
            (beta, "beta"),
            (running_mean, "running_mean"),
            (running_var, "running_var"),
        ],
        l.c,
        op,
    )?;
    expect_eps(eps, op)?;
    let params = l.params(0.0, eps, op)?;
    let kernel = gpu.kernel(&EVAL_FORWARD, &[])?;
    let y = gpu.empty(&x.shape);
    gpu.dispatch(
        &kernel,
        &params,
        &[
            &x.buf,
            &gamma.buf,
            &beta.buf,
            &running_mean.buf,
            &running_var.buf,
            &y.buf,
        ],
        l.row_grid(),
    )?;
    Ok(y)
}

/// Training-mode backward from the forward's `mean` and `rstd`: returns `(dx, dgamma, dbeta)`
/// with `dbeta = sum dy`, `dgamma = sum dy * xhat` (over the rows, per channel) and
/// `dx = gamma * rstd * (dy - dbeta / m - xhat * dgamma / m)`.
pub fn batchnorm_train_backward(
    gpu: &Gpu,
    x: &Tensor,
    gamma: &Tensor,
    mean: &Tensor,
    rstd: &Tensor,
    dy: &Tensor,
) -> Result<(Tensor, Tensor, Tensor)> {
    let op = "batchnorm_train_backward";
    let l = layout(gpu, x, op)?;
    expect_channels(&[(gamma, "gamma"), (mean, "mean"), (rstd, "rstd")], l.c, op)?;
    expect_shape(dy, &x.shape, op, "dy")?;
    let params = l.params(0.0, 0.0, op)?;
    let k_partial = gpu.kernel(&BACKWARD_PARTIAL, &[])?;
    let k_dx = gpu.kernel(&BACKWARD_DX, &[])?;

    let dgamma = gpu.empty(&[l.c]);
    let dbeta = gpu.empty(&[l.c]);
    // With a single chunk the partials are the sums themselves.
    let split = l.chunks > 1;
    let part_dbeta = split.then(|| gpu.alloc((l.chunks * l.c * 4) as u64));
    let part_dgamma = split.then(|| gpu.alloc((l.chunks * l.c * 4) as u64));
    let pb = part_dbeta.as_ref().unwrap_or(&dbeta.buf);
    let pg = part_dgamma.as_ref().unwrap_or(&dgamma.buf);
    gpu.dispatch(
        &k_partial,
        &params,
        &[&x.buf, &dy.buf, &mean.buf, &rstd.buf, pb, pg],
        l.row_grid(),
    )?;
    if split {
        reduce::sum_slices(gpu, pg, &dgamma.buf, l.c, l.chunks, false)?;
        reduce::sum_slices(gpu, pb, &dbeta.buf, l.c, l.chunks, false)?;
    }
    let dx = gpu.empty(&x.shape);
    gpu.dispatch(
        &k_dx,
        &params,
        &[
            &x.buf,
            &dy.buf,
            &gamma.buf,
            &mean.buf,
            &rstd.buf,
            &dgamma.buf,
            &dbeta.buf,
            &dx.buf,
        ],
        l.row_grid(),
    )?;
    Ok((dx, dgamma, dbeta))
}
