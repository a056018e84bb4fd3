//! Batch normalisation (`shaders/batchnorm.wgsl`) per channel of the last dimension: an NHWC
//! activation `[n, h, w, c]` or a `[n, c]` matrix, viewed as `[m, c]` with `m = numel / c`.
//!
//! Training uses the batch statistics: per slice of rows (a chunk's rows of one phase, see the
//! shader) a mean and a sum of squared deviations from it (Welford), combined per channel with
//! Chan's formula (a numerically safe split: no `E[x^2] - E[x]^2` cancellation), which also
//! updates the running statistics in place with PyTorch's convention. Evaluation uses the
//! running statistics. The backward reduces `dbeta = sum dy` and `dgamma = sum dy * xhat` as
//! per-slice partials summed by `ops::reduce::sum_slices`.
//!
//! Where c is a multiple of 4 on CPU adapters, x and dy are read through textures and every
//! invocation handles four channels (vec4); otherwise storage buffers and one channel.

use anyhow::Result;

use super::{ensure, expect_shape, reduce, u32_of};
use crate::gpu::{
    lane_order, Access, Binding, Gpu, GpuBuffer, GpuTexture, Kernel, KernelSpec, LaneOrder, Tensor,
    TEX_WIDTH,
};

const SOURCE: &str = include_str!("../../shaders/batchnorm.wgsl");

const R: Access = Access::Read;
const W: Access = Access::ReadWrite;
const T: Access = Access::Texture;
const S: Access = Access::StorageTexture;

/// The entry points, with their bindings when x and dy are storage buffers and when they are
/// textures.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Entry {
    StatsPartial,
    StatsFinalize,
    /// bn_stats_finalize of partials with stored counts (`StatsPartials`).
    StatsFinalizeCounted,
    TrainNormalize,
    /// bn_train_normalize plus a residual branch (`batchnorm_act_train_forward_add`).
    TrainNormalizeAdd,
    EvalForward,
    BackwardPartial,
    BackwardDx,
}

impl Entry {
    fn name(self) -> &'static str {
        match self {
            Entry::StatsPartial => "bn_stats_partial",
            Entry::StatsFinalize | Entry::StatsFinalizeCounted => "bn_stats_finalize",
            Entry::TrainNormalize => "bn_train_normalize",
            Entry::TrainNormalizeAdd => "bn_train_normalize_add",
            Entry::EvalForward => "bn_eval_forward",
            Entry::BackwardPartial => "bn_backward_partial",
            Entry::BackwardDx => "bn_backward_dx",
        }
    }

    fn bindings(self, operands: Operands) -> &'static [Access] {
        use Operands::{Buffers as B, StorageTextures as ST, Textures as TX};
        match (self, operands) {
            (Entry::StatsPartial, B) => &[R, W],
            (Entry::StatsPartial, TX) => &[T, W],
            (Entry::StatsPartial, ST) => &[S, W],
            (Entry::StatsFinalize | Entry::StatsFinalizeCounted, _) => &[R, W, W, W, W],
            (Entry::TrainNormalize | Entry::EvalForward, B) => &[R, R, R, R, R, W],
            (Entry::TrainNormalize | Entry::EvalForward, TX) => &[T, R, R, R, R, W],
            (Entry::TrainNormalize | Entry::EvalForward, ST) => &[S, R, R, R, R, W],
            (Entry::TrainNormalizeAdd, B) => &[R, R, R, R, R, W, R],
            (Entry::TrainNormalizeAdd, TX) => &[T, R, R, R, R, W, T],
            (Entry::TrainNormalizeAdd, ST) => &[S, R, R, R, R, W, S],
            (Entry::BackwardPartial, B) => &[R, R, R, R, W, R, R],
            (Entry::BackwardPartial, TX) => &[T, T, R, R, W, R, R],
            (Entry::BackwardPartial, ST) => &[S, S, R, R, W, R, R],
            (Entry::BackwardDx, B) => &[R, R, R, R, R, R, R, W, R],
            (Entry::BackwardDx, TX) => &[T, T, R, R, R, R, R, W, R],
            (Entry::BackwardDx, ST) => &[S, S, R, R, R, R, R, W, R],
        }
    }
}

