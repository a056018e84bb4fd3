//! Full 2-D convolution (`shaders/conv.wgsl`): the network's stem, a 3x3 conv from the image's
//! 3 channels, stride 1 (CIFAR) or 2 (ImageNet). Any odd k and any stride work, padding k / 2.
//! Input NHWC `[n, h, w, cin]`, weight OIHW `[cout, cin, k, k]`, output NHWC `[n, ho, wo, cout]`
//! with `ho = (h + 2 pad - k) / stride + 1`.
//!
//! The weight gradient reduces over every output pixel of the batch: it is split into chunks
//! of pixels whose partial gradients `ops::reduce::sum_slices` adds.

use anyhow::Result;

use super::{ensure, expect_rank, expect_shape, reduce, u32_of};
use crate::gpu::{groups_for, Access, Gpu, KernelSpec, Tensor};

const SOURCE: &str = include_str!("../../shaders/conv.wgsl");
const FORWARD: KernelSpec = KernelSpec {
    file: "conv",
    source: SOURCE,
    entry: "conv_forward",
    bindings: &[Access::Read, Access::Read, Access::ReadWrite],
};
const BACKWARD_INPUT: KernelSpec = KernelSpec {
    file: "conv",
    source: SOURCE,
    entry: "conv_backward_input",
    bindings: &[Access::Read, Access::Read, Access::ReadWrite],
};
const BACKWARD_WEIGHT: KernelSpec = KernelSpec {
    file: "conv",
    source: SOURCE,
    entry: "conv_backward_weight",
    bindings: &[Access::Read, Access::Read, Access::ReadWrite],
};

/// Sizes of one convolution, checked against each other.
#[derive(Clone, Copy, Debug)]
struct Geometry {
    n: usize,
    h: usize,
    w: usize,
    cin: usize,
    cout: usize,
    k: usize,
    stride: usize,
    ho: usize,
    wo: usize,
}

impl Geometry {
    fn out_shape(&self) -> [usize; 4] {
        [self.n, self.ho, self.wo, self.cout]
    }

    /// The uniform words of `shaders/conv.wgsl`'s `Params`.
    fn params(&self, count: usize, groups_x: u32, chunk: usize, op: &str) -> Result<Vec<u32>> {
        let g = self;
        [
            g.n,
            g.h,
            g.w,
            g.cin,
            g.ho,
            g.wo,
            g.cout,
            g.k,
            g.stride,
            g.k / 2,
            count,
            groups_x as usize,
            chunk,
            g.n * g.ho * g.wo,
        ]
        .iter()
        .map(|&v| u32_of(v, op))
        .collect()
    }
}

fn geometry(x: &Tensor, w: &Tensor, stride: usize, op: &str) -> Result<Geometry> {
    expect_rank(x, 4, op, "input")?;
    expect_rank(w, 4, op, "weight")?;
    let [n, h, wd, cin] = [x.shape[0], x.shape[1], x.shape[2], x.shape[3]];
    let [cout, wcin, kh, kw] = [w.shape[0], w.shape[1], w.shape[2], w.shape[3]];
    ensure(wcin == cin, op, || {
        format!(
            "weight {:?} (out, in, k, k) does not take the {cin} channels of input {:?}",
            w.shape, x.shape
        )
    })?;
    ensure(kh == kw && kh % 2 == 1, op, || {
        format!(
            "weight {:?} must have a square, odd-sized kernel (padding k/2)",
            w.shape
        )
    })?;
    ensure(stride >= 1, op, || {
        format!("stride must be at least 1, got {stride}")
    })?;
    let k = kh;
    let pad = k / 2;
    // With odd k and pad k/2, h + 2 pad - k = h - 1: the output is never empty.
    let (ho, wo) = (
        (h + 2 * pad - k) / stride + 1,
        (wd + 2 * pad - k) / stride + 1,
    );
    let g = Geometry {
        n,
        h,
        w: wd,
        cin,
        cout,
        k,
        stride,
        ho,
        wo,
    };
    // Coordinates are signed 32-bit in the kernel, flat indices unsigned 32-bit.
    let limit = i32::MAX as usize;
    ensure(
        x.numel() <= limit
            && n * ho * wo * cout <= limit
            && w.numel() <= limit
            && stride <= limit
            && h + k <= limit
            && wd + k <= limit,
        op,
        || {
            format!(
                "input {:?}, weight {:?}, stride {stride}: sizes past 2^31 are not supported",
                x.shape, w.shape
            )
        },
    )?;
    Ok(g)
}

