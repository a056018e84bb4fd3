//! Strided matrix product with optional split-K (`shaders/gemm.wgsl`). Pointwise convolution
//! and linear layers express their forward and both backward products through it.

use anyhow::Result;

use super::{ensure, reduce, u32_of};
use crate::gpu::{tuning, Access, Binding, GemmOperands, Gpu, GpuBuffer, GpuTexture, KernelSpec};

const SPEC: KernelSpec = KernelSpec {
    file: "gemm",
    source: include_str!("../../shaders/gemm.wgsl"),
    entry: "gemm",
    bindings: &[Access::Read, Access::Read, Access::ReadWrite],
};

const VEC4_SOURCE: &str = include_str!("../../shaders/gemm_vec4.wgsl");

/// The vec4 kernel with operands bound as `bindings` (A, B, C, then the transform's texture).
const fn vec4_spec(bindings: &'static [Access]) -> KernelSpec {
    KernelSpec {
        file: "gemm_vec4",
        source: VEC4_SOURCE,
        entry: "gemm_vec4",
        bindings,
    }
}

use Access::{Read as R, ReadWrite as W, StorageTexture as S, Texture as T};
const SPEC_VEC4: KernelSpec = vec4_spec(&[R, R, W]);
const SPEC_VEC4_TEXTURES: KernelSpec = vec4_spec(&[T, T, W]);
const SPEC_VEC4_STORAGE_TEXTURES: KernelSpec = vec4_spec(&[S, S, W]);
const SPEC_VEC4_PRE: KernelSpec = vec4_spec(&[R, R, W, T]);
const SPEC_VEC4_TEXTURES_PRE: KernelSpec = vec4_spec(&[T, T, W, T]);
const SPEC_VEC4_STORAGE_TEXTURES_PRE: KernelSpec = vec4_spec(&[S, S, W, T]);

/// The packed per-channel parameters of an input transform, and its loader.
const PRE_BINDING: &str = "@group(0) @binding(4) var pre_t: texture_2d<f32>;
fn ld_pre(t: u32) -> vec4<f32> { return textureLoad(pre_t, vec2<u32>(t & 1023u, t >> 10u), 0); }";

/// Which operand a `GemmPre` transforms.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PreOn {
    /// A: read along k, the channel of A(i, k) is k (a forward product x W^T); read along its
    /// rows, it is i (a transposed weight gradient x^T dy).
    A,
    /// B, read along its columns: the channel of B(k, j) is j (a weight gradient dy^T x).
    B,
}

/// BN with batch statistics, then ReLU6, applied to one operand as the kernel loads it:
/// `v -> clamp((v - mean) * (gamma * rstd) + beta, 0, 6)` per channel, the expression of the
/// BN kernels, so the product sees bit for bit the tensor an unfused BN would have stored.
/// `packed` is a texture copy (`Gpu::to_texture`) of [gamma | beta | mean | rstd], each of
/// `channels` floats (a multiple of 4).
pub struct GemmPre<'a> {
    pub on: PreOn,
    pub packed: &'a GpuTexture,
    pub channels: usize,
}

/// Whether `gemm_with` can apply an input transform on `on` for the product `g`: the vec4
/// kernel with A read along k or along its rows (`PreOn::A`) or B read along its columns
/// (`PreOn::B`).
pub fn takes_pre(g: &Gemm, on: PreOn) -> bool {
    if tuning().gemm_scalar {
        return false;
    }
    matches!(
        (vec4_modes(g), on),
        (Some(_), PreOn::A) | (Some((_, Vec4Along::Out)), PreOn::B)
    )
}

/// The channels a transform on `on` has for the product `g` (see `PreOn`).
fn pre_channels(g: &Gemm, on: PreOn) -> usize {
    match (on, vec4_modes(g)) {
        (PreOn::A, Some((Vec4Along::Out, _))) => g.m,
        (PreOn::A, _) => g.k,
        (PreOn::B, _) => g.n,
    }
}

