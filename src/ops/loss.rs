//! Softmax cross-entropy with label smoothing and top-1 accuracy (`shaders/loss.wgsl`).
//! logits `[n, k]`, labels `[n]` of u32 words (uploaded with `gpu.upload(&Vec<u32>, ..)`).
//! Results stay on the device: the loss and the count are 1-element tensors.

use anyhow::Result;

use super::{ensure, expect_rank, expect_shape, u32_of};
use crate::gpu::{groups_for, Access, Gpu, GpuBuffer, KernelSpec, Tensor};

const SOURCE: &str = include_str!("../../shaders/loss.wgsl");
const CE_ROWS: KernelSpec = KernelSpec {
    file: "loss",
    source: SOURCE,
    entry: "ce_rows",
    bindings: &[Access::Read, Access::Read, Access::ReadWrite],
};
const CE_GRAD: KernelSpec = KernelSpec {
    file: "loss",
    source: SOURCE,
    entry: "ce_grad",
    bindings: &[Access::Read, Access::Read, Access::Read, Access::ReadWrite],
};
const COUNT_ROWS: KernelSpec = KernelSpec {
    file: "loss",
    source: SOURCE,
    entry: "count_rows",
    bindings: &[Access::Read, Access::Read, Access::ReadWrite],
};
const ROWS_SUM: KernelSpec = KernelSpec {
    file: "loss",
    source: SOURCE,
    entry: "rows_sum",
    bindings: &[Access::Read, Access::ReadWrite],
};

/// The uniform block of every loss kernel (see `Params` in the shader).
#[derive(Clone, Copy, Default)]
struct Params {
    n: u32,
    k: u32,
    count: u32,
    stride_groups: u32,
    smoothing: f64,
    offset: u32,
    divisor: f32,
}

impl Params {
    fn words(&self) -> Vec<u32> {
        let s = self.smoothing;
        let k = f64::from(self.k.max(1));
        vec![
            self.n,
            self.k,
            self.count,
            self.stride_groups,
            ((1.0 - s) as f32).to_bits(),
            (s as f32).to_bits(),
            ((1.0 - s + s / k) as f32).to_bits(),
            ((s / k) as f32).to_bits(),
            self.offset,
            self.divisor.to_bits(),
        ]
    }
}

fn launch(
    gpu: &Gpu,
    spec: &KernelSpec,
    params: &Params,
    buffers: &[&GpuBuffer],
    groups: [u32; 3],
) -> Result<()> {
    let kernel = gpu.kernel(spec, &[])?;
    gpu.dispatch(&kernel, &params.words(), buffers, groups)
}

/// (n, k) after checking logits `[n, k]` and labels `[n]`.
fn dims(logits: &Tensor, labels: &Tensor, op: &str) -> Result<(u32, u32)> {
    expect_rank(logits, 2, op, "logits")?;
    let (n, k) = (logits.shape[0], logits.shape[1]);
    expect_shape(labels, &[n], op, "labels")?;
    u32_of(n * k, op)?;
    u32_of(2 * n, op)?;
    Ok((n as u32, k as u32))
}

/// Mean softmax cross-entropy over the rows of `logits` against `labels`, with label
/// smoothing `smoothing` in [0, 1], and its gradient: returns (loss `[1]`, dlogits `[n, k]`),
/// dlogits = (softmax - q) / n. Labels must be < k (checked by the caller when the data is
/// loaded; a larger one is clamped to k - 1 by the kernels).
pub fn softmax_cross_entropy(
    gpu: &Gpu,
    logits: &Tensor,
    labels: &Tensor,
    smoothing: f32,
) -> Result<(Tensor, Tensor)> {
    let op = "softmax_cross_entropy";
    let (n, k) = dims(logits, labels, op)?;
    ensure((0.0..=1.0).contains(&smoothing), op, || {
        format!("label smoothing {smoothing} is not in [0, 1]")
    })?;
    let max = gpu.max_groups_per_dim();
    let stats = gpu.empty(&[2 * n as usize]);
    let row_groups = groups_for(n.div_ceil(64), max);
    let base = Params {
        n,
        k,
        smoothing: f64::from(smoothing),
        ..Default::default()
    };
    let rows = Params {
        stride_groups: row_groups[0],
        ..base
    };
    launch(
        gpu,
        &CE_ROWS,
        &rows,
        &[&logits.buf, &labels.buf, &stats.buf],
        row_groups,
    )?;
    let dlogits = gpu.empty(&logits.shape);
    let count = n * k;
    let grad_groups = groups_for(count.div_ceil(64), max);
    let grad = Params {
        count,
        stride_groups: grad_groups[0],
        ..base
    };
    launch(
        gpu,
        &CE_GRAD,
        &grad,
        &[&logits.buf, &labels.buf, &stats.buf, &dlogits.buf],
        grad_groups,
    )?;
    let loss = gpu.empty(&[1]);
    let mean = Params {
        count: n,
        offset: n,
        divisor: n as f32,
        ..base
    };
    launch(gpu, &ROWS_SUM, &mean, &[&stats.buf, &loss.buf], [1, 1, 1])?;
    Ok((loss, dlogits))
}

/// Number of rows whose argmax (the first of equal maxima) equals the label, as an f32 in a
/// 1-element tensor.
pub fn count_correct(gpu: &Gpu, logits: &Tensor, labels: &Tensor) -> Result<Tensor> {
    let op = "count_correct";
    let (n, k) = dims(logits, labels, op)?;
    let correct = gpu.empty(&[n as usize]);
    let row_groups = groups_for(n.div_ceil(64), gpu.max_groups_per_dim());
    let rows = Params {
        n,
        k,
        stride_groups: row_groups[0],
        ..Default::default()
    };
    launch(
        gpu,
        &COUNT_ROWS,
        &rows,
        &[&logits.buf, &labels.buf, &correct.buf],
        row_groups,
    )?;
    let count = gpu.empty(&[1]);
    let sum = Params {
        n,
        k,
        count: n,
        divisor: 1.0,
        ..Default::default()
    };
    launch(gpu, &ROWS_SUM, &sum, &[&correct.buf, &count.buf], [1, 1, 1])?;
    Ok(count)
}