/// The activation fused after the normalisation (and into its backward).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BnAct {
    Identity,
    /// min(max(y, 0), 6): the BN + ReLU6 pair of every conv layer but the MBConv projection.
    Relu6,
}

impl BnAct {
    fn template(self) -> [(&'static str, String); 2] {
        match self {
            BnAct::Identity => [
                ("ACT", "return v;".into()),
                ("ACT_GRAD", "return dy;".into()),
            ],
            BnAct::Relu6 => [
                ("ACT", "return clamp(v, V(0.0), V(6.0));".into()),
                (
                    "ACT_GRAD",
                    "return select(V(0.0), dy, (pre > V(0.0)) & (pre < V(6.0)));".into(),
                ),
            ],
        }
    }
}

/// How x and dy are bound: storage buffers, sampled textures, or read-only storage textures
/// (where `Gpu::storage_texture_reads`: on lavapipe a cheaper fetch than a sampled one).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Operands {
    Buffers,
    Textures,
    StorageTextures,
}

/// Whether x and dy are read through textures (four channels per texel): where c is a multiple
/// of 4, by default on CPU adapters, on which a texture load is much cheaper than a storage
/// load (benches/NOTES.md); `PROXYLESS_BN_OPERANDS=buffers|textures` overrides.
fn textures_for(gpu: &Gpu, c: usize, numel: usize) -> bool {
    let max_floats = TEX_WIDTH as usize * gpu.limits.max_texture_dimension_2d as usize * 4;
    let wanted = match crate::gpu::tuning().bn_operands {
        Some(crate::gpu::BnOperands::Buffers) => false,
        Some(crate::gpu::BnOperands::Textures) => true,
        None => gpu.cpu_like(),
    };
    wanted && c.is_multiple_of(4) && numel <= max_floats
}

/// The `[m, c]` view of `x`, its channel groups and how its rows are split.
#[derive(Clone, Copy, Debug)]
struct Layout {
    m: usize,
    c: usize,
    /// x and dy through textures, four channels per group; else buffers, one channel.
    textures: bool,
    /// Channel groups per row.
    cg: usize,
    /// Channel groups per workgroup (`min(cg, 64)`, or `min(cg, 8)` with lanes spread over
    /// rows), and row phases sharing a workgroup.
    span: usize,
    phases: usize,
    chunk: usize,
    chunks: usize,
    order: LaneOrder,
}

impl Layout {
    /// Partial results per channel: one per (chunk, phase).
    fn slices(&self) -> usize {
        self.chunks * self.phases
    }

    /// Uniform words of `Params` in `shaders/batchnorm.wgsl`.
    fn params(&self, momentum: f32, eps: f32, op: &str) -> Result<Vec<u32>> {
        let unbias = if self.m > 1 {
            (self.m as f64 / (self.m as f64 - 1.0)) as f32
        } else {
            1.0
        };
        Ok(vec![
            u32_of(self.c, op)?,
            u32_of(self.cg, op)?,
            u32_of(self.m, op)?,
            u32_of(self.chunk, op)?,
            u32_of(self.chunks, op)?,
            u32_of(self.span, op)?,
            u32_of(self.phases, op)?,
            momentum.to_bits(),
            eps.to_bits(),
            unbias.to_bits(),
        ])
    }

    /// The grid of the per-row kernels: blocks of `span` channel groups by row chunks.
    fn row_grid(&self) -> [u32; 3] {
        [self.cg.div_ceil(self.span) as u32, self.chunks as u32, 1]
    }

    /// How this layout's x and dy are bound on `gpu`.
    fn operands(&self, gpu: &Gpu) -> Operands {
        match (self.textures, gpu.storage_texture_reads()) {
            (false, _) => Operands::Buffers,
            (true, false) => Operands::Textures,
            (true, true) => Operands::StorageTextures,
        }
    }

