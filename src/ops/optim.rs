//! Optimizer steps (`shaders/optim.wgsl`), in place on device tensors: SGD with momentum
//! (optionally Nesterov) and Adam, both with L2 weight decay folded into the gradient.

use std::fmt::Write;

use anyhow::Result;

use super::elementwise::{dispatch_units, distinct, same_shapes};
use super::{ensure, u32_of};
use crate::gpu::{groups_for, Access, Gpu, GpuBuffer, KernelSpec, Tensor};

const SOURCE: &str = include_str!("../../shaders/optim.wgsl");
const SGD: KernelSpec = KernelSpec {
    file: "optim",
    source: SOURCE,
    entry: "sgd_step",
    bindings: &[Access::ReadWrite, Access::Read, Access::ReadWrite],
};
const ADAM: KernelSpec = KernelSpec {
    file: "optim",
    source: SOURCE,
    entry: "adam_step",
    bindings: &[
        Access::ReadWrite,
        Access::Read,
        Access::ReadWrite,
        Access::ReadWrite,
    ],
};

const MULTI_SOURCE: &str = include_str!("../../shaders/optim_multi.wgsl");
/// Most tensors one `sgd_step_multi` dispatch updates (fewer where the adapter binds fewer
/// storage buffers): its uniform block (at most 32 words) holds 3 words a tensor.
const MULTI_MAX: usize = 8;
/// Longest tensor (in floats) batched: on llvmpipe every invocation of a multi-tensor dispatch
/// runs every tensor's (masked) code, so only tensors whose work is small next to a dispatch's
/// fixed cost gain from sharing one (`examples/optim_time`: 1024, 4096, 16384 and 65536
/// floats gave 14.1-14.6, 12.7-13.4, 13.2-13.7 and 16.0-16.2 ms a step's update).
const MULTI_LARGEST: usize = 4096;
const MULTI_BINDINGS: [Access; 3 * MULTI_MAX] = {
    let mut b = [Access::ReadWrite; 3 * MULTI_MAX];
    let mut t = 0;
    while t < MULTI_MAX {
        b[3 * t + 1] = Access::Read;
        t += 1;
    }
    b
};

fn finite(op: &str, values: &[(&str, f32)]) -> Result<()> {
    for &(name, v) in values {
        ensure(v.is_finite(), op, || format!("{name} = {v} is not finite"))?;
    }
    Ok(())
}

/// One SGD step on `w` given its gradient `g`, updating `momentum_buf` (zeros before the first
/// step): d = g + wd w, buf = momentum buf + d, w -= lr (d + momentum buf if `nesterov`, else
/// buf).
// The arguments are the optimizer's hyperparameters, one to one with the reference.
#[allow(clippy::too_many_arguments)]
pub fn sgd_step(
    gpu: &Gpu,
    w: &Tensor,
    g: &Tensor,
    momentum_buf: &Tensor,
    lr: f32,
    momentum: f32,
    weight_decay: f32,
    nesterov: bool,
) -> Result<()> {
    let op = "sgd_step";
    let tensors = [("w", w), ("g", g), ("momentum_buf", momentum_buf)];
    same_shapes(op, &tensors)?;
    distinct(op, &tensors)?;
    finite(
        op,
        &[
            ("lr", lr),
            ("momentum", momentum),
            ("weight_decay", weight_decay),
        ],
    )?;
    let extra = [
        lr.to_bits(),
        momentum.to_bits(),
        weight_decay.to_bits(),
        nesterov as u32,
    ];
    dispatch_units(
        gpu,
        &SGD,
        op,
        w.numel(),
        &extra,
        &[&w.buf, &g.buf, &momentum_buf.buf],
    )
}

