//! Depthwise k x k convolution on NHWC tensors (`shaders/depthwise.wgsl`): k in {3, 5, 7},
//! stride 1 or 2, padding k / 2, weights `[c, k, k]`.
//!
//! Each kernel is generated for its kernel size, stride, strip width and vector width: the
//! per-row body (every tap of a strip of columns) is unrolled here and pasted into the WGSL.
//! The weight gradient is a split reduction: one partial per (image, row chunk, column strip),
//! summed by `reduce::sum_slices`.

use std::collections::HashMap;
use std::fmt::Write;
use std::sync::{Arc, Mutex, OnceLock};

use anyhow::Result;

use super::{ensure, expect_rank, expect_shape, reduce, u32_of};
use crate::gpu::{groups_for, Access, Gpu, Kernel, KernelSpec, Tensor};

const SOURCE: &str = include_str!("../../shaders/depthwise.wgsl");
const BUFFERS: &[Access] = &[Access::Read, Access::Read, Access::ReadWrite];
const TEXTURES: &[Access] = &[Access::Texture, Access::Texture, Access::ReadWrite];

/// Output columns per invocation of the forward and weight-gradient kernels, input columns
/// per invocation of the input-gradient kernel (a multiple of the stride).
const FWD_STRIP: usize = 8;
const DX_STRIP: usize = 8;
const DW_STRIP: usize = 8;

/// Invocations to aim for before rows are split into chunks (both cores busy even at batch 1).
const TARGET_INVOCATIONS: usize = 4096;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Entry {
    Forward,
    BackwardInput,
    BackwardWeight,
}

impl Entry {
    fn name(self) -> &'static str {
        match self {
            Entry::Forward => "dw_forward",
            Entry::BackwardInput => "dw_backward_input",
            Entry::BackwardWeight => "dw_backward_weight",
        }
    }
}

/// One generated variant of a kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Variant {
    entry: Entry,
    k: usize,
    stride: usize,
    /// Operands read through textures, four channels per invocation (else storage buffers,
    /// one channel per invocation).
    tex: bool,
    /// Strip width in columns.
    strip: usize,
}

/// Validated shapes of a depthwise convolution.
#[derive(Clone, Copy, Debug)]
struct Dims {
    n: usize,
    h: usize,
    w: usize,
    c: usize,
    k: usize,
    stride: usize,
    ho: usize,
    wo: usize,
}

fn dims(x: &Tensor, w: &Tensor, stride: usize, op: &str) -> Result<Dims> {
    expect_rank(x, 4, op, "input")?;
    expect_rank(w, 3, op, "weight")?;
    let [n, h, wd, c] = [x.shape[0], x.shape[1], x.shape[2], x.shape[3]];
    let k = w.shape[1];
    ensure(w.shape[0] == c, op, || {
        format!(
            "weight {:?} (c, k, k) does not match the {c} channels of input {:?}",
            w.shape, x.shape
        )
    })?;
    ensure(w.shape[2] == k && matches!(k, 3 | 5 | 7), op, || {
        format!("weight {:?} must be [c, k, k] with k in 3, 5, 7", w.shape)
    })?;
    ensure(stride == 1 || stride == 2, op, || {
        format!("stride {stride} is not 1 or 2 (input {:?})", x.shape)
    })?;
    let pad = k / 2;
    let ho = (h + 2 * pad - k) / stride + 1;
    let wo = (wd + 2 * pad - k) / stride + 1;
    // Every element index the kernels form must fit in 32 bits.
    u32_of(n * h * wd * c, op)?;
    Ok(Dims {
        n,
        h,
        w: wd,
        c,
        k,
        stride,
        ho,
        wo,
    })
}

fn tune(i: usize, default: usize) -> usize {
    std::env::var("PROXYLESS_DW")
        .ok()
        .and_then(|s| s.split(',').nth(i).and_then(|v| v.parse().ok()))
        .unwrap_or(default)
}