    /// The compiled kernel of `entry` for this layout's operands.
    fn kernel(&self, gpu: &Gpu, entry: Entry, act: BnAct) -> Result<std::sync::Arc<Kernel>> {
        let spec = KernelSpec {
            file: "batchnorm",
            source: SOURCE,
            entry: entry.name(),
            bindings: entry.bindings(self.operands(gpu)),
        };
        let values: Vec<(&str, String)> = if self.textures {
            let storage = self.operands(gpu) == Operands::StorageTextures;
            let load = |t: &str| {
                if storage {
                    format!("return textureLoad({t}_stex, vec2<u32>(e % TW, e / TW));")
                } else {
                    format!("return textureLoad({t}_tex, vec2<u32>(e % TW, e / TW), 0);")
                }
            };
            vec![
                ("V", "vec4<f32>".into()),
                ("LD_X", load("x")),
                ("LD_DY", load("dy")),
                ("LD_SKIP", load("skip")),
                ("TW", TEX_WIDTH.to_string()),
            ]
        } else {
            vec![
                ("V", "f32".into()),
                ("LD_X", "return x_buf[e];".into()),
                ("LD_DY", "return dy_buf[e];".into()),
                ("LD_SKIP", "return skip_buf[e];".into()),
                ("TW", TEX_WIDTH.to_string()),
            ]
        };
        let mut values = values;
        values.extend(act.template());
        let count = if entry == Entry::StatsFinalizeCounted {
            "return part_in[(2u * slices + i) * p.c + ch];"
        } else {
            "return f32(slice_rows(i));"
        };
        values.push(("SLICE_COUNT", count.into()));
        let split = match self.order {
            LaneOrder::Coalesced => {
                "    let g = wid.x * p.span + lid.x % p.span;\n    let phase = lid.x / p.span;"
            }
            LaneOrder::Spread => {
                // Lanes past span * phases (64 % span of them) take no group.
                "    let gi = lid.x / p.phases;\n    let g = select(wid.x * p.span + gi, p.cg, gi >= p.span);\n    let phase = lid.x % p.phases;"
            }
        };
        values.push(("LANE_SPLIT", split.into()));
        gpu.kernel(&spec, &values)
    }
}

/// Checks `x` (rank >= 2, no zero dimension, channels last) and splits its rows.
fn layout(gpu: &Gpu, x: &Tensor, op: &str) -> Result<Layout> {
    ensure(x.shape.len() >= 2, op, || {
        format!(
            "input must have at least 2 dims ([n, c] or [n, h, w, c]), got shape {:?}",
            x.shape
        )
    })?;
    ensure(x.shape.iter().all(|&d| d > 0), op, || {
        format!("input has a zero-sized dimension: {:?}", x.shape)
    })?;
    let c = x.shape[x.shape.len() - 1];
    let m = x.numel() / c;
    u32_of(x.numel(), op)?;
    let textures = textures_for(gpu, c, x.numel());
    let cg = if textures { c / 4 } else { c };
    let order = lane_order(gpu);
    // Rows first: 8 channel groups by 8 row phases, so each 8-lane batch has one channel
    // group's 8 rows.
    let span = match order {
        LaneOrder::Coalesced => cg.min(64),
        LaneOrder::Spread => cg.min(8),
    };
    let phases = 64 / span;
    // Each lane walks at least 16 rows where m allows. Row chunks only for parallelism: a
    // few workgroups per slot of the device (every chunk adds a partial to combine), and at
    // most 256 slices per channel.
    let blocks = cg.div_ceil(span);
    let want = (4 * gpu.parallel_groups()).div_ceil(blocks);
    let chunks = (m / (16 * phases)).clamp(1, want.min(256 / phases).max(1));
    let chunk = m.div_ceil(chunks);
    let chunks = m.div_ceil(chunk);
    let max = gpu.max_groups_per_dim() as usize;
    ensure(cg.div_ceil(span) <= max && chunks <= max, op, || {
        format!(
            "input {:?}: {} channel blocks over the device limit of {max} workgroups",
            x.shape,
            cg.div_ceil(span)
        )
    })?;
    Ok(Layout {
        m,
        c,
        textures,
        cg,
        span,
        phases,
        chunk,
        chunks,
        order,
    })
}

/// Checks that each of `(tensor, name)` has shape `[c]`.
fn expect_channels(ts: &[(&Tensor, &str)], c: usize, op: &str) -> Result<()> {
    for (t, name) in ts {
        expect_shape(t, &[c], op, name)?;
    }
    Ok(())
}

