//! Reductions (`shaders/reduce.wgsl`): summing split-K slices, the sum of a tensor and the dot
//! product of two tensors, without workgroup barriers.

use anyhow::Result;

use super::{ensure, u32_of};
use crate::gpu::{groups_for, Access, Binding, Gpu, GpuBuffer, KernelSpec, Tensor};

const SOURCE: &str = include_str!("../../shaders/reduce.wgsl");
const SUM_SLICES: KernelSpec = KernelSpec {
    file: "reduce",
    source: SOURCE,
    entry: "sum_slices",
    bindings: &[Access::Read, Access::ReadWrite],
};
const SUM_SLICES_TEXTURE: KernelSpec = KernelSpec {
    file: "reduce",
    source: SOURCE,
    entry: "sum_slices_texture",
    bindings: &[Access::StorageTexture, Access::ReadWrite],
};
const SUM_SLICES_PAIR: KernelSpec = KernelSpec {
    file: "reduce",
    source: SOURCE,
    entry: "sum_slices_pair",
    bindings: &[Access::Read, Access::ReadWrite, Access::ReadWrite],
};
const SUM_SLICES_TEXTURE_PAIR: KernelSpec = KernelSpec {
    file: "reduce",
    source: SOURCE,
    entry: "sum_slices_texture_pair",
    bindings: &[Access::StorageTexture, Access::ReadWrite, Access::ReadWrite],
};
const SUM_PARTIAL: KernelSpec = KernelSpec {
    file: "reduce",
    source: SOURCE,
    entry: "sum_partial",
    bindings: &[Access::Read, Access::ReadWrite],
};
const CHANNEL_SUM_PARTIAL: KernelSpec = KernelSpec {
    file: "reduce",
    source: SOURCE,
    entry: "channel_sum_partial",
    bindings: &[Access::Read, Access::ReadWrite],
};
const BATCHNORM_DOT_PARTIAL: KernelSpec = KernelSpec {
    file: "reduce",
    source: SOURCE,
    entry: "batchnorm_dot_partial",
    bindings: &[
        Access::Read,
        Access::Read,
        Access::ReadWrite,
        Access::Read,
        Access::Read,
        Access::Read,
        Access::Read,
    ],
};
const DOT_PARTIAL: KernelSpec = KernelSpec {
    file: "reduce",
    source: SOURCE,
    entry: "dot_partial",
    bindings: &[Access::Read, Access::Read, Access::ReadWrite],
};

/// out[e] (+)= sum_s x[s*len + e] for e < len, s < slices.
pub fn sum_slices(
    gpu: &Gpu,
    x: &GpuBuffer,
    out: &GpuBuffer,
    len: usize,
    slices: usize,
    accumulate: bool,
) -> Result<()> {
    slice_sums(gpu, x, [out, out], 1, len, slices, accumulate)
}

/// Two `sum_slices` of the same shape in one dispatch: x holds `[2, slices, len]`;
/// `out_a[e] = sum_s x[s*len + e]`, `out_b[e] = sum_s x[(slices + s)*len + e]`.
pub fn sum_slices_pair(
    gpu: &Gpu,
    x: &GpuBuffer,
    (out_a, out_b): (&GpuBuffer, &GpuBuffer),
    len: usize,
    slices: usize,
) -> Result<()> {
    ensure(!std::ptr::eq(out_a, out_b), "sum_slices_pair", || {
        "the two outputs are the same buffer".into()
    })?;
    slice_sums(gpu, x, [out_a, out_b], 2, len, slices, false)
}

/// `sum_slices` of `sums` (1 or 2) groups of slices into `outs[..sums]`.
fn slice_sums(
    gpu: &Gpu,
    x: &GpuBuffer,
    outs: [&GpuBuffer; 2],
    sums: usize,
    len: usize,
    slices: usize,
    accumulate: bool,
) -> Result<()> {
    let op = if sums == 2 {
        "sum_slices_pair"
    } else {
        "sum_slices"
    };
    ensure((sums * len * slices) as u64 * 4 <= x.bytes(), op, || {
        format!(
            "input of {} bytes holds fewer than {sums} x {slices} slices of {len}",
            x.bytes()
        )
    })?;
    for out in &outs[..sums] {
        ensure(len as u64 * 4 <= out.bytes(), op, || {
            format!(
                "output of {} bytes is smaller than {len} elements",
                out.bytes()
            )
        })?;
    }
    // Through a texture one invocation adds four elements; else one.
    let texture = sums_through_texture(gpu, len, slices);
    let (spec, invocations) = match (texture, sums) {
        (true, 2) => (&SUM_SLICES_TEXTURE_PAIR, len / 4),
        (true, _) => (&SUM_SLICES_TEXTURE, len / 4),
        (false, 2) => (&SUM_SLICES_PAIR, len),
        (false, _) => (&SUM_SLICES, len),
    };
    let k = gpu.kernel(spec, &[])?;
    let groups = groups_for(
        u32_of(invocations.div_ceil(64), op)?,
        gpu.max_groups_per_dim(),
    );
    let params = [
        u32_of(len, op)?,
        u32_of(slices, op)?,
        accumulate as u32,
        groups[0],
    ];
    let xt = texture
        .then(|| gpu.to_texture(x, sums * len * slices))
        .transpose()?;
    let input = xt.as_deref().map_or(Binding::Buffer(x), Binding::Texture);
    let mut b = vec![input];
    b.extend(outs[..sums].iter().map(|o| Binding::Buffer(o)));
    gpu.dispatch_with(&k, &params, &b, groups)
}