/// The generated source text of the placeholders of one variant (others get inert fillers).
fn template(v: Variant) -> Vec<(&'static str, String)> {
    let (k, s, t) = (v.k, v.stride, v.strip);
    let mut vals: Vec<(&'static str, String)> = vec![
        ("K", k.to_string()),
        ("S", s.to_string()),
        ("PAD", (k / 2).to_string()),
    ];
    if v.vec == 4 {
        vals.push(("V", "vec4<f32>".into()));
        vals.push((
            "WLOAD",
            "V(wt[(q * 4u) * KK + t], wt[(q * 4u + 1u) * KK + t], \
             wt[(q * 4u + 2u) * KK + t], wt[(q * 4u + 3u) * KK + t])"
                .into(),
        ));
    } else {
        vals.push(("V", "f32".into()));
        vals.push(("WLOAD", "wt[q * KK + t]".into()));
    }
    let (fwd, dx, dw) = match v.entry {
        Entry::Forward => (gen_forward(k, s, t), Default::default(), Default::default()),
        Entry::BackwardInput => (
            Default::default(),
            gen_backward_input(k, s, t),
            Default::default(),
        ),
        Entry::BackwardWeight => (
            Default::default(),
            Default::default(),
            gen_backward_weight(k, s, t, v.vec),
        ),
    };
    vals.push(("FWD_T", fwd.t.to_string()));
    vals.push(("FWD_PRE", fwd.pre));
    vals.push(("FWD_STEP", fwd.step));
    vals.push(("DX_T", dx.t.to_string()));
    vals.push(("DX_DMIN", dx.dmin.to_string()));
    vals.push(("DX_PRE", dx.pre));
    vals.push(("DX_STEP", dx.step));
    vals.push(("DW_T", dw.t.to_string()));
    vals.push(("DW_PRE", dw.pre));
    vals.push(("DW_STEP", dw.step));
    vals.push(("DW_STORE", dw.store));
    vals
}

/// Generated pieces of one entry point.
struct Body {
    t: usize,
    dmin: i32,
    pre: String,
    step: String,
    store: String,
}

impl Default for Body {
    fn default() -> Self {
        Body {
            t: 1,
            dmin: 0,
            pre: String::new(),
            step: String::new(),
            store: String::new(),
        }
    }
}

const Z: &str = "V(0.0)";

/// Column offsets and validity of a window of `width` columns starting at `first` (an i32
/// expression), in a row of `cols` (a u32 expression) columns.
fn gen_columns(out: &mut String, first: &str, cols: &str, width: usize) {
    for c in 0..width {
        let _ = writeln!(out, "    let cx{c} = {first} + {c};");
        let _ = writeln!(out, "    let ck{c} = cx{c} >= 0 && cx{c} < i32({cols});");
        let _ = writeln!(
            out,
            "    let ci{c} = u32(clamp(cx{c}, 0, i32({cols}) - 1)) * p.cq + q;"
        );
    }
}

/// Declares the window `r{row}_{col}` and the weights `w{ky}_{kx}`.
fn gen_window_and_weights(out: &mut String, k: usize, rows: usize, width: usize) {
    for ky in 0..k {
        for kx in 0..k {
            let _ = writeln!(out, "    let w{ky}_{kx} = wtap(q, {}u);", ky * k + kx);
        }
    }
    for j in 0..rows {
        for c in 0..width {
            let _ = writeln!(out, "    var r{j}_{c} = {Z};");
        }
    }
}

/// Loads window row `j` from source row `{base} + j` (i32), zero outside the image.
fn gen_row_load(out: &mut String, indent: &str, base: &str, j: usize, width: usize) {
    let _ = writeln!(out, "{indent}{{");
    let _ = writeln!(out, "{indent}    let yy = {base} + {j};");
    let _ = writeln!(out, "{indent}    let ok = yy >= 0 && yy < hi;");
    let _ = writeln!(
        out,
        "{indent}    let rb = (img + u32(clamp(yy, 0, hi - 1))) * row_stride;"
    );
    for c in 0..width {
        let _ = writeln!(
            out,
            "{indent}    r{j}_{c} = select({Z}, src[rb + ci{c}], ok && ck{c});"
        );
    }
    let _ = writeln!(out, "{indent}}}");
}

