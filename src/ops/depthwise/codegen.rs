//! The WGSL of the depthwise kernels, generated per variant: each entry point's per-row body
//! (every tap of a strip of columns) unrolled for its kernel size, stride, strip width and
//! operand kind, as the text of the placeholders in `shaders/depthwise.wgsl`.

use std::fmt::Write;

use super::{Entry, Variant};
use crate::gpu::{LaneOrder, TEX_WIDTH};

/// The generated source text of the placeholders of one variant (the other entry points get
/// inert fillers, so each variant compiles only its own body).
pub(super) fn template(v: Variant) -> Vec<(&'static str, String)> {
    let (k, s, t) = (v.k, v.stride, v.strip);
    let mut vals: Vec<(&'static str, String)> = vec![
        ("K", k.to_string()),
        ("S", s.to_string()),
        ("PAD", (k / 2).to_string()),
        ("TW", TEX_WIDTH.to_string()),
        ("LANE_ORDER", lane_order_split(v.order).into()),
    ];
    let out_ty = if v.tex { "vec4<f32>" } else { "f32" };
    if v.tex {
        vals.push(("V", "vec4<f32>".into()));
        let (ty, level) = if v.storage {
            ("texture_storage_2d<rgba32float, read>", "")
        } else {
            ("texture_2d<f32>", ", 0")
        };
        vals.push((
            "BINDINGS",
            format!(
                "@group(0) @binding(1) var a: {ty};\n\
                 @group(0) @binding(2) var b: {ty};\n\
                 @group(0) @binding(3) var<storage, read_write> out: array<vec4<f32>>;"
            ),
        ));
        vals.push((
            "LOAD_A",
            format!("return textureLoad(a, vec2<u32>(i % TW, i / TW){level});"),
        ));
        vals.push((
            "LOAD_B",
            format!("return textureLoad(b, vec2<u32>(i % TW, i / TW){level});"),
        ));
    } else {
        vals.push(("V", "f32".into()));
        vals.push((
            "BINDINGS",
            format!(
                "@group(0) @binding(1) var<storage, read> a: array<f32>;\n\
                 @group(0) @binding(2) var<storage, read> b: array<f32>;\n\
                 @group(0) @binding(3) var<storage, read_write> out: array<{out_ty}>;"
            ),
        ));
        vals.push(("LOAD_A", "return a[i];".into()));
        vals.push(("LOAD_B", "return b[i];".into()));
    }
    // After the three operands: the transform's four tensors, then the statistics.
    let bindings = &mut vals
        .iter_mut()
        .find(|(name, _)| *name == "BINDINGS")
        .expect("bindings pushed above")
        .1;
    if v.pre {
        for (i, name) in ["pre_gamma", "pre_beta", "pre_mean", "pre_rstd"]
            .iter()
            .enumerate()
        {
            let _ = write!(
                bindings,
                "\n@group(0) @binding({}) var<storage, read> {name}: array<V>;",
                i + 4
            );
        }
    }
    if v.stats {
        let at = if v.pre { 8 } else { 4 };
        let _ = write!(
            bindings,
            "\n@group(0) @binding({at}) var<storage, read_write> stats: array<V>;"
        );
    }
    let (mut fwd, mut dx, mut dw) = (Body::default(), Body::default(), Body::default());
    match v.entry {
        Entry::Forward => fwd = gen_forward(k, s, t, v.tex, v.pre, v.stats),
        Entry::BackwardInput => dx = gen_backward_input(k, s, t, v.tex),
        Entry::BackwardWeight => dw = gen_backward_weight(k, s, t, v.tex, v.pre),
    }
    vals.push(("DX_DMIN", dx.dmin.to_string()));
    vals.push(("DW_STORE", dw.store.clone()));
    vals.push(("FWD_STORE", fwd.store.clone()));
    for (names, body) in [
        (["FWD_T", "FWD_DECL", "FWD_PRELOAD", "FWD_STEP"], fwd),
        (["DX_T", "DX_DECL", "DX_PRELOAD", "DX_STEP"], dx),
        (["DW_T", "DW_DECL", "DW_PRELOAD", "DW_STEP"], dw),
    ] {
        vals.push((names[0], body.t.to_string()));
        vals.push((names[1], body.decl));
        vals.push((names[2], body.preload));
        vals.push((names[3], body.step));
    }
    vals
}

/// The split of the flat index g into (t, strip, q) and the slice, for `order`.
fn lane_order_split(order: LaneOrder) -> &'static str {
    match order {
        LaneOrder::Coalesced => {
            "    let q = g % p.cq;\n    let slice = g / p.cq;\n    let strip = slice % p.strips;\n    let t = slice / p.strips;"
        }
        LaneOrder::Spread => {
            "    let strip = g % p.strips;\n    let rest = g / p.strips;\n    let q = rest % p.cq;\n    let t = rest / p.cq;\n    let slice = t * p.strips + strip;"
        }
    }
}

