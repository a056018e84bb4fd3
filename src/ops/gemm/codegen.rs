//! The holes of the vec4 GEMM kernel (`shaders/gemm_vec4.wgsl`) for one variant: its
//! constants (tile, lanes, layouts, transform, guards, sharing) and its bindings. The kernel
//! itself is plain WGSL with loops of constant trip count, which the driver unrolls.

use super::*;

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
pub(super) fn template_vec4(
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