/// Moves the window up by `by` rows.
fn gen_shift(out: &mut String, rows: usize, by: usize, width: usize) {
    for j in 0..rows.saturating_sub(by) {
        for c in 0..width {
            let _ = writeln!(out, "        r{j}_{c} = r{}_{c};", j + by);
        }
    }
}

fn gen_forward(k: usize, s: usize, t: usize) -> Body {
    let width = (t - 1) * s + k;
    let mut pre = String::new();
    gen_columns(&mut pre, "ix0", "p.w", width);
    gen_window_and_weights(&mut pre, k, k, width);
    for j in 0..k - s {
        gen_row_load(&mut pre, "    ", "iy", j, width);
    }
    let mut step = String::new();
    for j in k - s..k {
        gen_row_load(&mut step, "        ", "iy", j, width);
    }
    for c in 0..t {
        let _ = writeln!(step, "        {{");
        let _ = writeln!(step, "            var a = r0_{} * w0_0;", c * s);
        for ky in 0..k {
            for kx in 0..k {
                if ky + kx == 0 {
                    continue;
                }
                let _ = writeln!(
                    step,
                    "            a = fma(r{ky}_{}, w{ky}_{kx}, a);",
                    c * s + kx
                );
            }
        }
        let _ = writeln!(
            step,
            "            if (ox0 + {c}u < p.wo) {{ dst[ybase + {c}u * p.cq] = a; }}"
        );
        let _ = writeln!(step, "        }}");
    }
    gen_shift(&mut step, k, s, width);
    Body {
        t,
        pre,
        step,
        ..Default::default()
    }
}

/// For stride `s` and padding `p`: the taps (tap, offset) that reach phase `r` (an input
/// coordinate `s*m + r` gets output coordinate `m + offset` through the tap).
fn phase_taps(k: usize, s: usize, r: usize) -> Vec<(usize, i32)> {
    let p = (k / 2) as i32;
    (0..k)
        .filter_map(|tap| {
            let num = r as i32 + p - tap as i32;
            (num.rem_euclid(s as i32) == 0).then_some((tap, num.div_euclid(s as i32)))
        })
        .collect()
}

fn gen_backward_input(k: usize, s: usize, t: usize) -> Body {
    let offsets: Vec<i32> = (0..s)
        .flat_map(|r| phase_taps(k, s, r).into_iter().map(|(_, d)| d))
        .collect();
    let dmin = *offsets.iter().min().unwrap_or(&0);
    let dmax = *offsets.iter().max().unwrap_or(&0);
    let rows = (dmax - dmin + 1) as usize;
    let width = t / s - 1 + rows;
    let mut pre = String::new();
    gen_columns(&mut pre, "ox0", "p.wo", width);
    gen_window_and_weights(&mut pre, k, rows, width);
    for j in 0..rows - 1 {
        gen_row_load(&mut pre, "    ", "oy", j, width);
    }
    let mut step = String::new();
    gen_row_load(&mut step, "        ", "oy", rows - 1, width);
    for r in 0..s {
        let _ = writeln!(step, "        {{");
        let _ = writeln!(step, "            let iy = m * S + {r}u;");
        let _ = writeln!(
            step,
            "            let xbase = ((n * p.h + iy) * p.w + ix0) * p.cq + q;"
        );
        let row_taps = phase_taps(k, s, r);
        for j in 0..t {
            let (u, rr) = (j / s, j % s);
            let col_taps = phase_taps(k, s, rr);
            let _ = writeln!(step, "            {{");
            let mut first = true;
            for &(ky, d) in &row_taps {
                for &(kx, e) in &col_taps {
                    let win = format!("r{}_{}", d - dmin, u as i32 + e - dmin);
                    if first {
                        let _ = writeln!(step, "                var a = {win} * w{ky}_{kx};");
                        first = false;
                    } else {
                        let _ = writeln!(step, "                a = fma({win}, w{ky}_{kx}, a);");
                    }
                }
            }
            if first {
                let _ = writeln!(step, "                let a = {Z};");
            }
            let _ = writeln!(
                step,
                "                if (iy < p.h && ix0 + {j}u < p.w) {{ dst[xbase + {j}u * p.cq] = a; }}"
            );
            let _ = writeln!(step, "            }}");
        }
        let _ = writeln!(step, "        }}");
    }
    gen_shift(&mut step, rows, 1, width);
    Body {
        t,
        dmin,
        pre,
        step,
        ..Default::default()
    }
}

