//! Fully connected layer: x `[n, in]`, w `[out, in]`, bias `[out]`, y = x W^T + b `[n, out]`.
//! The three matrix products go through `gemm`; the bias and the transposes below are in
//! `shaders/linear.wgsl`, and the bias gradient is a per-column sum (`reduce::channel_sum`).
//!
//! `gemm` tiles 256 output rows per workgroup. With the batch as the rows, a batch smaller
//! than that leaves most of every tile idle (a 64-image batch through the 1280 -> 1000
//! classifier ran ~6x slower on lavapipe), so when the batch is the narrower side the forward
//! and dx products are computed transposed into a scratch buffer and transposed back.

use anyhow::Result;

use super::elementwise::unit_template;
use super::gemm::{gemm, Gemm};
use super::{ensure, expect_rank, expect_shape, reduce, u32_of};
use crate::gpu::{groups_for, Access, Binding, Gpu, GpuBuffer, KernelSpec, Tensor};

const SOURCE: &str = include_str!("../../shaders/linear.wgsl");
const ADD_BIAS: KernelSpec = KernelSpec {
    file: "linear",
    source: SOURCE,
    entry: "add_bias",
    bindings: &[Access::ReadWrite, Access::Read],
};
const TRANSPOSE: KernelSpec = KernelSpec {
    file: "linear",
    source: SOURCE,
    entry: "transpose",
    bindings: &[Access::Read, Access::ReadWrite],
};
const TRANSPOSE_TEXTURE: KernelSpec = KernelSpec {
    file: "linear",
    source: SOURCE,
    entry: "transpose_texture",
    bindings: &[Access::StorageTexture, Access::ReadWrite],
};
const TRANSPOSE_BIAS: KernelSpec = KernelSpec {
    file: "linear",
    source: SOURCE,
    entry: "transpose_bias",
    bindings: &[Access::Read, Access::ReadWrite, Access::Read],
};

/// (n, in, out) after checking x and w; every product of the layer fits 32-bit indices.
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
    let (n, fout) = (x.shape[0], w.shape[0]);
    u32_of(n.max(fout) * fin, op)?;
    u32_of(n * fout, op)?;
    Ok((n, fin, fout))
}

/// Whether a product whose output is `[batch, width]` runs transposed (see the module doc).
fn transposed(batch: usize, width: usize) -> bool {
    batch < width
}

/// Dispatches one of this file's kernels over `count` invocations; `rows` and `cols` as in
/// the shader's `Params`.
fn launch(
    gpu: &Gpu,
    spec: &KernelSpec,
    vec4: bool,
    op: &str,
    [count, rows, cols]: [usize; 3],
    bindings: &[Binding],
) -> Result<()> {
    let kernel = gpu.kernel(spec, &unit_template(vec4))?;
    let groups = groups_for(u32_of(count.div_ceil(64), op)?, gpu.max_groups_per_dim());
    let params = [
        u32_of(count, op)?,
        groups[0],
        u32_of(rows, op)?,
        u32_of(cols, op)?,
    ];
    gpu.dispatch_with(&kernel, &params, bindings, groups)
}

/// dst [cols, rows] = src [rows, cols] transposed (`transpose` in `shaders/linear.wgsl`).
pub(crate) fn transpose(
    gpu: &Gpu,
    src: &GpuBuffer,
    dst: &GpuBuffer,
    rows: usize,
    cols: usize,
) -> Result<()> {
    let op = "transpose";
    ensure(
        (rows * cols * 4) as u64 <= src.bytes().min(dst.bytes()),
        op,
        || format!("[{rows}, {cols}] does not fit the buffers"),
    )?;
    let count = rows * cols;
    if transposes_through_texture(gpu, rows, cols) {
        let st = gpu.to_texture(src, count)?;
        let bindings = [Binding::Texture(&st), Binding::Buffer(dst)];
        return launch(
            gpu,
            &TRANSPOSE_TEXTURE,
            false,
            op,
            [count / 4, rows, cols],
            &bindings,
        );
    }
    let bindings = [Binding::Buffer(src), Binding::Buffer(dst)];
    launch(gpu, &TRANSPOSE, false, op, [count, rows, cols], &bindings)
}

/// Whether `transpose` reads src through a texture copy (`transpose_texture`): where storage
/// textures can be read, cols is a multiple of 4 and the matrix is big enough that the copy
/// (~0.4 ns a float) costs less than the strided scalar loads it replaces (benches/NOTES.md).
pub(crate) fn transposes_through_texture(gpu: &Gpu, rows: usize, cols: usize) -> bool {
    gpu.storage_texture_reads() && cols.is_multiple_of(4) && rows * cols >= 1024
}

/// y[i, o] = sum_k x[i, k] w[o, k] + b[o].
pub fn linear_forward(gpu: &Gpu, x: &Tensor, w: &Tensor, b: &Tensor) -> Result<Tensor> {
    let op = "linear_forward";
    let (n, fin, fout) = dims(x, w, op)?;
    expect_shape(b, &[fout], op, "bias")?;
    let y = gpu.empty(&[n, fout]);
    if transposed(n, fout) {
        // y^T [out, n] = W x^T, then y = (y^T)^T + b.
        let yt = gpu.empty(&[fout, n]);
        let g = Gemm {
            m: fout,
            n,
            k: fin,
            a_si: fin,
            a_sk: 1,
            b_sk: 1,
            b_sj: fin,
            c_si: n,
            c_sj: 1,
        };
        gemm(gpu, &w.buf, &x.buf, &yt.buf, g, false)?;
        let buffers = [&yt.buf, &y.buf, &b.buf].map(Binding::Buffer);
        launch(
            gpu,
            &TRANSPOSE_BIAS,
            false,
            op,
            [n * fout, fout, n],
            &buffers,
        )?;
        return Ok(y);
    }
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
    let units = n * fout / per_unit;
    let buffers = [&y.buf, &b.buf].map(Binding::Buffer);
    launch(
        gpu,
        &ADD_BIAS,
        vec4,
        op,
        [units, fout / per_unit, 0],
        &buffers,
    )?;
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
    let dx = gpu.empty(&x.shape);
    if transposed(n, fin) {
        // dx^T [in, n] = W^T dy^T, then transposed back.
        let dxt = gpu.empty(&[fin, n]);
        let g = Gemm {
            m: fin,
            n,
            k: fout,
            a_si: 1,
            a_sk: fin,
            b_sk: 1,
            b_sj: fout,
            c_si: n,
            c_sj: 1,
        };
        gemm(gpu, &w.buf, &dy.buf, &dxt.buf, g, false)?;
        launch(
            gpu,
            &TRANSPOSE,
            false,
            op,
            [n * fin, fin, n],
            &[Binding::Buffer(&dxt.buf), Binding::Buffer(&dx.buf)],
        )?;
    } else {
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
    }
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