/// Outputs per invocation: rows (pixels, 64 apart) x columns (channels). Four rows once there
/// are enough pixels to keep the workgroup count up; overridable for experiments with
/// `PROXYLESS_CONV_TILE=RxC`.
fn tile(pixels: usize, channels: usize) -> (usize, usize) {
    if let Ok(s) = std::env::var("PROXYLESS_CONV_TILE") {
        if let Some((r, c)) = s.split_once('x') {
            if let (Ok(r), Ok(c)) = (r.parse::<usize>(), c.parse::<usize>()) {
                if (1..=8).contains(&r) && (1..=16).contains(&c) {
                    return (r, c.min(channels));
                }
            }
        }
    }
    let rows = if pixels >= 64 * 4 * 8 { 4 } else { 1 };
    (rows, channels.min(8))
}

/// Which entry point a template is generated for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Pass {
    Forward,
    BackwardInput,
    BackwardWeight,
}

/// Generates the unrolled `rows x cols` register tile of `pass` into its placeholders; the
/// placeholders of the other entry points stay empty.
fn template(pass: Pass, rows: usize, cols: usize) -> Vec<(&'static str, String)> {
    let mut fwd = [String::new(), String::new(), String::new(), String::new()];
    let mut dxs = [String::new(), String::new(), String::new(), String::new()];
    let mut dws = [String::new(), String::new(), String::new()];
    let mut store = String::new();
    let mut dx_store = String::new();
    match pass {
        Pass::Forward => {
            let [decl, tap, load, fma] = &mut fwd;
            for r in 0..rows {
                let off = r * 64;
                *decl += &format!("    let pix{r} = min(pix_base + {off}u, p.count - 1u);\n");
                *decl += &format!(
                    "    let oy{r} = i32((pix{r} / p.wo) % p.ho * p.stride) - i32(p.pad);\n"
                );
                *decl += &format!("    let ox{r} = i32(pix{r} % p.wo * p.stride) - i32(p.pad);\n");
                *decl += &format!("    let row{r} = pix{r} / (p.ho * p.wo) * p.h;\n");
                *tap +=
                    &format!("            let in{r} = inside(oy{r} + i32(ky), ox{r} + i32(kx));\n");
                *tap += &format!(
                    "            let xb{r} = x_pixel(row{r}, oy{r} + i32(ky), ox{r} + i32(kx));\n"
                );
                *load +=
                    &format!("                let xv{r} = select(0.0, x[xb{r} + ci], in{r});\n");
                store += &format!("    if (pix_base + {off}u < p.count) {{\n");
                store += &format!("        let yb{r} = (pix_base + {off}u) * p.cout + co0;\n");
                for c in 0..cols {
                    *decl += &format!("    var acc{r}_{c} = 0.0;\n");
                    *fma +=
                        &format!("                acc{r}_{c} = fma(xv{r}, w{c}, acc{r}_{c});\n");
                    store += &format!(
                        "        if (co0 + {c}u < p.cout) {{ y[yb{r} + {c}u] = acc{r}_{c}; }}\n"
                    );
                }
                store += "    }\n";
            }
            for c in 0..cols {
                *decl += &format!("    let wb{c} = min(co0 + {c}u, p.cout - 1u) * p.cin * kk;\n");
                *load += &format!("                let w{c} = wt[wb{c} + wofs];\n");
            }
        }
        Pass::BackwardInput => {
            let [decl, tap, load, fma] = &mut dxs;
            for r in 0..rows {
                let off = r * 64;
                *decl += &format!("    let q{r} = min(pix_base + {off}u, p.count - 1u);\n");
                *decl += &format!("    let iy{r} = i32((q{r} / p.w) % p.h + p.pad);\n");
                *decl += &format!("    let ix{r} = i32(q{r} % p.w + p.pad);\n");
                *decl += &format!("    let orow{r} = q{r} / (p.h * p.w) * p.ho;\n");
                *tap += &format!("            let oy{r} = out_coord(iy{r} - i32(ky), p.ho);\n");
                *tap += &format!("            let ox{r} = out_coord(ix{r} - i32(kx), p.wo);\n");
                *tap += &format!("            let ok{r} = oy{r} >= 0 && ox{r} >= 0;\n");
                *tap += &format!(
                    "            let db{r} = ((orow{r} + u32(max(oy{r}, 0))) * p.wo + u32(max(ox{r}, 0))) * p.cout;\n"
                );
                *load +=
                    &format!("                let g{r} = select(0.0, dy[db{r} + co], ok{r});\n");
                dx_store += &format!("    if (pix_base + {off}u < p.count) {{\n");
                dx_store += &format!("        let xb{r} = (pix_base + {off}u) * p.cin + ci0;\n");
                for c in 0..cols {
                    *decl += &format!("    var acc{r}_{c} = 0.0;\n");
                    *fma += &format!("                acc{r}_{c} = fma(g{r}, w{c}, acc{r}_{c});\n");
                    dx_store += &format!(
                        "        if (ci0 + {c}u < p.cin) {{ dx[xb{r} + {c}u] = acc{r}_{c}; }}\n"
                    );
                }
                dx_store += "    }\n";
            }
            for c in 0..cols {
                *decl += &format!("    let wb{c} = min(ci0 + {c}u, p.cin - 1u) * kk;\n");
                *load += &format!("                let w{c} = wt[wofs + wb{c}];\n");
            }
        }
        Pass::BackwardWeight => {
            let [decl, fma, st] = &mut dws;
            for c in 0..cols {
                *decl += &format!("    let cc{c} = min(co0 + {c}u, p.cout - 1u);\n");
                *decl += &format!("    var acc{c} = 0.0;\n");
                *fma += &format!("        acc{c} = fma(xv, dy_w[dyb + cc{c}], acc{c});\n");
                *st += &format!(
                    "        if (co0 + {c}u < p.cout) {{ dw_part[out_base + (co0 + {c}u) * p.count] = acc{c}; }}\n"
                );
            }
        }
    }
    let [fd, ft, fl, ff] = fwd;
    let [xd, xt, xl, xf] = dxs;
    let [wd, wf, ws] = dws;
    vec![
        ("ROWS", rows.to_string()),
        ("COLS", cols.to_string()),
        ("FWD_DECL", fd),
        ("FWD_TAP", ft),
        ("FWD_LOAD", fl),
        ("FWD_FMA", ff),
        ("FWD_STORE", store),
        ("DX_DECL", xd),
        ("DX_TAP", xt),
        ("DX_LOAD", xl),
        ("DX_FMA", xf),
        ("DX_STORE", dx_store),
        ("DW_DECL", wd),
        ("DW_FMA", wf),
        ("DW_STORE", ws),
    ]
}

