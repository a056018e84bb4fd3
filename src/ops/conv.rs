//! Full 2-D convolution (`shaders/conv.wgsl`): the network's stem, a 3x3 conv from the image's
//! 3 channels, stride 1 (CIFAR) or 2 (ImageNet). Any odd k and any stride work, padding k / 2.
//! Input NHWC `[n, h, w, cin]`, weight OIHW `[cout, cin, k, k]`, output NHWC `[n, ho, wo, cout]`
//! with `ho = (h + 2 pad - k) / stride + 1`.
//!
//! The kernels read x, dy and the weights (first packed as `[cin * k * k, cout]`, see the
//! shader) through textures and work on quads of output channels. The weight gradient reduces
//! over every output pixel of the batch: it is split into chunks of pixels and, within a chunk,
//! over the 64 lanes of a workgroup; `ops::reduce::sum_slices` adds the partial gradients. The
//! partials hold `64 * chunks` copies of the weight, which is small for a stem (3 input
//! channels) but limits this kernel to modest `cout * cin * k * k`.

use std::sync::Arc;

use anyhow::Result;

use super::{ensure, expect_rank, expect_shape, reduce, u32_of};
use crate::gpu::{
    groups_for, Access, Binding, Gpu, GpuBuffer, Kernel, KernelSpec, Tensor, TEX_WIDTH,
};

const SOURCE: &str = include_str!("../../shaders/conv.wgsl");
const PACK_WEIGHTS: KernelSpec = KernelSpec {
    file: "conv",
    source: SOURCE,
    entry: "conv_pack_weights",
    bindings: &[Access::Read, Access::ReadWrite],
};
const TEXTURES: &[Access] = &[Access::Texture, Access::Texture, Access::ReadWrite];
const FORWARD: KernelSpec = KernelSpec {
    file: "conv",
    source: SOURCE,
    entry: "conv_forward",
    bindings: TEXTURES,
};
const BACKWARD_INPUT: KernelSpec = KernelSpec {
    file: "conv",
    source: SOURCE,
    entry: "conv_backward_input",
    bindings: TEXTURES,
};
const BACKWARD_WEIGHT: KernelSpec = KernelSpec {
    file: "conv",
    source: SOURCE,
    entry: "conv_backward_weight",
    bindings: TEXTURES,
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

/// The per-dispatch fields of `Params` in `shaders/conv.wgsl` (the rest come from `Geometry`).
#[derive(Clone, Copy, Debug, Default)]
struct Extra {
    count: usize,
    groups_x: u32,
    chunk: usize,
    hq: usize,
    wq: usize,
    blocks: usize,
    phases_x: usize,
}

impl Geometry {
    fn out_shape(&self) -> [usize; 4] {
        [self.n, self.ho, self.wo, self.cout]
    }

    fn npix(&self) -> usize {
        self.n * self.ho * self.wo
    }

    fn taps(&self) -> usize {
        self.cin * self.k * self.k
    }

    /// Output channels rounded up to whole quads.
    fn cout4(&self) -> usize {
        self.cout.div_ceil(4) * 4
    }

    /// The uniform words of `Params`.
    fn params(&self, e: Extra, op: &str) -> Result<Vec<u32>> {
        let g = self;
        // 64 output pixels as whole images, rows and columns (the dw lanes' stride).
        let plane = g.ho * g.wo;
        let (step_img, rest) = (64 / plane, 64 % plane);
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
            g.cout4(),
            g.taps(),
            e.count,
            e.groups_x as usize,
            e.chunk,
            g.npix(),
            e.hq,
            e.wq,
            e.blocks,
            e.phases_x,
            rest % g.wo,
            rest / g.wo,
            step_img,
        ]
        .iter()
        .map(|&v| u32_of(v, op))
        .collect()
    }
}

