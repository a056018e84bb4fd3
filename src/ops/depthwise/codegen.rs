//! The holes of the depthwise kernels (`shaders/depthwise.wgsl`) for one variant: its
//! constants (kernel size, stride, strip, window), its bindings and their accessors. The
//! kernels themselves are plain WGSL with loops of constant trip count, unrolled when loaded.

use super::{Entry, Variant};
use crate::gpu::{LaneOrder, TEX_WIDTH};

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
}
const TW: u32 = TEX_WIDTHu;  // texels per texture row";

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
pub(super) fn template(v: Variant) -> Vec<(&'static str, String)> {
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
        TEXTURE_ACCESS
            .replace("LEVEL", level)
            .replace("TEX_WIDTH", &TEX_WIDTH.to_string())
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
