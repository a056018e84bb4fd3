//! Depthwise k x k convolution on NHWC tensors (`shaders/depthwise.wgsl`): k in {3, 5, 7},
//! stride 1 or 2, padding k / 2, weights `[c, k, k]`.
//!
//! Each kernel is compiled for its kernel size, stride, strip width and operand kind, given to
//! the WGSL as constants (`template`); the kernel's loops over them are unrolled when it is
//! loaded, so every tap of a strip of columns is straight-line code.
//! When the channel count is a multiple of 4 (every layer of the network) the operands are
//! read through rgba32float texture copies, one texel (four channels) per invocation, because
//! on lavapipe a texel fetch is a SIMD gather while a storage-buffer load is a loop over the
//! lanes; other channel counts, and tensors over the texture size limit, read storage buffers
//! one channel per invocation. The weight gradient is a split reduction: one partial per
//! (image chunk, row chunk, column strip), summed by `reduce::sum_slices`.

use std::sync::Arc;

use anyhow::{Context, Result};

use super::batchnorm::StatsPartials;
use super::{ensure, expect_rank, expect_shape, reduce, u32_of};
use crate::gpu::{
    groups_for, lane_order, Access, Binding, Gpu, GpuTexture, Kernel, KernelSpec, LaneOrder,
    Tensor, TEX_WIDTH,
};

const SOURCE: &str = include_str!("../../shaders/depthwise.wgsl");
/// The bindings after the uniform block: the two operands (x or dy, and w or dy: storage
/// buffers, sampled textures or read-only storage textures) and the output.
const fn operands(a: Access) -> [Access; 3] {
    [a, a, Access::ReadWrite]
}

/// With the input transform (`pre`): gamma, beta, mean and rstd follow the operands.
const fn with_pre(o: [Access; 3]) -> [Access; 7] {
    let r = Access::Read;
    [o[0], o[1], o[2], r, r, r, r]
}

/// With the output statistics: their partials come last.
const fn with_stats<const N: usize, const M: usize>(b: [Access; N]) -> [Access; M] {
    let mut out = [Access::ReadWrite; M];
    let mut i = 0;
    while i < N {
        out[i] = b[i];
        i += 1;
    }
    out
}

const BUF: Access = Access::Read;
const TEX: Access = Access::Texture;
const STEX: Access = Access::StorageTexture;

/// Bindings by operand kind (buffers, textures, storage textures), then by
/// `pre as usize + 2 * stats as usize`.
const BINDINGS: [[&[Access]; 4]; 3] = [
    [
        &operands(BUF),
        &with_pre(operands(BUF)),
        &with_stats::<3, 4>(operands(BUF)),
        &with_stats::<7, 8>(with_pre(operands(BUF))),
    ],
    [
        &operands(TEX),
        &with_pre(operands(TEX)),
        &with_stats::<3, 4>(operands(TEX)),
        &with_stats::<7, 8>(with_pre(operands(TEX))),
    ],
    [
        &operands(STEX),
        &with_pre(operands(STEX)),
        &with_stats::<3, 4>(operands(STEX)),
        &with_stats::<7, 8>(with_pre(operands(STEX))),
    ],
];

/// Batch norm with batch statistics, then ReLU6, applied to the depthwise input as the kernels
/// load it: `x -> clamp((x - mean) * (gamma * rstd) + beta, 0, 6)`, the expression of the BN
/// kernels, so the fused forward sees bit for bit the values an unfused BN would have stored
/// and the BN backward's recomputed mask agrees with it. The normalised tensor is never
/// written: the depthwise conv reads the BN input instead.
#[derive(Clone, Copy)]
pub struct BnRelu6Input<'a> {
    pub gamma: &'a Tensor,
    pub beta: &'a Tensor,
    pub mean: &'a Tensor,
    pub rstd: &'a Tensor,
}

/// Invocations to aim for before rows are split into chunks (both cores busy even at batch 1).
const TARGET_INVOCATIONS: usize = 4096;
/// Invocations of the weight-gradient kernel: each adds a slice of partial sums to reduce.
const DW_INVOCATIONS: usize = 2048;

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