/// The running statistics `[c]` each, distinct, and the update's momentum and eps.
fn check_running(
    (running_mean, running_var): (&Tensor, &Tensor),
    c: usize,
    momentum: f32,
    eps: f32,
    op: &str,
) -> Result<()> {
    expect_channels(
        &[(running_mean, "running_mean"), (running_var, "running_var")],
        c,
        op,
    )?;
    ensure(
        !std::ptr::eq(&running_mean.buf, &running_var.buf),
        op,
        || "running_mean and running_var must be different tensors".into(),
    )?;
    expect_eps(eps, op)?;
    ensure((0.0..=1.0).contains(&momentum), op, || {
        format!("momentum must be in [0, 1], got {momentum}")
    })
}

fn expect_eps(eps: f32, op: &str) -> Result<()> {
    ensure(eps.is_finite() && eps > 0.0, op, || {
        format!("eps must be positive and finite, got {eps}")
    })
}

/// Training-mode forward with batch statistics. Returns `(y, mean, rstd)` with `mean` and
/// `rstd = 1 / sqrt(biased var + eps)` of shape `[c]` (kept for the backward), and updates
/// `running_mean` and `running_var` in place: `r = (1 - momentum) r + momentum stat`, the
/// variance unbiased (`* m / (m - 1)`, biased when `m == 1`).
// The argument list mirrors the reference op and the kernels' bindings.
#[allow(clippy::too_many_arguments)]
pub fn batchnorm_train_forward(
    gpu: &Gpu,
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    running_mean: &Tensor,
    running_var: &Tensor,
    momentum: f32,
    eps: f32,
) -> Result<(Tensor, Tensor, Tensor)> {
    let rs = (running_mean, running_var);
    batchnorm_act_train_forward(gpu, x, gamma, beta, rs, momentum, eps, BnAct::Identity)
}

/// The training forward with the activation `act` fused after the normalisation.
#[allow(clippy::too_many_arguments)]
pub fn batchnorm_act_train_forward(
    gpu: &Gpu,
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    running: (&Tensor, &Tensor),
    momentum: f32,
    eps: f32,
    act: BnAct,
) -> Result<(Tensor, Tensor, Tensor)> {
    let op = match act {
        BnAct::Identity => "batchnorm_train_forward",
        BnAct::Relu6 => "batchnorm_relu6_train_forward",
    };
    train_forward(gpu, x, (gamma, beta), running, momentum, eps, act, None, op)
}

/// `batchnorm_act_train_forward` with a residual branch added to its output in the same pass:
/// y = act(bn(x)) + skip (skip of x's shape). Returns `(y, mean, rstd)`; the backward is
/// `batchnorm_act_train_backward` for the BN, and dy itself for skip.
#[allow(clippy::too_many_arguments)]
pub fn batchnorm_act_train_forward_add(
    gpu: &Gpu,
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    running: (&Tensor, &Tensor),
    momentum: f32,
    eps: f32,
    act: BnAct,
    skip: &Tensor,
) -> Result<(Tensor, Tensor, Tensor)> {
    let op = "batchnorm_train_forward_add";
    let params = (gamma, beta);
    train_forward(gpu, x, params, running, momentum, eps, act, Some(skip), op)
}

/// The training forward: statistics, then the normalisation (plus `skip` where given).
#[allow(clippy::too_many_arguments)]
fn train_forward(
    gpu: &Gpu,
    x: &Tensor,
    (gamma, beta): (&Tensor, &Tensor),
    running: (&Tensor, &Tensor),
    momentum: f32,
    eps: f32,
    act: BnAct,
    skip: Option<&Tensor>,
    op: &str,
) -> Result<(Tensor, Tensor, Tensor)> {
    let l = layout(gpu, x, op)?;
    expect_channels(&[(gamma, "gamma"), (beta, "beta")], l.c, op)?;
    if let Some(s) = skip {
        expect_shape(s, &x.shape, op, "skip")?;
    }
    let entry = match skip {
        Some(_) => Entry::TrainNormalizeAdd,
        None => Entry::TrainNormalize,
    };
    let k_normalize = l.kernel(gpu, entry, act)?;
    // The texture copies (if any) live until the kernels reading them are batched.
    let texture = |t: &Tensor| gpu.to_texture(&t.buf, t.numel());
    let tex = l.textures.then(|| texture(x)).transpose()?;
    let skip_tex = match skip {
        Some(s) if l.textures => Some(texture(s)?),
        _ => None,
    };
    let (mean, rstd) = stats(gpu, &l, x, tex.as_deref(), running, momentum, eps, op)?;
    let params = l.params(momentum, eps, op)?;
    let y = gpu.empty(&x.shape);
    let per_channel = [&gamma.buf, &beta.buf, &mean.buf, &rstd.buf, &y.buf];
    let mut b = vec![tex
        .as_deref()
        .map_or(Binding::Buffer(&x.buf), Binding::Texture)];
    b.extend(per_channel.map(Binding::Buffer));
    if let Some(s) = skip {
        b.push(
            skip_tex
                .as_deref()
                .map_or(Binding::Buffer(&s.buf), Binding::Texture),
        );
    }
    gpu.dispatch_with(&k_normalize, &params, &b, l.row_grid())?;
    // x (a conv's output) is read again only by the backward, through this same copy.
    if let Some(t) = &tex {
        gpu.keep_only_texture(&x.buf, x.numel(), t);
    }
    Ok((y, mean, rstd))
}