const OPERANDS_BUFFERS: &str = "@group(0) @binding(1) var<storage, read> a: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> b: array<vec4<f32>>;
fn ld_a(t: u32) -> vec4<f32> { return a[t]; }
fn ld_b(t: u32) -> vec4<f32> { return b[t]; }";

/// The output binding and its writer: `put(index, value)` on array<f32>, or, when C rows are
/// dense and their lengths multiples of 4, `put4(texel index, value)` on array<vec4<f32>>.
/// Overwrite or accumulate is compiled in: a runtime branch around the store would put it
/// under lavapipe's exec mask, whose per-lane masked stores cost (benches/NOTES.md).
fn output_binding(vec4_out: bool, accumulate: bool) -> String {
    let value = if accumulate { "c[idx] + v" } else { "v" };
    // The writer of the other width is a stub: the kernel names both, one in dead code.
    if vec4_out {
        format!(
            "@group(0) @binding(3) var<storage, read_write> c: array<vec4<f32>>;\n\
             fn put4(idx: u32, v: vec4<f32>) {{ c[idx] = {value}; }}\n\
             fn put(idx: u32, v: f32) {{}}"
        )
    } else {
        format!(
            "@group(0) @binding(3) var<storage, read_write> c: array<f32>;\n\
             fn put(idx: u32, v: f32) {{ c[idx] = {value}; }}\n\
             fn put4(idx: u32, v: vec4<f32>) {{}}"
        )
    }
}

const OPERANDS_TEXTURES: &str = "@group(0) @binding(1) var a: texture_2d<f32>;
@group(0) @binding(2) var b: texture_2d<f32>;
fn ld_a(t: u32) -> vec4<f32> { return textureLoad(a, vec2<u32>(t & 1023u, t >> 10u), 0); }
fn ld_b(t: u32) -> vec4<f32> { return textureLoad(b, vec2<u32>(t & 1023u, t >> 10u), 0); }";

const OPERANDS_STORAGE_TEXTURES: &str =
    "@group(0) @binding(1) var a: texture_storage_2d<rgba32float, read>;
@group(0) @binding(2) var b: texture_storage_2d<rgba32float, read>;
fn ld_a(t: u32) -> vec4<f32> { return textureLoad(a, vec2<u32>(t & 1023u, t >> 10u)); }
fn ld_b(t: u32) -> vec4<f32> { return textureLoad(b, vec2<u32>(t & 1023u, t >> 10u)); }";

/// Where the vec4 kernel reads its operands from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Operands {
    Buffers,
    /// Sampled textures (`texture_2d<f32>`).
    Textures,
    /// The same textures bound as read-only storage textures.
    StorageTextures,
}

/// Operands come through textures by default on CPU adapters, where it is much faster
/// (benches/NOTES.md): as read-only storage textures where the adapter allows (cheaper loads
/// still on lavapipe), else sampled. `PROXYLESS_GEMM_OPERANDS=buffers|textures|storage`
/// overrides (storage falls back to sampled textures where unsupported).
fn operands_for(gpu: &Gpu) -> Operands {
    let textures = if gpu.storage_texture_reads() {
        Operands::StorageTextures
    } else {
        Operands::Textures
    };
    match tuning().gemm_operands {
        Some(GemmOperands::Buffers) => Operands::Buffers,
        Some(GemmOperands::Textures) => Operands::Textures,
        Some(GemmOperands::Storage) => textures,
        None if gpu.cpu_like() => textures,
        _ => Operands::Buffers,
    }
}

/// How the vec4 kernel reads an operand: 4 consecutive values along the reduction (k) or
/// along the output dimension (i for A, j for B).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Vec4Along {
    K,
    Out,
}

/// The vec4 modes of A and B if the product's strides allow 16-byte loads.
fn vec4_modes(g: &Gemm) -> Option<(Vec4Along, Vec4Along)> {
    if !g.k.is_multiple_of(4) {
        return None;
    }
    let a = if g.a_sk == 1 && g.a_si.is_multiple_of(4) {
        Vec4Along::K
    } else if g.a_si == 1 && g.a_sk.is_multiple_of(4) && g.m.is_multiple_of(4) {
        Vec4Along::Out
    } else {
        return None;
    };
    let b = if g.b_sk == 1 && g.b_sj.is_multiple_of(4) {
        Vec4Along::K
    } else if g.b_sj == 1 && g.b_sk.is_multiple_of(4) && g.n.is_multiple_of(4) {
        Vec4Along::Out
    } else {
        return None;
    };
    Some((a, b))
}