/// One compiled variant of a kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Variant {
    entry: Entry,
    k: usize,
    stride: usize,
    /// Operands read through textures, four channels per invocation (else storage buffers,
    /// one channel per invocation).
    tex: bool,
    /// The textures are bound as read-only storage textures (`Gpu::storage_texture_reads`):
    /// on lavapipe their loads skip the mip-level arithmetic of sampled fetches.
    storage: bool,
    /// Strip width in columns.
    strip: usize,
    /// x passes through BN (batch statistics) and ReLU6 as it is loaded (`BnRelu6Input`);
    /// forward and weight gradient only.
    pre: bool,
    /// The forward also writes per-slice batch statistics of its output
    /// (`batchnorm::StatsPartials`); forward only.
    stats: bool,
    order: LaneOrder,
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

/// The compiled kernel of a variant, named by it ("depthwise::dw_forward k5 s1 stex t4") in
/// the cache key and in errors; its holes are filled only on the variant's first use.
fn kernel(gpu: &Gpu, v: Variant) -> Result<Arc<Kernel>> {
    let (kind, k) = match (v.tex, v.storage) {
        (false, _) => ("buf", 0),
        (true, false) => ("tex", 1),
        (true, true) => ("stex", 2),
    };
    let bindings = BINDINGS[k][v.pre as usize + 2 * v.stats as usize];
    let spec = KernelSpec {
        file: "depthwise",
        source: SOURCE,
        entry: v.entry.name(),
        bindings,
    };
    let pre = match (v.pre, v.stats) {
        (false, false) => "",
        (true, false) => " bn_relu6_input",
        (false, true) => " stats",
        (true, true) => " bn_relu6_input stats",
    };
    let order = match v.order {
        LaneOrder::Coalesced => "",
        LaneOrder::Spread => " lanes=spread",
    };
    let variant = format!(" k{} s{} {kind} t{}{pre}{order}", v.k, v.stride, v.strip);
    gpu.kernel_variant(&spec, &variant, || template(v))
}

/// Launch geometry of one kernel: images in chunks of `ipc`, `steps` row steps per image in
/// chunks of `rows`, `strips` column strips, `cq` channel groups per pixel.
struct Grid {
    cq: usize,
    ipc: usize,
    strips: usize,
    chunks: usize,
    rows: usize,
    steps: usize,
}

impl Grid {
    /// One image per invocation; rows are split only when the images alone would leave the
    /// device idle.
    fn new(d: &Dims, tex: bool, cols: usize, strip: usize, steps: usize) -> Grid {
        let cq = if tex { d.c / 4 } else { d.c };
        let strips = cols.div_ceil(strip);
        let cells = d.n * strips * cq;
        let want = TARGET_INVOCATIONS.div_ceil(cells).clamp(1, steps);
        let rows = steps.div_ceil(want);
        Grid {
            cq,
            ipc: 1,
            strips,
            chunks: steps.div_ceil(rows),
            rows,
            steps,
        }
    }

    /// For partial sums: as few slices as keep `target` invocations busy, several images per
    /// invocation when the batch allows.
    fn reduction(
        d: &Dims,
        tex: bool,
        cols: usize,
        strip: usize,
        steps: usize,
        target: usize,
    ) -> Grid {
        let mut g = Grid::new(d, tex, cols, strip, steps);
        let per_image = g.strips * g.cq;
        if g.chunks == 1 {
            let images = target.div_ceil(per_image).clamp(1, d.n);
            g.ipc = d.n.div_ceil(images);
        }
        g
    }

    fn slices(&self, d: &Dims) -> usize {
        d.n.div_ceil(self.ipc) * self.chunks * self.strips
    }

    fn dispatch(
        &self,
        gpu: &Gpu,
        kernel: &Kernel,
        d: &Dims,
        bindings: &[Binding],
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
            u32_of(self.ipc, op)?,
            u32_of(self.strips, op)?,
            u32_of(self.chunks, op)?,
            u32_of(self.rows, op)?,
            u32_of(self.steps, op)?,
        ];
        gpu.dispatch_with(kernel, &params, bindings, groups)
    }
}

/// Columns per invocation: output columns for the forward and weight-gradient kernels, input
/// columns (a multiple of the stride) for the input gradient. Wider strips load fewer halo
/// columns but unroll more code: on lavapipe 4 runs as fast as 8 (measured on dw5)
/// and compiles in half the time; k = 7 and the storage-buffer fallback use 2 to keep LLVM's
/// compile time near a second; the stride-2 input gradient of k = 3 is cheap enough for 8.
fn strip_for(entry: Entry, k: usize, stride: usize, tex: bool) -> usize {
    if !tex || k == 7 {
        2
    } else if entry == Entry::BackwardInput && stride == 2 && k == 3 {
        8
    } else {
        4
    }
}