/// Whether `sum_slices` reads the slices through a texture copy: where storage textures can be
/// read, len is a multiple of 4 and there is enough to add that the copy (a command of its
/// own, ~0.4 ns a float) costs less than the scalar loads it replaces.
pub fn sums_through_texture(gpu: &Gpu, len: usize, slices: usize) -> bool {
    gpu.storage_texture_reads() && len.is_multiple_of(4) && slices > 1 && len * slices >= 16384
}

/// Number of partial sums for a reduction of `len` elements: enough invocations to keep a
/// device busy, few enough that one invocation can add the partials.
fn partials_for(len: usize) -> usize {
    (len / 256).clamp(1, 1024)
}

/// A strided reduction of `len` elements to one number: `spec` writes `partials_for(len)`
/// partial results (its parameters `[len, parts, extra, 0]`, its bindings `inputs` then the
/// partials, then `after`), which one invocation of `sum_partial` then adds.
fn reduce_to_one(
    gpu: &Gpu,
    spec: &KernelSpec,
    (len, extra): (usize, u32),
    inputs: &[&GpuBuffer],
    after: &[&GpuBuffer],
    op: &str,
) -> Result<Tensor> {
    let parts = partials_for(len);
    let partial = gpu.empty(&[parts]);
    let k = gpu.kernel(spec, &[])?;
    let p = [u32_of(len, op)?, parts as u32, extra, 0];
    let mut b: Vec<&GpuBuffer> = inputs.to_vec();
    b.push(&partial.buf);
    b.extend_from_slice(after);
    gpu.dispatch(&k, &p, &b, [parts.div_ceil(64) as u32, 1, 1])?;
    let out = gpu.empty(&[1]);
    let ks = gpu.kernel(&SUM_PARTIAL, &[])?;
    gpu.dispatch(
        &ks,
        &[parts as u32, 1, 0, 0],
        &[&partial.buf, &out.buf],
        [1, 1, 1],
    )?;
    Ok(out)
}

/// The sum of all elements of `x`, as a 1-element tensor (stays on the device).
pub fn sum(gpu: &Gpu, x: &Tensor) -> Result<Tensor> {
    let op = "sum";
    let len = x.numel();
    ensure(len > 0, op, || "empty tensor".into())?;
    reduce_to_one(gpu, &SUM_PARTIAL, (len, 0), &[&x.buf], &[], op)
}

/// The dot product of `x` and `y` (same number of elements), as a 1-element tensor.
pub fn dot(gpu: &Gpu, x: &Tensor, y: &Tensor) -> Result<Tensor> {
    let op = "dot";
    let len = x.numel();
    ensure(len > 0 && y.numel() == len, op, || {
        format!(
            "shapes {:?} and {:?} must have the same, non-zero, size",
            x.shape, y.shape
        )
    })?;
    reduce_to_one(gpu, &DOT_PARTIAL, (len, 0), &[&x.buf, &y.buf], &[], op)
}

/// sum(bn(x) * y) with bn(x) = gamma (x - mean) rstd + beta per channel of x `[.., c]`, as a
/// 1-element tensor: the dot product of a BN's output with y without storing that output.
pub fn batchnorm_dot(
    gpu: &Gpu,
    x: &Tensor,
    (gamma, beta): (&Tensor, &Tensor),
    (mean, rstd): (&Tensor, &Tensor),
    y: &Tensor,
) -> Result<Tensor> {
    let op = "batchnorm_dot";
    let len = x.numel();
    let c = x.shape.last().copied().unwrap_or(0);
    ensure(len > 0 && c > 0 && y.shape == x.shape, op, || {
        format!(
            "x {:?} and y {:?} must have the same, non-empty, shape",
            x.shape, y.shape
        )
    })?;
    for (t, name) in [
        (gamma, "gamma"),
        (beta, "beta"),
        (mean, "mean"),
        (rstd, "rstd"),
    ] {
        super::expect_shape(t, &[c], op, name)?;
    }
    let per_channel = [&gamma.buf, &beta.buf, &mean.buf, &rstd.buf];
    let inputs = [&x.buf, &y.buf];
    reduce_to_one(
        gpu,
        &BATCHNORM_DOT_PARTIAL,
        (len, c as u32),
        &inputs,
        &per_channel,
        op,
    )
}

/// Rows per chunk of a per-channel reduction over `m` rows: chunks of at least 64 rows, at
/// most 256 chunks. Exposed so kernels with their own per-channel partials split alike.
pub fn row_chunk(m: usize) -> usize {
    m.div_ceil(256).max(64).min(m.max(1))
}

/// out[ch] (+)= sum over rows r of x[r * c + ch], for a row-major [m, c] matrix `x`.
pub fn channel_sum(
    gpu: &Gpu,
    x: &GpuBuffer,
    m: usize,
    c: usize,
    out: &GpuBuffer,
    accumulate: bool,
) -> Result<()> {
    let op = "channel_sum";
    ensure(m > 0 && c > 0, op, || format!("empty matrix [{m}, {c}]"))?;
    ensure((m * c) as u64 * 4 <= x.bytes(), op, || {
        format!("input of {} bytes is smaller than [{m}, {c}]", x.bytes())
    })?;
    ensure(c as u64 * 4 <= out.bytes(), op, || {
        format!(
            "output of {} bytes is smaller than {c} channels",
            out.bytes()
        )
    })?;
    let chunk = row_chunk(m);
    let chunks = m.div_ceil(chunk);
    let partial = gpu.alloc((chunks * c * 4) as u64);
    let k = gpu.kernel(&CHANNEL_SUM_PARTIAL, &[])?;
    let p = [u32_of(c, op)?, u32_of(chunk, op)?, u32_of(m, op)?, 0];
    gpu.dispatch(
        &k,
        &p,
        &[x, &partial],
        [u32_of(c.div_ceil(64), op)?, chunks as u32, 1],
    )?;
    sum_slices(gpu, &partial, out, c, chunks, accumulate)
}