/// Workgroups for `items` over lanes in blocks of `64 * rows`, folded into x/y, with `zs`
/// channel blocks along z.
fn grid(gpu: &Gpu, items: usize, rows: usize, zs: usize, op: &str) -> Result<[u32; 3]> {
    let max = gpu.max_groups_per_dim();
    let [gx, gy, _] = groups_for(u32_of(items.div_ceil(64 * rows), op)?, max);
    let gz = u32_of(zs, op)?;
    ensure(gz <= max, op, || {
        format!("{zs} channel blocks exceed the device limit of {max} workgroups")
    })?;
    Ok([gx, gy, gz])
}

/// `y[b, oy, ox, co] = sum_{ci, ky, kx} x[b, oy*s + ky - k/2, ox*s + kx - k/2, ci] * w[co, ci, ky, kx]`
/// for input `x` `[n, h, w, cin]` and weight `w` `[cout, cin, k, k]` (odd k, stride >= 1);
/// returns `y` `[n, ho, wo, cout]`.
pub fn conv2d_forward(gpu: &Gpu, x: &Tensor, w: &Tensor, stride: usize) -> Result<Tensor> {
    let op = "conv2d_forward";
    let g = geometry(x, w, stride, op)?;
    let npix = g.n * g.ho * g.wo;
    let (rows, cols) = tile(npix, g.cout);
    let groups = grid(gpu, npix, rows, g.cout.div_ceil(cols), op)?;
    let kernel = gpu.kernel(&FORWARD, &template(Pass::Forward, rows, cols))?;
    let params = g.params(npix, groups[0], 0, op)?;
    let y = gpu.empty(&g.out_shape());
    gpu.dispatch(&kernel, &params, &[&x.buf, &w.buf, &y.buf], groups)?;
    Ok(y)
}

