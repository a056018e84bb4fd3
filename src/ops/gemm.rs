//! Strided matrix product with optional split-K (`shaders/gemm.wgsl`). Pointwise convolution
//! and linear layers express their forward and both backward products through it.

use anyhow::Result;

use super::{ensure, reduce, u32_of};
use crate::gpu::{Access, Gpu, GpuBuffer, KernelSpec};

const SPEC: KernelSpec = KernelSpec {
    file: "gemm",
    source: include_str!("../../shaders/gemm.wgsl"),
    entry: "gemm",
    bindings: &[Access::Read, Access::Read, Access::ReadWrite],
};

/// C(i, j) = sum_k A(i, k) B(k, j) with A(i,k) = a[i*a_si + k*a_sk], B(k,j) = b[k*b_sk + j*b_sj]
/// and C(i,j) = c[i*c_si + j*c_sj].
#[derive(Clone, Copy, Debug)]
pub struct Gemm {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub a_si: usize,
    pub a_sk: usize,
    pub b_sk: usize,
    pub b_sj: usize,
    pub c_si: usize,
    pub c_sj: usize,
}

/// Outputs per invocation (rows x columns). Overridable for experiments with
/// `PROXYLESS_GEMM_TILE=RxC`.
fn tile() -> (u32, u32) {
    if let Ok(s) = std::env::var("PROXYLESS_GEMM_TILE") {
        if let Some((r, c)) = s.split_once('x') {
            if let (Ok(r), Ok(c)) = (r.parse(), c.parse()) {
                if (1..=16).contains(&r) && (1..=32).contains(&c) {
                    return (r, c);
                }
            }
        }
    }
    (4, 8)
}

/// Generates the unrolled ROWS x COLS body of the kernel.
fn template(rows: u32, cols: u32) -> Vec<(&'static str, String)> {
    let mut decl = String::new();
    let mut load = String::new();
    let mut fma = String::new();
    let mut store = String::new();
    for r in 0..rows {
        decl += &format!("    let row{r} = i_base + {}u;\n", r * 64);
        decl += &format!("    let ra{r} = min(row{r}, p.m - 1u) * p.a_si;\n");
        load += &format!("        let a{r} = a[ra{r} + ka];\n");
    }
    for c in 0..cols {
        decl += &format!("    let cb{c} = min(j0 + {c}u, p.n - 1u) * p.b_sj;\n");
        load += &format!("        let b{c} = b[kb + cb{c}];\n");
    }
    for r in 0..rows {
        store += &format!("    if (row{r} < p.m) {{\n");
        for c in 0..cols {
            decl += &format!("    var acc{r}_{c} = 0.0;\n");
            fma += &format!("        acc{r}_{c} = fma(a{r}, b{c}, acc{r}_{c});\n");
            store += &format!(
                "        if (j0 + {c}u < p.n) {{ put(out_base + row{r} * p.c_si + (j0 + {c}u) * p.c_sj, acc{r}_{c}); }}\n"
            );
        }
        store += "    }\n";
    }
    vec![
        ("ROWS", rows.to_string()),
        ("COLS", cols.to_string()),
        ("DECL", decl),
        ("LOAD", load),
        ("FMA", fma),
        ("STORE", store),
    ]
}

/// Runs C (+)= A B. Splits the reduction when the output grid alone would leave the device
/// idle (weight gradients reduce over every pixel of the batch), then sums the slices.
pub fn gemm(
    gpu: &Gpu,
    a: &GpuBuffer,
    b: &GpuBuffer,
    c: &GpuBuffer,
    g: Gemm,
    accumulate: bool,
) -> Result<()> {
    let op = "gemm";
    ensure(g.m > 0 && g.n > 0 && g.k > 0, op, || {
        format!("empty product {g:?}")
    })?;
    let last = |i: usize, si: usize, j: usize, sj: usize| (i - 1) * si + (j - 1) * sj + 1;
    ensure(
        last(g.m, g.a_si, g.k, g.a_sk) as u64 * 4 <= a.bytes(),
        op,
        || format!("A of {} bytes is too small for {g:?}", a.bytes()),
    )?;
    ensure(
        last(g.k, g.b_sk, g.n, g.b_sj) as u64 * 4 <= b.bytes(),
        op,
        || format!("B of {} bytes is too small for {g:?}", b.bytes()),
    )?;
    ensure(
        last(g.m, g.c_si, g.n, g.c_sj) as u64 * 4 <= c.bytes(),
        op,
        || format!("C of {} bytes is too small for {g:?}", c.bytes()),
    )?;
    let (rows, cols) = tile();
    let kernel = gpu.kernel(&SPEC, &template(rows, cols))?;
    let gx = g.m.div_ceil(64 * rows as usize);
    let gy = g.n.div_ceil(cols as usize);
    // Aim for at least 64 workgroups, each reducing at least 128 values of k.
    let base = gx * gy;
    let mut splits = if base >= 64 {
        1
    } else {
        64usize.div_ceil(base)
    };
    splits = splits.min(g.k / 128).max(1);
    let k_chunk = g.k.div_ceil(splits);
    let splits = g.k.div_ceil(k_chunk);
    let max = gpu.max_groups_per_dim() as usize;
    ensure(gx <= max && gy <= max && splits <= max, op, || {
        format!("grid {gx}x{gy}x{splits} over the device limit for {g:?}")
    })?;
    let params = |m, n, c_si, c_sj, acc: bool| -> Result<Vec<u32>> {
        Ok(vec![
            u32_of(m, op)?,
            u32_of(n, op)?,
            u32_of(g.k, op)?,
            u32_of(g.a_si, op)?,
            u32_of(g.a_sk, op)?,
            u32_of(g.b_sk, op)?,
            u32_of(g.b_sj, op)?,
            u32_of(c_si, op)?,
            u32_of(c_sj, op)?,
            u32_of(k_chunk, op)?,
            acc as u32,
        ])
    };
    let groups = [gx as u32, gy as u32, splits as u32];
    if splits == 1 {
        return gpu.dispatch(
            &kernel,
            &params(g.m, g.n, g.c_si, g.c_sj, accumulate)?,
            &[a, b, c],
            groups,
        );
    }
    // Slices are written densely (row-major m x n) and then summed into C.
    ensure(g.c_sj == 1 && g.c_si == g.n, op, || {
        format!("split-K needs a dense row-major C, got {g:?}")
    })?;
    let partial = gpu.alloc((splits * g.m * g.n * 4) as u64);
    gpu.dispatch(
        &kernel,
        &params(g.m, g.n, g.n, 1, false)?,
        &[a, b, &partial],
        groups,
    )?;
    reduce::sum_slices(gpu, &partial, c, g.m * g.n, splits, accumulate)
}