fn gen_backward_weight(k: usize, s: usize, t: usize, vec: usize) -> Body {
    let width = (t - 1) * s + k;
    let mut pre = String::new();
    gen_columns(&mut pre, "ix0", "p.w", width);
    for j in 0..k {
        for c in 0..width {
            let _ = writeln!(pre, "    var r{j}_{c} = {Z};");
        }
    }
    for c in 0..t {
        let _ = writeln!(pre, "    let dk{c} = ox0 + {c}u < p.wo;");
        let _ = writeln!(
            pre,
            "    let dci{c} = min(ox0 + {c}u, p.wo - 1u) * p.cq + q;"
        );
    }
    for ky in 0..k {
        for kx in 0..k {
            let _ = writeln!(pre, "    var g{ky}_{kx} = {Z};");
        }
    }
    for j in 0..k - s {
        gen_row_load(&mut pre, "    ", "iy", j, width);
    }
    let mut step = String::new();
    for j in k - s..k {
        gen_row_load(&mut step, "        ", "iy", j, width);
    }
    for c in 0..t {
        let _ = writeln!(
            step,
            "        let d{c} = select({Z}, dy[dbase + dci{c}], dk{c});"
        );
    }
    for ky in 0..k {
        for kx in 0..k {
            for c in 0..t {
                let _ = writeln!(
                    step,
                    "        g{ky}_{kx} = fma(d{c}, r{ky}_{}, g{ky}_{kx});",
                    c * s + kx
                );
            }
        }
    }
    gen_shift(&mut step, k, s, width);
    let mut store = String::new();
    for ky in 0..k {
        for kx in 0..k {
            let tap = ky * k + kx;
            if vec == 4 {
                for j in 0..4 {
                    let _ = writeln!(
                        store,
                        "    part[pbase + (q * 4u + {j}u) * KK + {tap}u] = g{ky}_{kx}[{j}];"
                    );
                }
            } else {
                let _ = writeln!(store, "    part[pbase + q * KK + {tap}u] = g{ky}_{kx};");
            }
        }
    }
    Body {
        t,
        pre,
        step,
        store,
        ..Default::default()
    }
}