/// Generated pieces of one entry point: declarations before the image loop, the window
/// preload at the top of each image, the body of one row step, the final stores.
struct Body {
    t: usize,
    dmin: i32,
    decl: String,
    preload: String,
    step: String,
    store: String,
}

impl Default for Body {
    fn default() -> Self {
        Body {
            t: 1,
            dmin: 0,
            decl: String::new(),
            preload: String::new(),
            step: String::new(),
            store: String::new(),
        }
    }
}

const Z: &str = "V(0.0)";
/// Indentation of the preload (inside the image loop) and of a row step (inside both loops).
const IN1: &str = "        ";
const IN2: &str = "            ";

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

/// Loads the weights of channel group q as `w{ky}_{kx}`. With textures the four channels'
/// K*K weights are the K*K consecutive texels from q*K*K (channel j's tap t is float
/// j*K*K + t of that block), so K*K texel loads fetch them all.
fn gen_weights(out: &mut String, k: usize, tex: bool) {
    let kk = k * k;
    if tex {
        for i in 0..kk {
            let _ = writeln!(out, "    let wb{i} = ldb(q * KK + {i}u);");
        }
    }
    for ky in 0..k {
        for kx in 0..k {
            let t = ky * k + kx;
            if tex {
                let comps: Vec<String> = (0..4)
                    .map(|j| {
                        let f = j * kk + t;
                        format!("wb{}[{}]", f / 4, f % 4)
                    })
                    .collect();
                let _ = writeln!(out, "    let w{ky}_{kx} = V({});", comps.join(", "));
            } else {
                let _ = writeln!(out, "    let w{ky}_{kx} = ldb(q * KK + {t}u);");
            }
        }
    }
}

/// Declares the window `r{row}_{col}`.
fn gen_window(out: &mut String, rows: usize, width: usize) {
    for j in 0..rows {
        for c in 0..width {
            let _ = writeln!(out, "    var r{j}_{c} = {Z};");
        }
    }
}

/// The per-channel factors of the input transform, loaded once per invocation (channel
/// group q).
fn gen_pre_decl(out: &mut String) {
    let _ = writeln!(out, "    let pre_mu = pre_mean[q];");
    let _ = writeln!(out, "    let pre_sc = pre_gamma[q] * pre_rstd[q];");
    let _ = writeln!(out, "    let pre_sh = pre_beta[q];");
}

/// Loads window row `j` from source row `{base} + j` (i32), zero outside the image (the
/// padding is zero after the input transform, so the transform goes inside the select).
fn gen_row_load(out: &mut String, indent: &str, base: &str, j: usize, width: usize, pre: bool) {
    let _ = writeln!(out, "{indent}{{");
    let _ = writeln!(out, "{indent}    let yy = {base} + {j};");
    let _ = writeln!(out, "{indent}    let ok = yy >= 0 && yy < hi;");
    let _ = writeln!(
        out,
        "{indent}    let rb = (img + u32(clamp(yy, 0, hi - 1))) * row_stride;"
    );
    for c in 0..width {
        let load = if pre {
            format!("clamp(fma(lda(rb + ci{c}) - pre_mu, pre_sc, pre_sh), {Z}, V(6.0))")
        } else {
            format!("lda(rb + ci{c})")
        };
        let _ = writeln!(
            out,
            "{indent}    r{j}_{c} = select({Z}, {load}, ok && ck{c});"
        );
    }
    let _ = writeln!(out, "{indent}}}");
}

/// Independent partial sums per output: one chain of K*K dependent additions cannot overlap
/// with anything (each output's store loop ends the basic block); 4 chains measured ~5% faster
/// on dw5.
const CHAINS: usize = 4;

/// Emits `let acc = sum of a * b over terms`, accumulated in `CHAINS` independent chains.
fn gen_sum(out: &mut String, indent: &str, terms: &[(String, String)]) {
    let chains = CHAINS.clamp(1, terms.len().max(1));
    if terms.is_empty() {
        let _ = writeln!(out, "{indent}let acc = {Z};");
        return;
    }
    for (i, (a, b)) in terms.iter().enumerate() {
        let ch = i % chains;
        if i < chains {
            let _ = writeln!(out, "{indent}var a{ch} = {a} * {b};");
        } else {
            let _ = writeln!(out, "{indent}a{ch} = fma({a}, {b}, a{ch});");
        }
    }
    let mut parts: Vec<String> = (0..chains).map(|c| format!("a{c}")).collect();
    while parts.len() > 1 {
        parts = parts
            .chunks(2)
            .map(|p| {
                if p.len() == 2 {
                    format!("({} + {})", p[0], p[1])
                } else {
                    p[0].clone()
                }
            })
            .collect();
    }
    let _ = writeln!(out, "{indent}let acc = {};", parts[0]);
}