/// Errors (naming the op) unless a storage binding of `floats` elements fits the adapter.
fn check_binding(gpu: &Gpu, floats: usize, op: &str, name: &str) -> Result<()> {
    let bytes = floats as u64 * 4;
    let max = gpu.max_binding_bytes();
    ensure(bytes <= max, op, || {
        format!(
            "{name} of {} MiB exceeds this adapter's storage-binding limit of {} MiB; use a \
             smaller batch",
            bytes >> 20,
            max >> 20
        )
    })
}

/// Whether the operands of `d` can be read through textures: whole texels per pixel (c a
/// multiple of 4) and every operand within the texture size limit.
fn use_textures(gpu: &Gpu, d: &Dims) -> bool {
    let max_floats = TEX_WIDTH as usize * gpu.limits.max_texture_dimension_2d as usize * 4;
    let largest = (d.n * d.h * d.w * d.c).max(d.n * d.ho * d.wo * d.c);
    d.c.is_multiple_of(4) && largest <= max_floats
}

/// Whether the depthwise kernels for input `x` and weights `w` read x through a texture
/// (`Gpu::to_texture` of x), so a caller that also needs one can make it once and pass it to
/// the `_with` launchers.
pub fn reads_input_texture(gpu: &Gpu, x: &Tensor, w: &Tensor, stride: usize) -> Result<bool> {
    let d = dims(x, w, stride, "depthwise")?;
    Ok(use_textures(gpu, &d))
}

/// Binding of x: the caller's texture copy, a new one, or the buffer.
enum Input<'a> {
    Shared(&'a GpuTexture),
    Own(std::sync::Arc<GpuTexture>),
    Buffer(&'a Tensor),
}

impl<'a> Input<'a> {
    /// In the forward (`for_backward`) a new copy stays with x for the weight gradient.
    fn new(
        gpu: &Gpu,
        x: &'a Tensor,
        tex: bool,
        shared: Option<&'a GpuTexture>,
        for_backward: bool,
    ) -> Result<Self> {
        Ok(match (tex, shared) {
            (true, Some(t)) => Input::Shared(t),
            (true, None) if for_backward => {
                Input::Own(gpu.to_texture_for_backward(&x.buf, x.numel())?)
            }
            (true, None) => Input::Own(gpu.to_texture(&x.buf, x.numel())?),
            (false, _) => Input::Buffer(x),
        })
    }

    fn binding(&self) -> Binding<'_> {
        match self {
            Input::Shared(t) => Binding::Texture(t),
            Input::Own(t) => Binding::Texture(t),
            Input::Buffer(x) => Binding::Buffer(&x.buf),
        }
    }
}

/// Checks the transform's per-channel tensors and appends them to the bindings.
fn pre_bindings<'a>(
    pre: Option<BnRelu6Input<'a>>,
    c: usize,
    op: &str,
    b: &mut Vec<Binding<'a>>,
) -> Result<()> {
    if let Some(p) = pre {
        for (t, name) in [
            (p.gamma, "gamma"),
            (p.beta, "beta"),
            (p.mean, "mean"),
            (p.rstd, "rstd"),
        ] {
            expect_shape(t, &[c], op, name)?;
            b.push(Binding::Buffer(&t.buf));
        }
    }
    Ok(())
}

/// y[n, oy, ox, c] = sum over ky, kx of x[n, oy*s + ky - k/2, ox*s + kx - k/2, c] * w[c, ky, kx]
/// for x `[n, h, w, c]`, w `[c, k, k]` (k in 3, 5, 7), stride 1 or 2; y is `[n, ho, wo, c]`.
pub fn depthwise_forward(gpu: &Gpu, x: &Tensor, w: &Tensor, stride: usize) -> Result<Tensor> {
    depthwise_forward_with(gpu, x, None, w, stride, None)
}

/// `depthwise_forward` of `pre(x)` when `pre` is given, reading x through `x_tex` when the
/// kernels read textures (see `reads_input_texture`) and the caller has made it.
pub fn depthwise_forward_with(
    gpu: &Gpu,
    x: &Tensor,
    x_tex: Option<&GpuTexture>,
    w: &Tensor,
    stride: usize,
    pre: Option<BnRelu6Input>,
) -> Result<Tensor> {
    Ok(forward(gpu, x, x_tex, w, stride, pre, false)?.0)
}