/// One Adam step (`t` is the 1-based step count) on `w` given `g`, updating the moments `m`
/// and `v` (zeros before the first step); the bias corrections 1 - beta^t are computed here
/// in f64.
// The arguments are the optimizer's hyperparameters, one to one with the reference.
#[allow(clippy::too_many_arguments)]
pub fn adam_step(
    gpu: &Gpu,
    w: &Tensor,
    g: &Tensor,
    m: &Tensor,
    v: &Tensor,
    lr: f32,
    beta1: f32,
    beta2: f32,
    eps: f32,
    weight_decay: f32,
    t: u32,
) -> Result<()> {
    let op = "adam_step";
    let tensors = [("w", w), ("g", g), ("m", m), ("v", v)];
    same_shapes(op, &tensors)?;
    distinct(op, &tensors)?;
    finite(
        op,
        &[("lr", lr), ("eps", eps), ("weight_decay", weight_decay)],
    )?;
    ensure(t >= 1, op, || format!("step count t starts at 1, got {t}"))?;
    for (name, b) in [("beta1", beta1), ("beta2", beta2)] {
        ensure((0.0..1.0).contains(&b), op, || {
            format!("{name} = {b} is not in [0, 1)")
        })?;
    }
    let correction = |b: f32| (1.0 - f64::from(b).powf(f64::from(t))) as f32;
    let (c1, c2) = (correction(beta1), correction(beta2));
    // 1 - beta^t can round to 0 in f32 only for beta within ~1e-38 of 1: never in practice,
    // but a zero would make every weight NaN.
    ensure(c1 > 0.0 && c2 > 0.0, op, || {
        format!("bias corrections 1 - beta^t ({c1}, {c2}) underflow f32")
    })?;
    let extra = [
        lr.to_bits(),
        beta1.to_bits(),
        beta2.to_bits(),
        eps.to_bits(),
        weight_decay.to_bits(),
        c1.to_bits(),
        c2.to_bits(),
    ];
    dispatch_units(
        gpu,
        &ADAM,
        op,
        w.numel(),
        &extra,
        &[&w.buf, &g.buf, &m.buf, &v.buf],
    )
}

/// One tensor's SGD update for [`sgd_step_multi`]: the weights, their gradient, their momentum
/// buffer and the weight decay that applies to them.
pub struct SgdUpdate<'a> {
    pub w: &'a Tensor,
    pub g: &'a Tensor,
    pub momentum_buf: &'a Tensor,
    pub weight_decay: f32,
}

/// `sgd_step` on every tensor of `updates`: up to 8 small tensors (lengths multiples of 4, at
/// most `MULTI_LARGEST`) a dispatch (`optim_multi.wgsl`), the others one at a time
/// (`PROXYLESS_SGD=per-tensor`: all of them); the same results as `sgd_step`, bit for bit. No
/// buffer may appear twice among the updates.
pub fn sgd_step_multi(
    gpu: &Gpu,
    updates: &[SgdUpdate],
    lr: f32,
    momentum: f32,
    nesterov: bool,
) -> Result<()> {
    let op = "sgd_step_multi";
    finite(op, &[("lr", lr), ("momentum", momentum)])?;
    // Everything is checked before anything is updated.
    let mut seen = std::collections::HashSet::new();
    for (i, u) in updates.iter().enumerate() {
        let tensors = [("w", u.w), ("g", u.g), ("momentum_buf", u.momentum_buf)];
        same_shapes(op, &tensors)?;
        distinct(op, &tensors)?;
        finite(op, &[("weight_decay", u.weight_decay)])?;
        for (name, t) in tensors {
            ensure(seen.insert(std::ptr::from_ref(&t.buf)), op, || {
                format!(
                    "update {i}'s {name} is a buffer of an earlier update; each may appear once"
                )
            })?;
        }
    }
    // `PROXYLESS_SGD=per-tensor`: every tensor alone, for comparisons.
    let batch = !crate::gpu::tuning().sgd_per_tensor;
    let (batched, alone): (Vec<&SgdUpdate>, Vec<&SgdUpdate>) = updates
        .iter()
        .partition(|u| batch && u.w.numel().is_multiple_of(4) && u.w.numel() <= MULTI_LARGEST);
    for u in alone {
        let (w, g, b, wd) = (u.w, u.g, u.momentum_buf, u.weight_decay);
        sgd_step(gpu, w, g, b, lr, momentum, wd, nesterov)?;
    }
    let per_dispatch =
        (gpu.limits.max_storage_buffers_per_shader_stage as usize / 3).clamp(1, MULTI_MAX);
    for group in batched.chunks(per_dispatch) {
        multi_dispatch(gpu, group, lr, momentum, nesterov, op)?;
    }
    Ok(())
}