/// Moves the window up by `by` rows.
fn gen_shift(out: &mut String, rows: usize, by: usize, width: usize) {
    for j in 0..rows.saturating_sub(by) {
        for c in 0..width {
            let _ = writeln!(out, "{IN2}r{j}_{c} = r{}_{c};", j + by);
        }
    }
}

fn gen_forward(k: usize, s: usize, t: usize, tex: bool, pre: bool, stats: bool) -> Body {
    let width = (t - 1) * s + k;
    let mut b = Body {
        t,
        ..Default::default()
    };
    gen_columns(&mut b.decl, "ix0", "p.w", width);
    gen_weights(&mut b.decl, k, tex);
    gen_window(&mut b.decl, k, width);
    if pre {
        gen_pre_decl(&mut b.decl);
    }
    for j in 0..k - s {
        gen_row_load(&mut b.preload, IN1, "iy", j, width, pre);
    }
    for j in k - s..k {
        gen_row_load(&mut b.step, IN2, "iy", j, width, pre);
    }
    for c in 0..t {
        let _ = writeln!(b.step, "{IN2}{{");
        let mut terms = Vec::new();
        for ky in 0..k {
            for kx in 0..k {
                terms.push((format!("r{ky}_{}", c * s + kx), format!("w{ky}_{kx}")));
            }
        }
        gen_sum(&mut b.step, &format!("{IN2}    "), &terms);
        let _ = writeln!(
            b.step,
            "{IN2}    if (ox0 + {c}u < p.wo) {{ out[ybase + {c}u * p.cq] = acc; }}"
        );
        if stats {
            let _ = writeln!(
                b.step,
                "{IN2}    st{c} = select({Z}, acc, ox0 + {c}u < p.wo);"
            );
        }
        let _ = writeln!(b.step, "{IN2}}}");
    }
    if stats {
        gen_output_stats(&mut b, t);
    }
    gen_shift(&mut b.step, k, s, width);
    b
}

/// The forward's output statistics (variant `stats`): each invocation keeps the mean and the
/// sum of squared deviations of the outputs it writes, folding in one row of its strip at a
/// time with Chan's formula (the row's own mean and deviations first, so nothing cancels),
/// and stores them with their count as its slice's partials, the layout `bn_stats_partial`
/// writes plus a count row: stats[slice], stats[slices + slice], stats[2 slices + slice].
fn gen_output_stats(b: &mut Body, t: usize) {
    for c in 0..t {
        let _ = writeln!(b.decl, "    var st{c} = {Z};");
    }
    let _ = writeln!(b.decl, "    let st_cols = min({t}u, p.wo - ox0);");
    let _ = writeln!(b.decl, "    let st_w = f32(st_cols);");
    let _ = writeln!(b.decl, "    var st_n = 0.0;");
    let _ = writeln!(b.decl, "    var st_mean = {Z};");
    let _ = writeln!(b.decl, "    var st_m2 = {Z};");
    let sum: Vec<String> = (0..t).map(|c| format!("st{c}")).collect();
    let _ = writeln!(b.step, "{IN2}{{");
    let _ = writeln!(b.step, "{IN2}    let rm = ({}) / st_w;", sum.join(" + "));
    let _ = writeln!(b.step, "{IN2}    var rq = {Z};");
    for c in 0..t {
        let _ = writeln!(
            b.step,
            "{IN2}    let e{c} = select({Z}, st{c} - rm, ox0 + {c}u < p.wo);"
        );
        let _ = writeln!(b.step, "{IN2}    rq = fma(e{c}, e{c}, rq);");
    }
    let _ = writeln!(b.step, "{IN2}    let nn = st_n + st_w;");
    let _ = writeln!(b.step, "{IN2}    let f = st_w / nn;");
    let _ = writeln!(b.step, "{IN2}    let delta = rm - st_mean;");
    let _ = writeln!(b.step, "{IN2}    st_mean = fma(delta, V(f), st_mean);");
    let _ = writeln!(
        b.step,
        "{IN2}    st_m2 = st_m2 + rq + delta * delta * V(st_n * f);"
    );
    let _ = writeln!(b.step, "{IN2}    st_n = nn;");
    let _ = writeln!(b.step, "{IN2}}}");
    let _ = writeln!(
        b.store,
        "    let st_slices = ((p.n + p.ipc - 1u) / p.ipc) * p.chunks * p.strips;"
    );
    let _ = writeln!(b.store, "    stats[cl.slice * p.cq + q] = st_mean;");
    let _ = writeln!(
        b.store,
        "    stats[(st_slices + cl.slice) * p.cq + q] = st_m2;"
    );
    let _ = writeln!(
        b.store,
        "    stats[(2u * st_slices + cl.slice) * p.cq + q] = V(st_n);"
    );
}