/// `depthwise_forward_with` that also returns the batch statistics of its output in partial
/// form, for the BN that follows it (`batchnorm::batchnorm_train_stats_from`): the kernel folds
/// each output into its invocation's mean and squared deviations as it writes it, so that BN
/// need not read the output again for them.
pub fn depthwise_forward_stats(
    gpu: &Gpu,
    x: &Tensor,
    x_tex: Option<&GpuTexture>,
    w: &Tensor,
    stride: usize,
    pre: Option<BnRelu6Input>,
) -> Result<(Tensor, StatsPartials)> {
    let (y, stats) = forward(gpu, x, x_tex, w, stride, pre, true)?;
    Ok((y, stats.expect("statistics were asked for")))
}

/// The forward kernel, with the output statistics where `stats`.
fn forward(
    gpu: &Gpu,
    x: &Tensor,
    x_tex: Option<&GpuTexture>,
    w: &Tensor,
    stride: usize,
    pre: Option<BnRelu6Input>,
    stats: bool,
) -> Result<(Tensor, Option<StatsPartials>)> {
    let op = "depthwise_forward";
    let d = dims(x, w, stride, op)?;
    let tex = use_textures(gpu, &d);
    let v = Variant {
        entry: Entry::Forward,
        k: d.k,
        stride: d.stride,
        tex,
        storage: tex && gpu.storage_texture_reads(),
        strip: strip_for(Entry::Forward, d.k, d.stride, tex),
        pre: pre.is_some(),
        stats,
        order: lane_order(gpu),
    };
    check_binding(gpu, d.n * d.ho * d.wo * d.c, op, "output")?;
    if !tex {
        check_binding(gpu, x.numel(), op, "input")?;
    }
    let grid = Grid::new(&d, tex, d.wo, v.strip, d.ho);
    let kernel = kernel(gpu, v)?;
    let y = gpu.empty(&[d.n, d.ho, d.wo, d.c]);
    let xin = Input::new(gpu, x, tex, x_tex, true)?;
    let wt = tex.then(|| gpu.to_texture(&w.buf, w.numel())).transpose()?;
    let mut b = vec![
        xin.binding(),
        wt.as_deref()
            .map_or(Binding::Buffer(&w.buf), Binding::Texture),
        Binding::Buffer(&y.buf),
    ];
    pre_bindings(pre, d.c, op, &mut b)?;
    let partials = stats.then(|| StatsPartials {
        part: gpu.alloc((3 * grid.slices(&d) * d.c * 4) as u64),
        slices: grid.slices(&d),
        c: d.c,
        m: d.n * d.ho * d.wo,
    });
    if let Some(sp) = &partials {
        check_binding(gpu, 3 * sp.slices * d.c, op, "output statistics")?;
        b.push(Binding::Buffer(&sp.part));
    }
    grid.dispatch(gpu, &kernel, &d, &b, op)?;
    Ok((y, partials))
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
    let (dx, dw) = depthwise_backward_with(gpu, x, None, w, stride, dy, None, true)?;
    Ok((dx, dw.context("depthwise_backward: no weight gradient")?))
}