/// How the vec4 kernel writes C, compiled into its variant.
#[derive(Clone, Copy, Debug)]
struct Output {
    /// 16-byte stores (`put4`).
    vec4: bool,
    /// C += A B instead of C = A B.
    accumulate: bool,
    /// Whether the grid overhangs C along m / along n, so stores need a bounds check.
    guard_m: bool,
    guard_n: bool,
}

/// Vec4 tile (rows, cols), both multiples of 4; `PROXYLESS_GEMM4_TILE=RxC` overrides.
/// Measured on lavapipe (benches/NOTES.md): with storage textures, 8 x ~24 for weight
/// gradients (operands along their outputs, k >= 512); 4x8 when 64 lanes x 8 rows would leave
/// most rows of a short product with a short k idle; 4x16 when both operands are read along
/// k, B is shared and k <= 48; 8x16 for wide products (n >= 128), 8 x ~24 when both operands
/// are read along k and B is shared (`shared_b`); for narrow ones 8x8
/// with sampled textures or buffers; with storage textures, when both operands are read along
/// k, 8 x ~20, or as few groups of at most 32 as n allows with B shared, else 4x8.
fn tile_vec4(
    m: usize,
    n: usize,
    k: usize,
    operands: Operands,
    k_major: bool,
    shared_b: bool,
) -> (u32, u32) {
    if let Some(t) = tuning().gemm4_tile {
        return t;
    }
    // Columns in groups of at most `most`, n split evenly (n = 24: two groups of 12).
    let even_cols = |most: usize| {
        let groups = n.div_ceil(most);
        (n.div_ceil(groups).div_ceil(4) * 4).min(32) as u32
    };
    if operands == Operands::StorageTextures && !k_major && k >= 512 {
        // Weight gradients (both operands along their outputs, k = batch x pixels): k is
        // long enough for the lanes along m to be sized to m and the rest to take slices of
        // k, so a short m no longer idles lanes. Columns in even groups of at most 24: more
        // multiply-adds per load of A than ~16 (-2 to -16% on the step's weight gradients
        // whose tile changed, once textures were views, benches/NOTES.md; n = 40 in 2 x 20).
        (8, even_cols(24))
    } else if m <= 256 {
        (4, 8)
    } else if shared_b && k_major && k <= 48 && n >= 32 && n.is_multiple_of(16) {
        // Short k (the 32x32 expansions and the input gradients of their projections): 4
        // rows x 16 columns, one cache line of C a row, no line shared between workgroups
        // (-12 to -22% against 8 x ~24, benches/NOTES.md).
        (4, 16)
    } else if n >= 128 && shared_b && k_major {
        // Wide products along k with B shared: groups of ~24 (-5 to -9% against 16 on the
        // step's expansions and input gradients, benches/NOTES.md).
        (8, even_cols(24))
    } else if n >= 128 {
        (8, 16)
    } else if operands == Operands::StorageTextures && k_major {
        // About 20 columns, n split evenly (n = 40: two groups of 20). With B shared through
        // the subgroup a column costs little and each column group reloads A: as few groups
        // of at most 32 as n allows (n = 24: one of 24, -22% against two of 12; n = 80: three
        // of 28, -10%; benches/NOTES.md).
        (8, even_cols(if shared_b { 32 } else { 20 }))
    } else if operands == Operands::StorageTextures {
        (4, 8)
    } else {
        (8, 8)
    }
}

