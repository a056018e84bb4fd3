//! Global average pooling (`shaders/pool.wgsl`): NHWC `[n, h, w, c]` -> `[n, c]`, the mean over
//! each image's pixels, and its backward (every pixel receives `dy / (h w)`).

use anyhow::Result;

use super::elementwise::unit_template;
use super::{ensure, expect_rank, expect_shape, u32_of};
use crate::gpu::{groups_for, Access, Gpu, GpuBuffer, KernelSpec, Tensor};

const SOURCE: &str = include_str!("../../shaders/pool.wgsl");
const FORWARD: KernelSpec = KernelSpec {
    file: "pool",
    source: SOURCE,
    entry: "global_avg_pool_forward",
    bindings: &[Access::Read, Access::ReadWrite],
};
const BACKWARD: KernelSpec = KernelSpec {
    file: "pool",
    source: SOURCE,
    entry: "global_avg_pool_backward",
    bindings: &[Access::Read, Access::ReadWrite],
};

/// One invocation per unit of `count`; channels go 4 to a unit when `c` allows.
fn launch(
    gpu: &Gpu,
    spec: &KernelSpec,
    op: &str,
    [n, h, w, c]: [usize; 4],
    per_image: usize,
    buffers: &[&GpuBuffer],
) -> Result<()> {
    u32_of(n * h * w * c, op)?;
    let vec4 = c % 4 == 0;
    let cv = if vec4 { c / 4 } else { c };
    let count = n * per_image * cv;
    let kernel = gpu.kernel(spec, &unit_template(vec4))?;
    let groups = groups_for(u32_of(count.div_ceil(64), op)?, gpu.max_groups_per_dim());
    let params = [
        u32_of(count, op)?,
        groups[0],
        u32_of(h * w, op)?,
        u32_of(cv, op)?,
    ];
    gpu.dispatch(&kernel, &params, buffers, groups)
}

/// y[b, ch] = mean over pixels of x[b, :, :, ch]; x is `[n, h, w, c]`, y is `[n, c]`.
pub fn global_avg_pool_forward(gpu: &Gpu, x: &Tensor) -> Result<Tensor> {
    let op = "global_avg_pool_forward";
    expect_rank(x, 4, op, "input")?;
    let [n, h, w, c] = [x.shape[0], x.shape[1], x.shape[2], x.shape[3]];
    let y = gpu.empty(&[n, c]);
    launch(gpu, &FORWARD, op, [n, h, w, c], 1, &[&x.buf, &y.buf])?;
    Ok(y)
}

/// dx[b, y, x, ch] = dy[b, ch] / (h w); `dy` is `[n, c]`, `x_shape` the forward input's shape.
pub fn global_avg_pool_backward(gpu: &Gpu, dy: &Tensor, x_shape: &[usize]) -> Result<Tensor> {
    let op = "global_avg_pool_backward";
    ensure(x_shape.len() == 4, op, || {
        format!("input shape must have 4 dims (n, h, w, c), got {x_shape:?}")
    })?;
    ensure(x_shape.iter().all(|&d| d > 0), op, || {
        format!("input shape has a zero-sized dimension: {x_shape:?}")
    })?;
    let [n, h, w, c] = [x_shape[0], x_shape[1], x_shape[2], x_shape[3]];
    expect_shape(dy, &[n, c], op, "dy")?;
    let dx = gpu.empty(x_shape);
    launch(gpu, &BACKWARD, op, [n, h, w, c], h * w, &[&dy.buf, &dx.buf])?;
    Ok(dx)
}