/// The backward of `depthwise_forward_with`: dx is the gradient with respect to the conv's
/// input, `pre(x)` when `pre` is given (the caller differentiates the transform). The weight
/// gradient only with `weight_grad` (frozen weights need none: architecture steps).
#[allow(clippy::too_many_arguments)]
pub fn depthwise_backward_with(
    gpu: &Gpu,
    x: &Tensor,
    x_tex: Option<&GpuTexture>,
    w: &Tensor,
    stride: usize,
    dy: &Tensor,
    pre: Option<BnRelu6Input>,
    weight_grad: bool,
) -> Result<(Tensor, Option<Tensor>)> {
    let op = "depthwise_backward";
    let d = dims(x, w, stride, op)?;
    expect_shape(dy, &[d.n, d.ho, d.wo, d.c], op, "dy")?;
    let tex = use_textures(gpu, &d);

    let vi = Variant {
        entry: Entry::BackwardInput,
        k: d.k,
        stride: d.stride,
        tex,
        storage: tex && gpu.storage_texture_reads(),
        strip: strip_for(Entry::BackwardInput, d.k, d.stride, tex),
        pre: false,
        stats: false,
        order: lane_order(gpu),
    };
    let gi = Grid::new(&d, tex, d.w, vi.strip, d.h.div_ceil(d.stride));
    let vw = Variant {
        entry: Entry::BackwardWeight,
        k: d.k,
        stride: d.stride,
        tex,
        storage: tex && gpu.storage_texture_reads(),
        strip: strip_for(Entry::BackwardWeight, d.k, d.stride, tex),
        pre: pre.is_some(),
        stats: false,
        order: lane_order(gpu),
    };
    let gw = Grid::reduction(&d, tex, d.wo, vw.strip, d.ho, DW_INVOCATIONS);
    let slices = gw.slices(&d);
    let taps = d.c * d.k * d.k;
    u32_of(slices * taps, op)?;
    check_binding(gpu, x.numel(), op, "dx")?;
    check_binding(gpu, slices * taps, op, "weight-gradient partials")?;
    if !tex {
        check_binding(gpu, dy.numel(), op, "dy")?;
    }
    let ki = kernel(gpu, vi)?;
    let kw = kernel(gpu, vw)?;

    let dx = gpu.empty(&x.shape);
    let dw = gpu.empty(&w.shape);
    let partial = gpu.alloc((slices * taps * 4) as u64);
    let dyt = tex
        .then(|| gpu.to_texture(&dy.buf, dy.numel()))
        .transpose()?;
    let wt = tex.then(|| gpu.to_texture(&w.buf, w.numel())).transpose()?;
    let dyb = dyt
        .as_deref()
        .map_or(Binding::Buffer(&dy.buf), Binding::Texture);
    let b = [
        dyb,
        wt.as_deref()
            .map_or(Binding::Buffer(&w.buf), Binding::Texture),
        Binding::Buffer(&dx.buf),
    ];
    gi.dispatch(gpu, &ki, &d, &b, op)?;
    if !weight_grad {
        return Ok((dx, None));
    }
    let xin = Input::new(gpu, x, tex, x_tex, false)?;
    let mut b = vec![xin.binding(), dyb, Binding::Buffer(&partial)];
    pre_bindings(pre, d.c, op, &mut b)?;
    gw.dispatch(gpu, &kw, &d, &b, op)?;
    reduce::sum_slices(gpu, &partial, &dw.buf, taps, slices, false)?;
    Ok((dx, Some(dw)))
}

/// Accessors with storage buffers (one channel per invocation).
const BUFFER_ACCESS: &str = "fn lda(i: u32) -> V { return a[i]; }
fn ldb(i: u32) -> V { return b[i]; }
fn weights(q: u32) -> array<V, KK> {
    var w: array<V, KK>;
    for (var t = 0u; t < KK; t++) {
        w[t] = ldb(q * KK + t);
    }
    return w;
}
fn put_taps(base: u32, q: u32, g: array<V, KK>) {
    for (var t = 0u; t < KK; t++) {
        out[base + q * KK + t] = g[t];
    }
}";

/// Accessors with textures (four channels, one texel, per invocation). The weights of the
/// group's four channels are the KK texels from q * KK: channel j's tap t is float j * KK + t
/// of that block, so KK texel loads fetch them all.
const TEXTURE_ACCESS: &str =
    "fn lda(i: u32) -> V { return textureLoad(a, vec2<u32>(i % TW, i / TW)LEVEL); }
fn ldb(i: u32) -> V { return textureLoad(b, vec2<u32>(i % TW, i / TW)LEVEL); }
fn weights(q: u32) -> array<V, KK> {
    var block: array<vec4<f32>, KK>;
    for (var i = 0u; i < KK; i++) {
        block[i] = ldb(q * KK + i);
    }
    var w: array<V, KK>;
    for (var t = 0u; t < KK; t++) {
        for (var j = 0u; j < 4u; j++) {
            let f = j * KK + t;
            w[t][j] = block[f / 4u][f % 4u];
        }
    }
    return w;
}
fn put_taps(base: u32, q: u32, g: array<V, KK>) {
    for (var i = 0u; i < KK; i++) {
        var v: vec4<f32>;
        for (var c = 0u; c < 4u; c++) {
            let f = 4u * i + c;
            v[c] = g[f % KK][f / KK];
        }
        out[base + q * KK + i] = v;
    }
}";