/// Lanes of a 64-lane workgroup spread along m; the others take further slices of k. A short
/// product (weight gradients: m = output channels, often 16 to 96) would otherwise leave most
/// of 64 lanes x 4 rows computing clamped copies of the last row. Exactly as many lanes as m
/// needs (not a power of two: m = 40 in 4-row tiles takes 10 lanes and 6 slices of k, so 60 of
/// 64 lanes work where 16 lanes x 4 slices kept 40 of 64), the 64 % lanes left over idle.
fn lanes_along_m(m: usize, rows: u32, k: usize) -> u32 {
    if let Some(l) = tuning().gemm_lanes_m {
        return l;
    }
    let needed = m.div_ceil(rows as usize).max(1);
    // Only worth it where k is long enough to give every slice real work.
    if needed > 32 || k < 128 * (64 / needed) {
        64
    } else {
        needed as u32
    }
}

/// Lanes along m in whole subgroups of `size` (so that B loads can be shared) where that
/// leaves at most 1/8 of the `needed` lane columns idle: m = 240 in 8-row tiles needs 30 and
/// takes 8 (4 workgroups along m, 2 columns idle), which measured -23% on that weight
/// gradient; m = 144 (18, 6 idle) and m = 80 (10, 6 idle) lost as much as sharing saved and
/// keep their exact count (benches/NOTES.md). Among equal idle counts the fewest lanes, which
/// leaves the most k slices.
fn whole_subgroups_along_m(needed: u32, size: u32) -> u32 {
    if needed.is_multiple_of(size) {
        return needed;
    }
    (1..=64 / size)
        .map(|j| j * size)
        .filter(|&l| 64 % l == 0)
        .map(|l| (needed.div_ceil(l) * l - needed, l))
        .min()
        .filter(|&(idle, _)| 8 * idle <= needed)
        .map_or(needed, |(_, l)| l)
}

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
    tuning().gemm_tile.unwrap_or((4, 8))
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
    gemm_sharing_a(gpu, a, None, b, c, g, accumulate)
}

/// Whether `gemm` reads its operands through textures on this adapter; callers that feed one
/// operand to several products make its texture once (`Gpu::to_texture`) and pass it to
/// `gemm_sharing_a`.
pub fn reads_textures(gpu: &Gpu) -> bool {
    operands_for(gpu) != Operands::Buffers
}

/// Whether `gemm` reads read-only storage textures on this adapter: there a product whose
/// operands are both read along k runs fastest (benches/NOTES.md, "GEMM, second pass"), so
/// callers may pass a transposed copy of a small operand to get that layout.
pub fn reads_storage_textures(gpu: &Gpu) -> bool {
    operands_for(gpu) == Operands::StorageTextures
}

/// The vec4 kernel's operand modes for `g` (None: the scalar kernel) and how the product
/// reads its operands.
fn kernel_family(gpu: &Gpu, g: &Gemm) -> (Option<(Vec4Along, Vec4Along)>, Operands) {
    let modes = if tuning().gemm_scalar {
        None
    } else {
        vec4_modes(g)
    };
    let operands = match modes {
        Some(_) => operands_for(gpu),
        None => Operands::Buffers,
    };
    (modes, operands)
}

/// Whether the product `g` reads its operands through textures (made by `gemm_with` unless
/// the caller passes them).
pub fn product_reads_textures(gpu: &Gpu, g: &Gemm) -> bool {
    kernel_family(gpu, g).1 != Operands::Buffers
}

/// `gemm` with an optional texture copy of all of `a` made by the caller (used when the
/// product reads textures; ignored otherwise).
pub fn gemm_sharing_a(
    gpu: &Gpu,
    a: &GpuBuffer,
    a_texture: Option<&GpuTexture>,
    b: &GpuBuffer,
    c: &GpuBuffer,
    g: Gemm,
    accumulate: bool,
) -> Result<()> {
    gemm_with(gpu, (a, a_texture), (b, None), c, g, accumulate, None)
}

