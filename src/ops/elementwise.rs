//! Elementwise ops (`shaders/elementwise.wgsl`): ReLU6 forward and backward, residual add,
//! in-place accumulation and scaling. Also the vec4-plus-tail launcher shared by the other
//! elementwise-shaped families (dropout, optimizer steps).

use anyhow::Result;

use super::{ensure, u32_of};
use crate::gpu::{groups_for, Access, Gpu, GpuBuffer, KernelSpec, Tensor};

const SOURCE: &str = include_str!("../../shaders/elementwise.wgsl");
const RELU6_FORWARD: KernelSpec = KernelSpec {
    file: "elementwise",
    source: SOURCE,
    entry: "relu6_forward",
    bindings: &[Access::Read, Access::ReadWrite],
};
const RELU6_BACKWARD: KernelSpec = KernelSpec {
    file: "elementwise",
    source: SOURCE,
    entry: "relu6_backward",
    bindings: &[Access::Read, Access::Read, Access::ReadWrite],
};
const ADD: KernelSpec = KernelSpec {
    file: "elementwise",
    source: SOURCE,
    entry: "add",
    bindings: &[Access::Read, Access::Read, Access::ReadWrite],
};
const ADD_ASSIGN: KernelSpec = KernelSpec {
    file: "elementwise",
    source: SOURCE,
    entry: "add_assign",
    bindings: &[Access::ReadWrite, Access::Read],
};
const SCALE: KernelSpec = KernelSpec {
    file: "elementwise",
    source: SOURCE,
    entry: "scale",
    bindings: &[Access::Read, Access::ReadWrite],
};

/// Template values of a kernel over vec4 units (`vec4 = true`) or single elements: `V` is the
/// f32 type, `U` the matching u32 type, `W` the elements per unit and `LANES` the offset of
/// each component within its unit (for kernels that need element indices).
pub(crate) fn unit_template(vec4: bool) -> Vec<(&'static str, String)> {
    if vec4 {
        vec![
            ("V", "vec4<f32>".into()),
            ("U", "vec4<u32>".into()),
            ("W", "4u".into()),
            ("LANES", "vec4<u32>(0u, 1u, 2u, 3u)".into()),
        ]
    } else {
        vec![
            ("V", "f32".into()),
            ("U", "u32".into()),
            ("W", "1u".into()),
            ("LANES", "0u".into()),
        ]
    }
}

/// Runs an elementwise kernel over `len` elements: the vec4 instance over the first `len / 4`
/// units, then the scalar instance over the `len % 4` tail. Parameter words are
/// `[count, start, stride_groups, extra...]`, as every such kernel's `Params` begins.
/// `buffers` must each hold at least `len` elements (the caller checks shapes).
pub(crate) fn dispatch_units(
    gpu: &Gpu,
    spec: &KernelSpec,
    op: &str,
    len: usize,
    extra: &[u32],
    buffers: &[&GpuBuffer],
) -> Result<()> {
    ensure(len > 0, op, || "empty tensor".into())?;
    u32_of(len, op)?;
    let body = len / 4;
    // (vec4 instance, first unit, units): a binding of fewer than 4 elements cannot be read as
    // vec4, so lengths below 4 run the tail instance only.
    let runs = [(true, 0, body), (false, body * 4, len - body * 4)];
    for (vec4, start, count) in runs {
        if count == 0 {
            continue;
        }
        let kernel = gpu.kernel(spec, &unit_template(vec4))?;
        let groups = groups_for(u32_of(count.div_ceil(64), op)?, gpu.max_groups_per_dim());
        let mut params = vec![u32_of(count, op)?, u32_of(start, op)?, groups[0]];
        params.extend_from_slice(extra);
        gpu.dispatch(&kernel, &params, buffers, groups)?;
    }
    Ok(())
}

/// Errors unless every tensor has the shape of the first (and no zero-sized dimension).
pub(crate) fn same_shapes(op: &str, tensors: &[(&str, &Tensor)]) -> Result<()> {
    let Some(&(first, t0)) = tensors.first() else {
        return Ok(());
    };
    ensure(t0.shape.iter().all(|&d| d > 0), op, || {
        format!("{first} has a zero-sized dimension: {:?}", t0.shape)
    })?;
    for &(name, t) in &tensors[1..] {
        ensure(t.shape == t0.shape, op, || {
            format!(
                "{name} has shape {:?}, {first} has shape {:?}",
                t.shape, t0.shape
            )
        })?;
    }
    Ok(())
}

/// Errors if two of the tensors share a buffer (a tensor written in place must not also be
/// bound as another argument).
pub(crate) fn distinct(op: &str, tensors: &[(&str, &Tensor)]) -> Result<()> {
    for (i, &(a, ta)) in tensors.iter().enumerate() {
        for &(b, tb) in &tensors[i + 1..] {
            ensure(!std::ptr::eq(&ta.buf, &tb.buf), op, || {
                format!("{a} and {b} are the same buffer; they must be distinct tensors")
            })?;
        }
    }
    Ok(())
}

/// y = min(max(x, 0), 6).
pub fn relu6_forward(gpu: &Gpu, x: &Tensor) -> Result<Tensor> {
    let op = "relu6_forward";
    same_shapes(op, &[("x", x)])?;
    let y = gpu.empty(&x.shape);
    dispatch_units(gpu, &RELU6_FORWARD, op, x.numel(), &[], &[&x.buf, &y.buf])?;
    Ok(y)
}

/// dx = dy where 0 < x < 6, else 0.
pub fn relu6_backward(gpu: &Gpu, x: &Tensor, dy: &Tensor) -> Result<Tensor> {
    let op = "relu6_backward";
    same_shapes(op, &[("x", x), ("dy", dy)])?;
    let dx = gpu.empty(&x.shape);
    dispatch_units(
        gpu,
        &RELU6_BACKWARD,
        op,
        x.numel(),
        &[],
        &[&x.buf, &dy.buf, &dx.buf],
    )?;
    Ok(dx)
}

/// y = a + b (residual connection; its backward passes dy to both inputs).
pub fn add(gpu: &Gpu, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let op = "add";
    same_shapes(op, &[("a", a), ("b", b)])?;
    let y = gpu.empty(&a.shape);
    dispatch_units(gpu, &ADD, op, a.numel(), &[], &[&a.buf, &b.buf, &y.buf])?;
    Ok(y)
}

/// acc += b in place (gradient accumulation). `acc` and `b` must be different tensors.
pub fn add_assign(gpu: &Gpu, acc: &Tensor, b: &Tensor) -> Result<()> {
    let op = "add_assign";
    same_shapes(op, &[("acc", acc), ("b", b)])?;
    distinct(op, &[("acc", acc), ("b", b)])?;
    dispatch_units(gpu, &ADD_ASSIGN, op, acc.numel(), &[], &[&acc.buf, &b.buf])
}

/// y = s * x.
pub fn scale(gpu: &Gpu, x: &Tensor, s: f32) -> Result<Tensor> {
    let op = "scale";
    same_shapes(op, &[("x", x)])?;
    let y = gpu.empty(&x.shape);
    dispatch_units(
        gpu,
        &SCALE,
        op,
        x.numel(),
        &[s.to_bits()],
        &[&x.buf, &y.buf],
    )?;
    Ok(y)
}