/// Whether the BN kernels read `x` through a texture (`Gpu::to_texture` of x): a caller that
/// needs the same copy can make it once and pass it to the `_with` functions.
pub fn reads_textures(gpu: &Gpu, x: &Tensor) -> bool {
    let c = x.shape.last().copied().unwrap_or(0);
    c > 0 && textures_for(gpu, c, x.numel())
}

/// The statistics half of the training forward: returns `(mean, rstd)` of the batch and
/// updates the running statistics, without normalising. For an op that applies the
/// normalisation as it loads its input (`depthwise::BnRelu6Input`). `x_tex`: a texture copy of
/// x, used when the BN kernels read textures (see `reads_textures`); made here otherwise.
pub fn batchnorm_train_stats(
    gpu: &Gpu,
    x: &Tensor,
    x_tex: Option<&GpuTexture>,
    running: (&Tensor, &Tensor),
    momentum: f32,
    eps: f32,
) -> Result<(Tensor, Tensor)> {
    let op = "batchnorm_train_stats";
    let l = layout(gpu, x, op)?;
    let own = match (l.textures, x_tex) {
        (true, None) => Some(gpu.to_texture(&x.buf, x.numel())?),
        _ => None,
    };
    let tex = if l.textures {
        own.as_deref().or(x_tex)
    } else {
        None
    };
    stats(gpu, &l, x, tex, running, momentum, eps, op)
}

/// Batch mean and rstd of x (read from `tex` when given), running statistics updated.
#[allow(clippy::too_many_arguments)]
fn stats(
    gpu: &Gpu,
    l: &Layout,
    x: &Tensor,
    tex: Option<&GpuTexture>,
    (running_mean, running_var): (&Tensor, &Tensor),
    momentum: f32,
    eps: f32,
    op: &str,
) -> Result<(Tensor, Tensor)> {
    check_running((running_mean, running_var), l.c, momentum, eps, op)?;
    let params = l.params(momentum, eps, op)?;
    let k_partial = l.kernel(gpu, Entry::StatsPartial, BnAct::Identity)?;
    let k_finalize = l.kernel(gpu, Entry::StatsFinalize, BnAct::Identity)?;
    let xb = match tex {
        Some(t) => Binding::Texture(t),
        None => Binding::Buffer(&x.buf),
    };
    let part = gpu.alloc((2 * l.slices() * l.c * 4) as u64);
    gpu.dispatch_with(
        &k_partial,
        &params,
        &[xb, Binding::Buffer(&part)],
        l.row_grid(),
    )?;
    let mean = gpu.empty(&[l.c]);
    let rstd = gpu.empty(&[l.c]);
    gpu.dispatch(
        &k_finalize,
        &params,
        &[
            &part,
            &running_mean.buf,
            &running_var.buf,
            &mean.buf,
            &rstd.buf,
        ],
        [l.c.div_ceil(64) as u32, 1, 1],
    )?;
    Ok((mean, rstd))
}

/// Batch statistics of a tensor `[.., c]` in partial form, written by the kernel that produced
/// it (`depthwise::depthwise_forward_stats`): per slice s of its elements and channel ch,
/// `part[s * c + ch]` the slice's mean, `part[(slices + s) * c + ch]` its sum of squared
/// deviations from that mean, `part[(2 slices + s) * c + ch]` its count (as f32, > 0).
pub struct StatsPartials {
    pub part: GpuBuffer,
    pub slices: usize,
    pub c: usize,
    /// Rows of the tensor (numel / c): the counts' sum.
    pub m: usize,
}