/// The general form: each operand with an optional texture copy of all of it made by the
/// caller (used when the product reads textures), and an optional input transform (see
/// `takes_pre`).
pub fn gemm_with(
    gpu: &Gpu,
    (a, a_texture): (&GpuBuffer, Option<&GpuTexture>),
    (b, b_texture): (&GpuBuffer, Option<&GpuTexture>),
    c: &GpuBuffer,
    g: Gemm,
    accumulate: bool,
    pre: Option<&GemmPre>,
) -> Result<()> {
    let op = "gemm";
    if let Some(pr) = pre {
        ensure(takes_pre(&g, pr.on), op, || {
            format!("no input transform on {:?} for {g:?}", pr.on)
        })?;
        let channels = pre_channels(&g, pr.on);
        ensure(pr.channels == channels, op, || {
            format!(
                "the input transform has {} channels, the operand {channels}",
                pr.channels
            )
        })?;
    }
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
    let (modes, operands) = kernel_family(gpu, &g);
    let textures = operands != Operands::Buffers;
    // B loads shared through the subgroup where they are gathers (the vec4 kernel reading
    // textures on a CPU adapter; see gemm_vec4.wgsl): every lane of a k slice reads the same
    // B texels, B's columns being the workgroup's. The tile rules assume it (products with m
    // > 256 get 64 lanes along m, whole subgroups).
    let subgroup = gpu
        .subgroup_size()
        .filter(|&s| textures && modes.is_some() && 64 % s == 0);
    // The tile and the lanes along m of the vec4 kernel (the scalar kernel: its own tile, 64
    // lanes along m).
    let (rows, cols, lanes_m) = match modes {
        Some((am, bm)) => {
            let k_major = (am, bm) == (Vec4Along::K, Vec4Along::K);
            let (rows, cols) = tile_vec4(g.m, g.n, g.k, operands, k_major, subgroup.is_some());
            // Slicing k needs the split path, which writes dense slices.
            let dense_c = g.c_sj == 1 && g.c_si == g.n;
            let lanes_m = if dense_c {
                lanes_along_m(g.m, rows, g.k)
            } else {
                64
            };
            let lanes_m = match subgroup {
                Some(s) if lanes_m < 64 => whole_subgroups_along_m(lanes_m, s),
                _ => lanes_m,
            };
            (rows, cols, lanes_m as usize)
        }
        None => {
            let (rows, cols) = tile();
            (rows, cols, 64)
        }
    };
    // A workgroup is lanes_m lanes along m times lanes_k slices of k.
    let lanes_k = 64 / lanes_m;
    let gx = g.m.div_ceil(lanes_m * rows as usize);
    let gy = g.n.div_ceil(cols as usize);
    // Aim for enough workgroups to fill the device, each slice reducing at least 128 values
    // of k.
    let base = gx * gy;
    let target = gpu.parallel_groups();
    let mut slices = if base >= target {
        1
    } else {
        target.div_ceil(base)
    } * lanes_k;
    slices = slices.min(g.k / 128).max(1);
    let mut k_chunk = g.k.div_ceil(slices);
    if modes.is_some() {
        // The vec4 kernel walks k four at a time, so chunks start on multiples of 4.
        k_chunk = k_chunk.div_ceil(4) * 4;
    }
    // Whole workgroups of slices; slices past the end of k write zeros.
    let splits = g.k.div_ceil(k_chunk).div_ceil(lanes_k);
    let slices = splits * lanes_k;
    let kernel = match modes {
        Some((am, bm)) => {
            let spec = match (operands, pre.is_some()) {
                (Operands::Buffers, false) => &SPEC_VEC4,
                (Operands::Textures, false) => &SPEC_VEC4_TEXTURES,
                (Operands::StorageTextures, false) => &SPEC_VEC4_STORAGE_TEXTURES,
                (Operands::Buffers, true) => &SPEC_VEC4_PRE,
                (Operands::Textures, true) => &SPEC_VEC4_TEXTURES_PRE,
                (Operands::StorageTextures, true) => &SPEC_VEC4_STORAGE_TEXTURES_PRE,
            };
            let pre_on = pre.map(|p| p.on);
            let out = Output {
                // Dense rows of a length divisible by 4 take 16-byte stores (split-K slices
                // are dense by construction).
                vec4: g.n.is_multiple_of(4) && g.c_sj == 1 && g.c_si.is_multiple_of(4),
                // Split-K slices are overwritten, then summed into C.
                accumulate: accumulate && slices == 1,
                guard_m: !g.m.is_multiple_of(lanes_m * rows as usize),
                guard_n: !g.n.is_multiple_of(cols as usize),
            };
            // B loads are shared only where each subgroup lies inside one k slice: whole
            // subgroups along m. (Rounding lanes_m up to whole subgroups everywhere cost more
            // than sharing saved: benches/NOTES.md.)
            let share_b = subgroup.filter(|&s| lanes_m.is_multiple_of(s as usize));
            let variant = format!(
                " {rows}x{cols} {am:?}/{bm:?} {operands:?} lanes_m={lanes_m} pre={pre_on:?} {out:?} share_b={share_b:?}"
            );
            gpu.kernel_variant(spec, &variant, || {
                template_vec4(
                    operands,
                    out,
                    rows,
                    cols,
                    lanes_m as u32,
                    am,
                    bm,
                    pre_on,
                    share_b,
                )
            })?
        }
        None => {
            let variant = format!(" {rows}x{cols}");
            gpu.kernel_variant(&SPEC, &variant, || {
                vec![("ROWS", rows.to_string()), ("COLS", cols.to_string())]
            })?
        }
    };
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
            u32_of(pre.map_or(0, |p| p.channels / 4), op)?,
        ])
    };
    // Texture copies of the operands live until the end of this call; the pool hands them out
    // again only to later commands, so the batch keeps its order.
    let a_len = last(g.m, g.a_si, g.k, g.a_sk);
    let b_len = last(g.k, g.b_sk, g.n, g.b_sj);
    let own_a = match (textures, a_texture) {
        (true, None) => Some(gpu.to_texture(a, a_len)?),
        _ => None,
    };
    let own_b = match (textures, b_texture) {
        (true, None) => Some(gpu.to_texture(b, b_len)?),
        _ => None,
    };
    let (bind_a, bind_b) = match (
        own_a.as_deref().or(a_texture),
        own_b.as_deref().or(b_texture),
    ) {
        (Some(ta), Some(tb)) if textures => (Binding::Texture(ta), Binding::Texture(tb)),
        _ => (Binding::Buffer(a), Binding::Buffer(b)),
    };
    let groups = [gx as u32, gy as u32, splits as u32];
    // Split-K slices are written densely (row-major m x n) and then summed into C.
    ensure(slices == 1 || (g.c_sj == 1 && g.c_si == g.n), op, || {
        format!("split-K needs a dense row-major C, got {g:?}")
    })?;
    let partial = (slices > 1).then(|| gpu.alloc((slices * g.m * g.n * 4) as u64));
    let out = partial.as_ref().unwrap_or(c);
    let bindings = {
        let mut v = vec![bind_a, bind_b, Binding::Buffer(out)];
        if let Some(p) = pre {
            v.push(Binding::Texture(p.packed));
        }
        v
    };
    if slices == 1 {
        return gpu.dispatch_with(
            &kernel,
            &params(g.m, g.n, g.c_si, g.c_sj, accumulate)?,
            &bindings,
            groups,
        );
    }
    gpu.dispatch_with(
        &kernel,
        &params(g.m, g.n, g.n, 1, false)?,
        &bindings,
        groups,
    )?;
    reduce::sum_slices(gpu, out, c, g.m * g.n, slices, accumulate)
}