/// For stride `s` and padding k / 2: the offsets (r + pad - tap) / s over the phases r < s and
/// the taps where s divides r + pad - tap (input coordinate s*m + r reaches output coordinate
/// m + offset through the tap).
fn phase_offsets(k: usize, s: usize) -> impl Iterator<Item = i32> {
    let pad = (k / 2) as i32;
    (0..s).flat_map(move |r| {
        (0..k).filter_map(move |tap| {
            let num = r as i32 + pad - tap as i32;
            (num.rem_euclid(s as i32) == 0).then_some(num.div_euclid(s as i32))
        })
    })
}

/// The values of the depthwise kernels' holes for variant `v`.
fn template(v: Variant) -> Vec<(&'static str, String)> {
    let (k, s, t) = (v.k, v.stride, v.strip);
    let dmin = phase_offsets(k, s).min().unwrap_or(0);
    let dmax = phase_offsets(k, s).max().unwrap_or(0);
    let dx_rows = (dmax - dmin + 1) as usize;
    // The compiled entry point's strip; the others get the least that compiles.
    let strip = |e: Entry, least: usize| if v.entry == e { t } else { least };
    let (fwd_t, dx_t, dw_t) = (
        strip(Entry::Forward, 1),
        strip(Entry::BackwardInput, s),
        strip(Entry::BackwardWeight, 1),
    );
    let width = match v.entry {
        Entry::Forward | Entry::BackwardWeight => (t - 1) * s + k,
        Entry::BackwardInput => t / s - 1 + dx_rows,
    };
    let v4 = if v.tex { "vec4<f32>" } else { "f32" };
    let mut bindings = if v.tex {
        let ty = if v.storage {
            "texture_storage_2d<rgba32float, read>"
        } else {
            "texture_2d<f32>"
        };
        format!("@group(0) @binding(1) var a: {ty};\n@group(0) @binding(2) var b: {ty};\n")
    } else {
        "@group(0) @binding(1) var<storage, read> a: array<f32>;\n\
         @group(0) @binding(2) var<storage, read> b: array<f32>;\n"
            .to_string()
    };
    bindings += &format!("@group(0) @binding(3) var<storage, read_write> out: array<{v4}>;");
    let mut access = if v.tex {
        let level = if v.storage { "" } else { ", 0" };
        TEXTURE_ACCESS.replace("LEVEL", level)
    } else {
        BUFFER_ACCESS.to_string()
    };
    // After the three operands: the transform's four tensors, then the statistics.
    if v.pre {
        for (i, name) in ["pre_gamma", "pre_beta", "pre_mean", "pre_rstd"]
            .iter()
            .enumerate()
        {
            bindings += &format!(
                "\n@group(0) @binding({}) var<storage, read> {name}: array<V>;",
                i + 4
            );
        }
        access += "\nfn pre_factors(q: u32) -> Bn {
    return Bn(pre_mean[q], pre_gamma[q] * pre_rstd[q], pre_beta[q]);
}";
    } else {
        access += "\nfn pre_factors(q: u32) -> Bn { return Bn(V(0.0), V(1.0), V(0.0)); }";
    }
    if v.stats {
        let at = if v.pre { 8 } else { 4 };
        bindings +=
            &format!("\n@group(0) @binding({at}) var<storage, read_write> stats: array<V>;");
        access += "\nfn put_stats(i: u32, v: V) { stats[i] = v; }";
    } else {
        access += "\nfn put_stats(i: u32, v: V) {}";
    }
    vec![
        ("V", v4.to_string()),
        ("K", k.to_string()),
        ("S", s.to_string()),
        ("PAD", (k / 2).to_string()),
        ("TW", TEX_WIDTH.to_string()),
        ("FWD_T", fwd_t.to_string()),
        ("DX_T", dx_t.to_string()),
        ("DW_T", dw_t.to_string()),
        ("DX_ROWS", dx_rows.to_string()),
        ("DMIN", dmin.to_string()),
        ("WIDTH", width.to_string()),
        ("WIN", width.max(k).to_string()),
        ("STATS", v.stats.to_string()),
        ("PRE", v.pre.to_string()),
        ("COALESCED", (v.order == LaneOrder::Coalesced).to_string()),
        ("BINDINGS", bindings),
        ("ACCESS", access),
    ]
}