/// `batchnorm_train_stats` of the tensor that `partials` describe: `(mean, rstd)` with the
/// running statistics updated, combining the partials alone (Chan's formula, as
/// `bn_stats_finalize` always does), with no pass over the tensor.
pub fn batchnorm_train_stats_from(
    gpu: &Gpu,
    partials: &StatsPartials,
    (running_mean, running_var): (&Tensor, &Tensor),
    momentum: f32,
    eps: f32,
) -> Result<(Tensor, Tensor)> {
    let op = "batchnorm_train_stats_from";
    let c = partials.c;
    check_running((running_mean, running_var), c, momentum, eps, op)?;
    ensure(partials.slices > 0 && partials.m > 0 && c > 0, op, || {
        "empty statistics partials".into()
    })?;
    ensure(
        (3 * partials.slices * c) as u64 * 4 <= partials.part.bytes(),
        op,
        || {
            format!(
                "partials of {} bytes hold fewer than 3 x {} slices x {c} channels",
                partials.part.bytes(),
                partials.slices
            )
        },
    )?;
    // The finalize kernel's view: slices = chunks * phases, one phase; it reads nothing else of
    // the row split.
    let l = Layout {
        m: partials.m,
        c,
        textures: false,
        cg: c,
        span: 1,
        phases: 1,
        chunk: 1,
        chunks: partials.slices,
        order: lane_order(gpu),
    };
    let params = l.params(momentum, eps, op)?;
    let k_finalize = l.kernel(gpu, Entry::StatsFinalizeCounted, BnAct::Identity)?;
    let mean = gpu.empty(&[c]);
    let rstd = gpu.empty(&[c]);
    gpu.dispatch(
        &k_finalize,
        &params,
        &[
            &partials.part,
            &running_mean.buf,
            &running_var.buf,
            &mean.buf,
            &rstd.buf,
        ],
        [c.div_ceil(64) as u32, 1, 1],
    )?;
    Ok((mean, rstd))
}

/// Evaluation-mode forward: `y = gamma * (x - running_mean) / sqrt(running_var + eps) + beta`.
pub fn batchnorm_eval_forward(
    gpu: &Gpu,
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    running_mean: &Tensor,
    running_var: &Tensor,
    eps: f32,
) -> Result<Tensor> {
    let rs = (running_mean, running_var);
    batchnorm_act_eval_forward(gpu, x, gamma, beta, rs, eps, BnAct::Identity)
}

/// The evaluation forward with the activation `act` fused after the normalisation.
pub fn batchnorm_act_eval_forward(
    gpu: &Gpu,
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    (running_mean, running_var): (&Tensor, &Tensor),
    eps: f32,
    act: BnAct,
) -> Result<Tensor> {
    let op = match act {
        BnAct::Identity => "batchnorm_eval_forward",
        BnAct::Relu6 => "batchnorm_relu6_eval_forward",
    };
    let l = layout(gpu, x, op)?;
    expect_channels(
        &[
            (gamma, "gamma"),
            (beta, "beta"),
            (running_mean, "running_mean"),
            (running_var, "running_var"),
        ],
        l.c,
        op,
    )?;
    expect_eps(eps, op)?;
    let params = l.params(0.0, eps, op)?;
    let kernel = l.kernel(gpu, Entry::EvalForward, act)?;
    let tex = l
        .textures
        .then(|| gpu.to_texture(&x.buf, x.numel()))
        .transpose()?;
    let xb = match &tex {
        Some(t) => Binding::Texture(t),
        None => Binding::Buffer(&x.buf),
    };
    let y = gpu.empty(&x.shape);
    let per_channel = [
        &gamma.buf,
        &beta.buf,
        &running_mean.buf,
        &running_var.buf,
        &y.buf,
    ];
    let mut b = vec![xb];
    b.extend(per_channel.map(Binding::Buffer));
    gpu.dispatch_with(&kernel, &params, &b, l.row_grid())?;
    Ok(y)
}