/// The subgroup helper of shared B loads: whether a condition holds in every lane of the
/// subgroup. (naga 30 takes subgroup builtins under Features::SUBGROUP and rejects the WGSL
/// `enable subgroups;` directive.)
const SUBGROUP_HELPERS: &str = "fn all_lanes(c: bool) -> bool { return subgroupAll(c); }";

/// Its one-lane form, and a stand-in for `subgroupBroadcast` (never called with another
/// lane), for variants without sharing.
const ONE_LANE_HELPERS: &str = "fn all_lanes(c: bool) -> bool { return c; }
fn own_value(v: vec4<f32>, lane: u32) -> vec4<f32> { return v; }";

/// `ld_pre` where there is no transform (the kernel's transform code is then dead).
const NO_PRE: &str = "fn ld_pre(t: u32) -> vec4<f32> { return vec4<f32>(0.0); }";

/// The values of the vec4 kernel's holes for a ROWS x COLS tile.
// One argument per template choice (each part of the variant's cache key).
#[allow(clippy::too_many_arguments)]
fn template_vec4(
    operands: Operands,
    out: Output,
    rows: u32,
    cols: u32,
    lanes_m: u32,
    a_mode: Vec4Along,
    b_mode: Vec4Along,
    pre: Option<PreOn>,
    share_b: Option<u32>,
) -> Vec<(&'static str, String)> {
    let operands = match operands {
        Operands::Buffers => OPERANDS_BUFFERS,
        Operands::Textures => OPERANDS_TEXTURES,
        Operands::StorageTextures => OPERANDS_STORAGE_TEXTURES,
    };
    let (subgroup, subgroup_arg) = match share_b {
        Some(_) => (
            SUBGROUP_HELPERS,
            ", @builtin(subgroup_invocation_id) sg_lane: u32",
        ),
        // A name for sg_lane all the same, which only the sharing code reads.
        None => (
            ONE_LANE_HELPERS,
            ", @builtin(local_invocation_index) sg_lane: u32",
        ),
    };
    let flag = |b: bool| b.to_string();
    vec![
        ("OPERANDS", operands.to_string()),
        ("OUTPUT", output_binding(out.vec4, out.accumulate)),
        (
            "PRE",
            if pre.is_some() { PRE_BINDING } else { NO_PRE }.to_string(),
        ),
        ("SUBGROUP", subgroup.to_string()),
        (
            "LANE_VALUE",
            if share_b.is_some() {
                "subgroupBroadcast"
            } else {
                "own_value"
            }
            .to_string(),
        ),
        ("SUBGROUP_ARG", subgroup_arg.to_string()),
        ("ROWS", rows.to_string()),
        ("COLS", cols.to_string()),
        ("GROUPS", (rows / 4).to_string()),
        ("COL_GROUPS", (cols / 4).to_string()),
        ("LANES", share_b.unwrap_or(1).to_string()),
        (
            "SHARED_LOADS",
            cols.div_ceil(share_b.unwrap_or(1)).to_string(),
        ),
        ("LANES_M", lanes_m.to_string()),
        ("A_ALONG_K", flag(a_mode == Vec4Along::K)),
        ("B_ALONG_K", flag(b_mode == Vec4Along::K)),
        ("PRE_A", flag(pre == Some(PreOn::A))),
        ("PRE_B", flag(pre == Some(PreOn::B))),
        ("VEC4_OUT", flag(out.vec4)),
        ("GUARD_M", flag(out.guard_m)),
        ("GUARD_N", flag(out.guard_n)),
        ("SHARE", share_b.unwrap_or(0).to_string()),
    ]
}

#[cfg(test)]
mod tests {
    use super::whole_subgroups_along_m;

    #[test]
    fn lanes_along_m_in_whole_subgroups_only_where_few_idle() {
        // Already whole subgroups: unchanged.
        assert_eq!(whole_subgroups_along_m(16, 8), 16);
        assert_eq!(whole_subgroups_along_m(24, 8), 24);
        // 30 needed: 8 lanes (4 groups along m, 2 idle), the fewest of the equal choices.
        assert_eq!(whole_subgroups_along_m(30, 8), 8);
        // 18 and 10 needed: 6 idle either way, too many: the exact count stays.
        assert_eq!(whole_subgroups_along_m(18, 8), 18);
        assert_eq!(whole_subgroups_along_m(10, 8), 10);
        // Fewer than a subgroup: unchanged.
        assert_eq!(whole_subgroups_along_m(3, 8), 3);
        // 31 needed, subgroups of 4: 32 lanes, 1 idle.
        assert_eq!(whole_subgroups_along_m(31, 4), 4);
    }
}