/// Output pixels per chunk of the weight gradient's reduction: enough chunks for at least 256
/// workgroups in all and at most 16384 pixels per chunk, but no chunk under 64 pixels.
fn weight_chunk(npix: usize, base_groups: usize) -> usize {
    let want = 256usize
        .div_ceil(base_groups.max(1))
        .max(npix.div_ceil(16384));
    let chunks = want.min(npix.div_ceil(64)).max(1);
    npix.div_ceil(chunks)
}

/// Gradients of [`conv2d_forward`] for upstream gradient `dy` `[n, ho, wo, cout]`:
/// returns `(dx [n, h, w, cin], dw [cout, cin, k, k])`.
pub fn conv2d_backward(
    gpu: &Gpu,
    x: &Tensor,
    w: &Tensor,
    stride: usize,
    dy: &Tensor,
) -> Result<(Tensor, Tensor)> {
    let op = "conv2d_backward";
    let g = geometry(x, w, stride, op)?;
    expect_shape(dy, &g.out_shape(), op, "dy")?;

    // dx: lanes over input pixels, a block of input channels per workgroup.
    let in_pix = g.n * g.h * g.w;
    let (rows, cols) = tile(in_pix, g.cin);
    let groups = grid(gpu, in_pix, rows, g.cin.div_ceil(cols), op)?;
    let dx_params = g.params(in_pix, groups[0], 0, op)?;
    let dx_kernel = gpu.kernel(&BACKWARD_INPUT, &template(Pass::BackwardInput, rows, cols))?;

    // dw: lanes over taps, a block of output channels per workgroup, chunks of pixels along z.
    let taps = g.cin * g.k * g.k;
    let npix = g.n * g.ho * g.wo;
    let cols_w = g.cout.min(8);
    let tap_blocks = taps.div_ceil(64);
    let co_blocks = g.cout.div_ceil(cols_w);
    let chunk = weight_chunk(npix, tap_blocks * co_blocks);
    let chunks = npix.div_ceil(chunk);
    let max = gpu.max_groups_per_dim() as usize;
    ensure(
        tap_blocks <= max && co_blocks <= max && chunks <= max,
        op,
        || {
            format!(
                "weight {:?}: grid {tap_blocks}x{co_blocks}x{chunks} over the device limit",
                w.shape
            )
        },
    )?;
    let dw_groups = [tap_blocks as u32, co_blocks as u32, chunks as u32];
    let dw_params = g.params(taps, tap_blocks as u32, chunk, op)?;
    let dw_kernel = gpu.kernel(&BACKWARD_WEIGHT, &template(Pass::BackwardWeight, 1, cols_w))?;

    let dx = gpu.empty(&x.shape);
    let skip = std::env::var("TMP_SKIP").unwrap_or_default(); // TEMPORARY
    if skip != "dx" {
        gpu.dispatch(&dx_kernel, &dx_params, &[&dy.buf, &w.buf, &dx.buf], groups)?;
    }
    let dw = gpu.empty(&w.shape);
    if skip == "dw" {
        return Ok((dx, dw));
    }
    if chunks == 1 {
        // A single slice is the gradient itself.
        gpu.dispatch(
            &dw_kernel,
            &dw_params,
            &[&x.buf, &dy.buf, &dw.buf],
            dw_groups,
        )?;
    } else {
        let partial = gpu.alloc((chunks * w.numel() * 4) as u64);
        gpu.dispatch(
            &dw_kernel,
            &dw_params,
            &[&x.buf, &dy.buf, &partial],
            dw_groups,
        )?;
        reduce::sum_slices(gpu, &partial, &dw.buf, w.numel(), chunks, false)?;
    }
    Ok((dx, dw))
}