fn geometry(gpu: &Gpu, x: &Tensor, w: &Tensor, stride: usize, op: &str) -> Result<Geometry> {
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
    ensure(kh == kw && !kh.is_multiple_of(2), op, || {
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
    // Coordinates are signed 32-bit in the kernels, flat indices unsigned 32-bit.
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
    let max_floats = TEX_WIDTH as usize * gpu.limits.max_texture_dimension_2d as usize * 4;
    let largest = x.numel().max(g.npix() * cout).max(g.taps() * g.cout4());
    ensure(largest <= max_floats, op, || {
        format!(
            "input {:?}, weight {:?}: {largest} floats exceed the {max_floats} of a texture \
             operand; use a smaller batch",
            x.shape, w.shape
        )
    })?;
    Ok(g)
}

/// Pixel rows of a tile: several once there are enough pixels to keep the workgroups up.
fn tile_rows(pixels: usize, rows: usize) -> usize {
    if pixels < 64 * rows * 8 {
        1
    } else {
        rows
    }
}

/// Which entry point a kernel is compiled for, with its tile.
#[derive(Clone, Copy, Debug)]
enum Pass {
    Pack,
    Forward { rows: usize, quads: usize },
    BackwardInput { rows: usize, cols: usize },
    BackwardWeight { quads: usize, taps: usize },
}

/// The compiled kernel of `pass`. `aligned`: cout is a multiple of 4 (dy quads are whole
/// texels, y takes vec4 stores).
fn kernel_for(
    gpu: &Gpu,
    spec: &KernelSpec,
    pass: Pass,
    aligned: bool,
) -> Result<std::sync::Arc<crate::gpu::Kernel>> {
    let variant = format!(" {pass:?} aligned={aligned}");
    gpu.kernel_variant(spec, &variant, || template(pass, aligned))
}

fn template(pass: Pass, aligned: bool) -> Vec<(&'static str, String)> {
    let (rows, cols, quads, taps) = match pass {
        Pass::Pack => (1, 1, 1, 1),
        Pass::Forward { rows, quads } => (rows, 1, quads, 1),
        Pass::BackwardInput { rows, cols } => (rows, cols, 1, 1),
        Pass::BackwardWeight { quads, taps } => (1, 1, quads, taps),
    };
    // y as vec4s or floats; the kernel names both writers, the other one a stub.
    let output = if aligned {
        "@group(0) @binding(3) var<storage, read_write> y4: array<vec4<f32>>;
fn put_y4(i: u32, v: vec4<f32>) { y4[i] = v; }
fn put_y(i: u32, v: f32) {}"
    } else {
        "@group(0) @binding(3) var<storage, read_write> y: array<f32>;
fn put_y(i: u32, v: f32) { y[i] = v; }
fn put_y4(i: u32, v: vec4<f32>) {}"
    };
    vec![
        ("TW", TEX_WIDTH.to_string()),
        ("ROWS", rows.to_string()),
        ("COLS", cols.to_string()),
        ("QUADS", quads.to_string()),
        ("TAPS", taps.to_string()),
        ("ALIGNED", aligned.to_string()),
        ("OUTPUT", output.to_string()),
    ]
}

/// Checks that a grid fits the device.
fn check_grid(gpu: &Gpu, groups: [usize; 3], op: &str) -> Result<[u32; 3]> {
    let max = gpu.max_groups_per_dim() as usize;
    ensure(groups.iter().all(|&g| g <= max), op, || {
        format!("grid {groups:?} exceeds the device limit of {max} workgroups per dimension")
    })?;
    Ok(groups.map(|g| g as u32))
}

/// The weights packed as `wp[t, co]` (cout padded to whole quads), as a texture.
fn packed_weights(
    gpu: &Gpu,
    g: &Geometry,
    w: &Tensor,
    op: &str,
) -> Result<std::sync::Arc<crate::gpu::GpuTexture>> {
    let len = g.taps() * g.cout4();
    let [gx, gy, _] = groups_for(u32_of(len.div_ceil(64), op)?, gpu.max_groups_per_dim());
    let extra = Extra {
        count: len,
        groups_x: gx,
        ..Default::default()
    };
    let kernel = kernel_for(gpu, &PACK_WEIGHTS, Pass::Pack, true)?;
    let wp = gpu.alloc((len * 4) as u64);
    gpu.dispatch(&kernel, &g.params(extra, op)?, &[&w.buf, &wp], [gx, gy, 1])?;
    gpu.to_texture(&wp, len)
}

/// `y[b, oy, ox, co] = sum_{ci, ky, kx} x[b, oy*s + ky - k/2, ox*s + kx - k/2, ci] * w[co, ci, ky, kx]`
/// for input `x` `[n, h, w, cin]` and weight `w` `[cout, cin, k, k]` (odd k, stride >= 1);
/// returns `y` `[n, ho, wo, cout]`.
pub fn conv2d_forward(gpu: &Gpu, x: &Tensor, w: &Tensor, stride: usize) -> Result<Tensor> {
    let op = "conv2d_forward";
    let g = geometry(gpu, x, w, stride, op)?;
    let npix = g.npix();
    // Register tiles (rows x quads for the forward, rows x input channels for dx, quads x taps
    // for dw): `PROXYLESS_CONV_*_TILE` for experiments.
    let (rows, quads) = crate::gpu::tuning().conv_fwd_tile.unwrap_or((8, 8));
    let rows = tile_rows(npix, rows);
    let quads = quads.min(g.cout4() / 4);
    let blocks = u32_of(npix.div_ceil(64 * rows), op)?;
    let [gx, gy, _] = groups_for(blocks, gpu.max_groups_per_dim());
    let groups = check_grid(
        gpu,
        [gx as usize, gy as usize, (g.cout4() / 4).div_ceil(quads)],
        op,
    )?;
    let extra = Extra {
        count: npix,
        groups_x: gx,
        ..Default::default()
    };
    let params = g.params(extra, op)?;
    let kernel = kernel_for(
        gpu,
        &FORWARD,
        Pass::Forward { rows, quads },
        g.cout.is_multiple_of(4),
    )?;
    let wp = packed_weights(gpu, &g, w, op)?;
    let xt = gpu.to_texture_for_backward(&x.buf, x.numel())?;
    let y = gpu.empty(&g.out_shape());
    gpu.dispatch_with(
        &kernel,
        &params,
        &[
            Binding::Texture(&xt),
            Binding::Texture(&wp),
            Binding::Buffer(&y.buf),
        ],
        groups,
    )?;
    Ok(y)
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
    let g = geometry(gpu, x, w, stride, op)?;
    expect_shape(dy, &g.out_shape(), op, "dy")?;
    let (dx_kernel, dx_params, dx_groups) = backward_input_plan(gpu, &g, op)?;
    let dw_plan = backward_weight_plan(gpu, &g, op)?;
    let wp = packed_weights(gpu, &g, w, op)?;
    let dyt = gpu.to_texture(&dy.buf, dy.numel())?;
    let dx = gpu.empty(&x.shape);
    gpu.dispatch_with(
        &dx_kernel,
        &dx_params,
        &[
            Binding::Texture(&dyt),
            Binding::Texture(&wp),
            Binding::Buffer(&dx.buf),
        ],
        dx_groups,
    )?;
    let dw = backward_weight_run(gpu, &g, x, &dyt, dw_plan)?;
    Ok((dx, dw))
}

/// The weight gradient of [`conv2d_forward`] alone: `dw [cout, cin, k, k]`. For the stem,
/// whose input (the images) needs no gradient.
pub fn conv2d_backward_weight(
    gpu: &Gpu,
    x: &Tensor,
    w: &Tensor,
    stride: usize,
    dy: &Tensor,
) -> Result<Tensor> {
    let op = "conv2d_backward_weight";
    let g = geometry(gpu, x, w, stride, op)?;
    expect_shape(dy, &g.out_shape(), op, "dy")?;
    let plan = backward_weight_plan(gpu, &g, op)?;
    let dyt = gpu.to_texture(&dy.buf, dy.numel())?;
    backward_weight_run(gpu, &g, x, &dyt, plan)
}

/// A compiled kernel, its uniform words and its grid.
type Plan = (Arc<Kernel>, Vec<u32>, [u32; 3]);

/// dx: per stride phase, lanes over that phase's input pixels, a block of input channels per
/// workgroup along z.
fn backward_input_plan(gpu: &Gpu, g: &Geometry, op: &str) -> Result<Plan> {
    let s = g.stride;
    let (hq, wq) = (g.h.div_ceil(s), g.w.div_ceil(s));
    let (phases_y, phases_x) = (s.min(g.h), s.min(g.w));
    let count = g.n * hq * wq;
    let (rows, cols) = crate::gpu::tuning().conv_dx_tile.unwrap_or((4, 4));
    let rows = tile_rows(count, rows);
    let cols = cols.min(g.cin);
    let blocks = count.div_ceil(64 * rows);
    let flat = u32_of(phases_y * phases_x * blocks, op)?;
    let [gx, gy, _] = groups_for(flat, gpu.max_groups_per_dim());
    let groups = check_grid(gpu, [gx as usize, gy as usize, g.cin.div_ceil(cols)], op)?;
    let extra = Extra {
        count,
        groups_x: gx,
        hq,
        wq,
        blocks,
        phases_x,
        ..Default::default()
    };
    let params = g.params(extra, op)?;
    let kernel = kernel_for(
        gpu,
        &BACKWARD_INPUT,
        Pass::BackwardInput { rows, cols },
        g.cout.is_multiple_of(4),
    )?;
    Ok((kernel, params, groups))
}

/// dw: a workgroup per (block of taps, block of output-channel quads, chunk of pixels), its
/// lanes over the chunk's pixels; `(plan, slices)`.
fn backward_weight_plan(gpu: &Gpu, g: &Geometry, op: &str) -> Result<(Plan, usize)> {
    let taps = g.taps();
    let npix = g.npix();
    let (quads, tile_taps) = crate::gpu::tuning().conv_dw_tile.unwrap_or((8, 6));
    let quads = quads.min(g.cout4() / 4);
    let tile_taps = tile_taps.min(taps);
    let tiles = taps.div_ceil(tile_taps) * (g.cout4() / 4).div_ceil(quads);
    // At least 64 workgroups where the pixels allow (16 per lane at least).
    let chunks = 64usize.div_ceil(tiles).min(npix.div_ceil(64 * 16)).max(1);
    let chunk = npix.div_ceil(chunks);
    let chunks = npix.div_ceil(chunk);
    let slices = chunks * 64;
    let bytes = (slices * g.cout * taps * 4) as u64;
    ensure(bytes <= gpu.max_binding_bytes(), op, || {
        format!(
            "weight [{}, {}, {}, {}]: {} MiB of weight-gradient partials exceed the binding \
             limit; this kernel is meant for few input channels (the stem)",
            g.cout,
            g.cin,
            g.k,
            g.k,
            bytes >> 20
        )
    })?;
    let groups = check_grid(
        gpu,
        [
            taps.div_ceil(tile_taps),
            (g.cout4() / 4).div_ceil(quads),
            chunks,
        ],
        op,
    )?;
    let extra = Extra {
        chunk,
        ..Default::default()
    };
    let params = g.params(extra, op)?;
    let kernel = kernel_for(
        gpu,
        &BACKWARD_WEIGHT,
        Pass::BackwardWeight {
            quads,
            taps: tile_taps,
        },
        g.cout.is_multiple_of(4),
    )?;
    Ok(((kernel, params, groups), slices))
}

fn backward_weight_run(
    gpu: &Gpu,
    g: &Geometry,
    x: &Tensor,
    dyt: &crate::gpu::GpuTexture,
    ((kernel, params, groups), slices): (Plan, usize),
) -> Result<Tensor> {
    let len = g.cout * g.taps();
    let xt = gpu.to_texture(&x.buf, x.numel())?;
    let partial: GpuBuffer = gpu.alloc((slices * len * 4) as u64);
    gpu.dispatch_with(
        &kernel,
        &params,
        &[
            Binding::Texture(&xt),
            Binding::Texture(dyt),
            Binding::Buffer(&partial),
        ],
        groups,
    )?;
    let dw = gpu.empty(&[g.cout, g.cin, g.k, g.k]);
    reduce::sum_slices(gpu, &partial, &dw.buf, len, slices, false)?;
    Ok(dw)
}