/// Training-mode backward from the forward's `mean` and `rstd`: returns `(dx, dgamma, dbeta)`
/// with `dbeta = sum dy`, `dgamma = sum dy * xhat` (over the rows, per channel) and
/// `dx = gamma * rstd * (dy - dbeta / m - xhat * dgamma / m)`.
pub fn batchnorm_train_backward(
    gpu: &Gpu,
    x: &Tensor,
    gamma: &Tensor,
    mean: &Tensor,
    rstd: &Tensor,
    dy: &Tensor,
) -> Result<(Tensor, Tensor, Tensor)> {
    // beta only shapes the fused activation's mask: gamma stands in, unread.
    batchnorm_act_train_backward(gpu, x, gamma, gamma, (mean, rstd), dy, BnAct::Identity)
}

/// The training backward of [`batchnorm_act_train_forward`] (beta is read only for the
/// activation's mask).
pub fn batchnorm_act_train_backward(
    gpu: &Gpu,
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    stats: (&Tensor, &Tensor),
    dy: &Tensor,
    act: BnAct,
) -> Result<(Tensor, Tensor, Tensor)> {
    batchnorm_act_train_backward_with(gpu, x, None, gamma, beta, stats, dy, act)
}

/// `batchnorm_act_train_backward` reading x through the caller's texture copy `x_tex` when
/// the kernels read textures (see `reads_textures`).
#[allow(clippy::too_many_arguments)]
pub fn batchnorm_act_train_backward_with(
    gpu: &Gpu,
    x: &Tensor,
    x_tex: Option<&GpuTexture>,
    gamma: &Tensor,
    beta: &Tensor,
    (mean, rstd): (&Tensor, &Tensor),
    dy: &Tensor,
    act: BnAct,
) -> Result<(Tensor, Tensor, Tensor)> {
    let op = match act {
        BnAct::Identity => "batchnorm_train_backward",
        BnAct::Relu6 => "batchnorm_relu6_train_backward",
    };
    let l = layout(gpu, x, op)?;
    expect_channels(
        &[
            (gamma, "gamma"),
            (beta, "beta"),
            (mean, "mean"),
            (rstd, "rstd"),
        ],
        l.c,
        op,
    )?;
    expect_shape(dy, &x.shape, op, "dy")?;
    let params = l.params(0.0, 0.0, op)?;
    let k_partial = l.kernel(gpu, Entry::BackwardPartial, act)?;
    let k_dx = l.kernel(gpu, Entry::BackwardDx, act)?;

    let own_x = match (l.textures, x_tex) {
        (true, None) => Some(gpu.to_texture(&x.buf, x.numel())?),
        _ => None,
    };
    let tdy = l
        .textures
        .then(|| gpu.to_texture(&dy.buf, dy.numel()))
        .transpose()?;
    let (xb, dyb) = match (own_x.as_deref().or(x_tex), &tdy) {
        (Some(tx), Some(tdy)) => (Binding::Texture(tx), Binding::Texture(tdy)),
        _ => (Binding::Buffer(&x.buf), Binding::Buffer(&dy.buf)),
    };
    let dgamma = gpu.empty(&[l.c]);
    let dbeta = gpu.empty(&[l.c]);
    // Both partials in one buffer, [2, slices, c], summed by one dispatch.
    let part = gpu.alloc((2 * l.slices() * l.c * 4) as u64);
    let per_channel = [&mean.buf, &rstd.buf, &part, &gamma.buf, &beta.buf];
    let mut b = vec![xb, dyb];
    b.extend(per_channel.map(Binding::Buffer));
    gpu.dispatch_with(&k_partial, &params, &b, l.row_grid())?;
    reduce::sum_slices_pair(gpu, &part, (&dbeta.buf, &dgamma.buf), l.c, l.slices())?;
    let dx = gpu.empty(&x.shape);
    let per_channel = [
        &gamma.buf,
        &mean.buf,
        &rstd.buf,
        &dgamma.buf,
        &dbeta.buf,
        &dx.buf,
        &beta.buf,
    ];
    let mut b = vec![xb, dyb];
    b.extend(per_channel.map(Binding::Buffer));
    gpu.dispatch_with(&k_dx, &params, &b, l.row_grid())?;
    Ok((dx, dgamma, dbeta))
}