/// One `sgd_step_multi` dispatch over `group` (lengths multiples of 4).
fn multi_dispatch(
    gpu: &Gpu,
    group: &[&SgdUpdate],
    lr: f32,
    momentum: f32,
    nesterov: bool,
    op: &str,
) -> Result<()> {
    let n = group.len();
    let slots = n.div_ceil(4);
    let spec = KernelSpec {
        file: "optim_multi",
        source: MULTI_SOURCE,
        entry: "sgd_step_multi",
        bindings: &MULTI_BINDINGS[..3 * n],
    };
    let kernel = gpu.kernel_variant(&spec, &format!(" tensors={n}"), || multi_template(n))?;
    let mut group_ends = vec![0u32; 4 * slots];
    let mut units = vec![0u32; 4 * slots];
    let mut decay = vec![0u32; 4 * slots];
    // Workgroups of 64 invocations, one vec4 unit each.
    let mut end = 0usize;
    for (t, u) in group.iter().enumerate() {
        let len = u.w.numel() / 4;
        end += len.div_ceil(64);
        group_ends[t] = u32_of(end, op)?;
        units[t] = u32_of(len, op)?;
        decay[t] = u.weight_decay.to_bits();
    }
    let groups = groups_for(u32_of(end, op)?, gpu.max_groups_per_dim());
    let mut params = vec![groups[0], lr.to_bits(), momentum.to_bits(), nesterov as u32];
    params.extend(group_ends);
    params.extend(units);
    params.extend(decay);
    let buffers: Vec<&GpuBuffer> = group
        .iter()
        .flat_map(|u| [&u.w.buf, &u.g.buf, &u.momentum_buf.buf])
        .collect();
    gpu.dispatch(&kernel, &params, &buffers, groups)
}

/// The bindings and the per-tensor branches of `sgd_step_multi` for `n` tensors.
fn multi_template(n: usize) -> Vec<(&'static str, String)> {
    let mut bindings = String::new();
    let mut body = String::new();
    for t in 0..n {
        let b = 1 + 3 * t;
        let _ = writeln!(
            bindings,
            "@group(0) @binding({b}) var<storage, read_write> w{t}: array<vec4<f32>>;\n\
             @group(0) @binding({}) var<storage, read> g{t}: array<vec4<f32>>;\n\
             @group(0) @binding({}) var<storage, read_write> buf{t}: array<vec4<f32>>;",
            b + 1,
            b + 2
        );
        let (slot, lane) = (t / 4, t % 4);
        let start = if t == 0 {
            "0u".to_string()
        } else {
            format!("p.groups[{}][{}]", (t - 1) / 4, (t - 1) % 4)
        };
        let test = match (t, t + 1 == n) {
            (0, true) => "    {".to_string(),
            (0, false) => "    if (wg < p.groups[0][0]) {".to_string(),
            (_, true) => "    } else {".to_string(),
            (_, false) => format!("    }} else if (wg < p.groups[{slot}][{lane}]) {{"),
        };
        let _ = writeln!(
            body,
            "{test}\n\
             \x20       let i = (wg - {start}) * 64u + lid;\n\
             \x20       if (i < p.units[{slot}][{lane}]) {{\n\
             \x20           let wi = w{t}[i];\n\
             \x20           let d = g{t}[i] + p.decay[{slot}][{lane}] * wi;\n\
             \x20           let m = p.momentum * buf{t}[i] + d;\n\
             \x20           buf{t}[i] = m;\n\
             \x20           let step = select(m, d + p.momentum * m, p.nesterov != 0u);\n\
             \x20           w{t}[i] = wi - p.lr * step;\n\
             \x20       }}"
        );
    }
    body.push_str("    }");
    vec![
        ("SLOTS", n.div_ceil(4).to_string()),
        ("BINDINGS", bindings),
        ("BODY", body),
    ]
}