/// For stride `s` and padding k / 2: the taps (tap, offset) that reach phase `r` (an input
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

fn gen_backward_input(k: usize, s: usize, t: usize, tex: bool) -> Body {
    let offsets: Vec<i32> = (0..s)
        .flat_map(|r| phase_taps(k, s, r).into_iter().map(|(_, d)| d))
        .collect();
    let dmin = offsets.iter().copied().min().unwrap_or(0);
    let dmax = offsets.iter().copied().max().unwrap_or(0);
    let rows = (dmax - dmin + 1) as usize;
    let width = t / s - 1 + rows;
    let mut b = Body {
        t,
        dmin,
        ..Default::default()
    };
    gen_columns(&mut b.decl, "ox0", "p.wo", width);
    gen_weights(&mut b.decl, k, tex);
    gen_window(&mut b.decl, rows, width);
    for j in 0..rows - 1 {
        gen_row_load(&mut b.preload, IN1, "oy", j, width, false);
    }
    gen_row_load(&mut b.step, IN2, "oy", rows - 1, width, false);
    for r in 0..s {
        let _ = writeln!(b.step, "{IN2}{{");
        let _ = writeln!(b.step, "{IN2}    let iy = m * S + {r}u;");
        let _ = writeln!(
            b.step,
            "{IN2}    let xbase = ((n * p.h + iy) * p.w + ix0) * p.cq + q;"
        );
        let row_taps = phase_taps(k, s, r);
        for j in 0..t {
            let (u, rr) = (j / s, j % s);
            let _ = writeln!(b.step, "{IN2}    {{");
            let mut terms = Vec::new();
            for &(ky, d) in &row_taps {
                for (kx, e) in phase_taps(k, s, rr) {
                    terms.push((
                        format!("r{}_{}", d - dmin, u as i32 + e - dmin),
                        format!("w{ky}_{kx}"),
                    ));
                }
            }
            gen_sum(&mut b.step, &format!("{IN2}        "), &terms);
            let _ = writeln!(
                b.step,
                "{IN2}        if (iy < p.h && ix0 + {j}u < p.w) {{ out[xbase + {j}u * p.cq] = acc; }}"
            );
            let _ = writeln!(b.step, "{IN2}    }}");
        }
        let _ = writeln!(b.step, "{IN2}}}");
    }
    gen_shift(&mut b.step, rows, 1, width);
    b
}

fn gen_backward_weight(k: usize, s: usize, t: usize, tex: bool, pre: bool) -> Body {
    let width = (t - 1) * s + k;
    let kk = k * k;
    let mut b = Body {
        t,
        ..Default::default()
    };
    gen_columns(&mut b.decl, "ix0", "p.w", width);
    gen_window(&mut b.decl, k, width);
    for c in 0..t {
        let _ = writeln!(b.decl, "    let dk{c} = ox0 + {c}u < p.wo;");
        let _ = writeln!(
            b.decl,
            "    let dci{c} = min(ox0 + {c}u, p.wo - 1u) * p.cq + q;"
        );
    }
    for tap in 0..kk {
        let _ = writeln!(b.decl, "    var g{tap} = {Z};");
    }
    if pre {
        gen_pre_decl(&mut b.decl);
    }
    for j in 0..k - s {
        gen_row_load(&mut b.preload, IN1, "iy", j, width, pre);
    }
    for j in k - s..k {
        gen_row_load(&mut b.step, IN2, "iy", j, width, pre);
    }
    for c in 0..t {
        let _ = writeln!(
            b.step,
            "{IN2}let d{c} = select({Z}, ldb(dbase + dci{c}), dk{c});"
        );
    }
    for ky in 0..k {
        for kx in 0..k {
            let tap = ky * k + kx;
            for c in 0..t {
                let _ = writeln!(
                    b.step,
                    "{IN2}g{tap} = fma(d{c}, r{ky}_{}, g{tap});",
                    c * s + kx
                );
            }
        }
    }
    gen_shift(&mut b.step, k, s, width);
    if tex {
        // The group's block holds channel j's tap t at float j*KK + t.
        for i in 0..kk {
            let comps: Vec<String> = (0..4)
                .map(|c| {
                    let f = 4 * i + c;
                    format!("g{}[{}]", f % kk, f / kk)
                })
                .collect();
            let _ = writeln!(
                b.store,
                "    out[pbase + q * KK + {i}u] = vec4<f32>({});",
                comps.join(", ")
            );
        }
    } else {
        for tap in 0..kk {
            let _ = writeln!(b.store, "    out[pbase + q * KK + {tap}u] = g{tap};");
        }
    }
    b
}