/// The compiled kernel of a variant; generated sources are cached so the hot path does not
/// regenerate them.
fn kernel(gpu: &Gpu, v: Variant) -> Result<Arc<Kernel>> {
    static TEMPLATES: OnceLock<Mutex<HashMap<Variant, Arc<Vec<(&'static str, String)>>>>> =
        OnceLock::new();
    let values = {
        let mut cache = TEMPLATES
            .get_or_init(|| Mutex::new(HashMap::new()))
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        Arc::clone(cache.entry(v).or_insert_with(|| Arc::new(template(v))))
    };
    let spec = match v.entry {
        Entry::Forward => &FORWARD,
        Entry::BackwardInput => &BACKWARD_INPUT,
        Entry::BackwardWeight => &BACKWARD_WEIGHT,
    };
    gpu.kernel(spec, &values)
}

/// Launch geometry of one kernel: `steps` row steps per image split into `chunks` of `rows`,
/// `strips` column strips, `cq` channel groups per pixel.
struct Grid {
    cq: usize,
    strips: usize,
    chunks: usize,
    rows: usize,
    steps: usize,
}

impl Grid {
    fn new(d: &Dims, vec: usize, cols: usize, strip: usize, steps: usize) -> Grid {
        let cq = d.c / vec;
        let strips = cols.div_ceil(strip);
        let cells = d.n * strips * cq;
        let want = TARGET_INVOCATIONS.div_ceil(cells).clamp(1, steps);
        let rows = steps.div_ceil(want);
        Grid {
            cq,
            strips,
            chunks: steps.div_ceil(rows),
            rows,
            steps,
        }
    }

    fn slices(&self, d: &Dims) -> usize {
        d.n * self.chunks * self.strips
    }

    fn dispatch(
        &self,
        gpu: &Gpu,
        kernel: &Kernel,
        d: &Dims,
        buffers: &[&crate::gpu::GpuBuffer],
        op: &str,
    ) -> Result<()> {
        let invocations = self.slices(d) * self.cq;
        let groups = groups_for(
            u32_of(invocations.div_ceil(64), op)?,
            gpu.max_groups_per_dim(),
        );
        let params = [
            u32_of(d.n, op)?,
            u32_of(d.h, op)?,
            u32_of(d.w, op)?,
            u32_of(self.cq, op)?,
            u32_of(d.ho, op)?,
            u32_of(d.wo, op)?,
            u32_of(d.c, op)?,
            u32_of(self.strips, op)?,
            u32_of(self.chunks, op)?,
            u32_of(self.rows, op)?,
            u32_of(self.steps, op)?,
        ];
        gpu.dispatch(kernel, &params, buffers, groups)
    }
}

/// y[n, oy, ox, c] = sum over ky, kx of x[n, oy*s + ky - k/2, ox*s + kx - k/2, c] * w[c, ky, kx]
/// for x `[n, h, w, c]`, w `[c, k, k]` (k in 3, 5, 7), stride 1 or 2; y is `[n, ho, wo, c]`.
pub fn depthwise_forward(gpu: &Gpu, x: &Tensor, w: &Tensor, stride: usize) -> Result<Tensor> {
    let op = "depthwise_forward";
    let d = dims(x, w, stride, op)?;
    let vec = vec_for(d.c);
    let v = Variant {
        entry: Entry::Forward,
        k: d.k,
        stride,
        vec,
        strip: tune(1, FWD_STRIP),
    };
    let grid = Grid::new(&d, vec, d.wo, v.strip, d.ho);
    let kernel = kernel(gpu, v)?;
    let y = gpu.empty(&[d.n, d.ho, d.wo, d.c]);
    grid.dispatch(gpu, &kernel, &d, &[&x.buf, &w.buf, &y.buf], op)?;
    Ok(y)
}

/// Returns (dx `[n, h, w, c]`, dw `[c, k, k]`) for the upstream gradient dy `[n, ho, wo, c]` of
/// `depthwise_forward(x, w, stride)`.
pub fn depthwise_backward(
    gpu: &Gpu,
    x: &Tensor,
    w: &Tensor,
    stride: usize,
    dy: &Tensor,
) -> Result<(Tensor, Tensor)> {
    let op = "depthwise_backward";
    let d = dims(x, w, stride, op)?;
    expect_shape(dy, &[d.n, d.ho, d.wo, d.c], op, "dy")?;
    let vec = vec_for(d.c);

    let vi = Variant {
        entry: Entry::BackwardInput,
        k: d.k,
        stride,
        vec,
        strip: tune(2, DX_STRIP),
    };
    let gi = Grid::new(&d, vec, d.w, vi.strip, d.h.div_ceil(stride));
    let vw = Variant {
        entry: Entry::BackwardWeight,
        k: d.k,
        stride,
        vec,
        strip: tune(3, DW_STRIP),
    };
    let gw = Grid::new(&d, vec, d.wo, vw.strip, d.ho);
    let slices = gw.slices(&d);
    let taps = d.c * d.k * d.k;
    u32_of(slices * taps, op)?;
    let ki = kernel(gpu, vi)?;
    let kw = kernel(gpu, vw)?;

    let dx = gpu.empty(&x.shape);
    gi.dispatch(gpu, &ki, &d, &[&dy.buf, &w.buf, &dx.buf], op)?;
    let dw = gpu.empty(&w.shape);
    let partial = gpu.alloc((slices * taps * 4) as u64);
    gw.dispatch(gpu, &kw, &d, &[&x.buf, &dy.buf, &partial], op)?;
    reduce::sum_slices(gpu, &partial, &dw.buf, taps, slices, false)?;
    Ok((dx, dw))
}
