//! The WGSL of the vec4 GEMM kernel (`shaders/gemm_vec4.wgsl`), generated per variant: the
//! unrolled body of a ROWS x COLS tile, its operand loads, the optional input transform and
//! the stores.

use super::*;

/// Generates the unrolled body of the vec4 kernel for a ROWS x COLS tile.
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
    let vec4_out = out.vec4;
    let groups = rows / 4;
    // The input transform of a loaded texel v of channel group g, with the group's factors
    // pm{g}, ps{g}, pb{g} (the BN kernels' expression, then the ReLU6 clamp).
    let transform = |v: String, tag: &str| {
        format!("clamp(fma({v} - pm{tag}, ps{tag}, pb{tag}), vec4<f32>(0.0), vec4<f32>(6.0))")
    };
    let factors = |tag: &str, g: &str| {
        format!(
            "let pm{tag} = ld_pre(2u * p.pre_cg + {g});\n        let ps{tag} = ld_pre({g}) * ld_pre(3u * p.pre_cg + {g});\n        let pb{tag} = ld_pre(p.pre_cg + {g});\n"
        )
    };
    let mut decl = String::new();
    let mut load = String::new();
    let mut load_t: [String; 4] = Default::default();
    if pre == Some(PreOn::A) && a_mode == Vec4Along::K {
        // One channel group per k-step, shared by every row of the tile.
        load += &format!("        {}", factors("k", "k / 4u"));
    }
    let mut fma = String::new();
    let mut store = String::new();
    if 64 % lanes_m != 0 {
        // Lanes past the last whole k slice of the workgroup.
        decl += &format!(
            "    if (lid.x >= {}u) {{\n        return;\n    }}\n",
            64 / lanes_m * lanes_m
        );
    }
    if out.guard_m {
        // A lane whose rows all lie past m would compute clamped copies of the last row:
        // leave instead, so that lavapipe skips 8-lane batches with no lane left (a short
        // product, m = 144 in 64 lanes x 4 rows, has 28 such lanes). With shared B loads
        // only a subgroup with no row left may leave.
        let past = "4u * g_base >= p.m";
        let cond = match share_b {
            Some(_) => format!("subgroupAll({past})"),
            None => past.to_string(),
        };
        decl += &format!("    if ({cond}) {{\n        return;\n    }}\n");
    }
    // Row r = 4*q + t lives in row group g_q = g_base + LANES_M*q, at row 4*g_q + t.
    for q in 0..groups {
        decl += &format!("    let g{q} = g_base + {}u;\n", q * lanes_m);
        match a_mode {
            Vec4Along::K => {
                for t in 0..4 {
                    let r = 4 * q + t;
                    decl += &format!(
                        "    let ra{r} = min(4u * g{q} + {t}u, p.m - 1u) * (p.a_si / 4u);\n"
                    );
                    let v = format!("ld_a(ra{r} + k / 4u)");
                    let v = if pre == Some(PreOn::A) {
                        transform(v, "k")
                    } else {
                        v
                    };
                    load += &format!("        let a{r} = {v};\n");
                }
            }
            Vec4Along::Out => {
                decl += &format!("    let ga{q} = min(g{q}, p.m / 4u - 1u);\n");
                let tag = format!("a{q}");
                if pre == Some(PreOn::A) {
                    // Each row group is one channel group: its factors load once.
                    decl += &format!("    {}", factors(&tag, &format!("ga{q}")));
                }
                for t in 0..4 {
                    let v = format!("ld_a((k + {t}u) * (p.a_sk / 4u) + ga{q})");
                    let v = if pre == Some(PreOn::A) {
                        transform(v, &tag)
                    } else {
                        v
                    };
                    load_t[t as usize] += &format!("        let a{q}_{t} = {v};\n");
                }
            }
        }
    }
    let col_groups = cols / 4;
    match (b_mode, share_b) {
        (Vec4Along::K, None) => {
            for c in 0..cols {
                decl += &format!("    let cb{c} = min(j0 + {c}u, p.n - 1u) * (p.b_sj / 4u);\n");
                load += &format!("        let b{c} = ld_b(cb{c} + k / 4u);\n");
            }
        }
        (Vec4Along::K, Some(size)) => {
            // Load q of lane s is column q * S + s of the tile (clamped into the tile and
            // into B); column c is then load c / S of lane c % S.
            for q in 0..cols.div_ceil(size) {
                decl += &format!(
                    "    let cs{q} = min(min(j0 + {}u + sg_lane, j0 + {}u), p.n - 1u) * (p.b_sj / 4u);\n",
                    q * size,
                    cols - 1
                );
                load += &format!("        let bs{q} = ld_b(cs{q} + k / 4u);\n");
            }
            for c in 0..cols {
                load += &format!(
                    "        let b{c} = subgroupBroadcast(bs{}, {}u);\n",
                    c / size,
                    c % size
                );
            }
        }
        (Vec4Along::Out, Some(size)) => {
            // The k-step's 4 x col_groups texels, entry e = t * col_groups + cc (row k + t,
            // column group cc), spread over the subgroup: load q of lane s is entry q * S + s
            // (clamped to the last), transformed by the loading lane; b{cc}_{t} is then load
            // e / S of lane e % S.
            let entries = 4 * col_groups;
            for q in 0..entries.div_ceil(size) {
                decl += &format!(
                    "    let se{q} = min({}u + sg_lane, {}u);\n    let st{q} = se{q} / {col_groups}u;\n    let sc{q} = min(j0 / 4u + se{q} % {col_groups}u, p.n / 4u - 1u);\n",
                    q * size,
                    entries - 1
                );
                let v = format!("ld_b((k + st{q}) * (p.b_sk / 4u) + sc{q})");
                let v = if pre == Some(PreOn::B) {
                    decl += &format!("    {}", factors(&format!("s{q}"), &format!("sc{q}")));
                    transform(v, &format!("s{q}"))
                } else {
                    v
                };
                load += &format!("        let bs{q} = {v};\n");
            }
            for e in 0..entries {
                load += &format!(
                    "        let b{}_{} = subgroupBroadcast(bs{}, {}u);\n",
                    e % col_groups,
                    e / col_groups,
                    e / size,
                    e % size
                );
            }
        }
        (Vec4Along::Out, None) => {
            for cc in 0..col_groups {
                decl += &format!("    let cb{cc} = min(j0 / 4u + {cc}u, p.n / 4u - 1u);\n");
                if pre == Some(PreOn::B) {
                    // Each column group is one channel group: its factors load once.
                    decl += &format!("    {}", factors(&cc.to_string(), &format!("cb{cc}")));
                }
                for t in 0..4 {
                    let v = format!("ld_b((k + {t}u) * (p.b_sk / 4u) + cb{cc})");
                    let v = if pre == Some(PreOn::B) {
                        transform(v, &cc.to_string())
                    } else {
                        v
                    };
                    load_t[t as usize] += &format!("        let b{cc}_{t} = {v};\n");
                }
            }
        }
    }
    let a_at = |r: u32, t: u32| match a_mode {
        Vec4Along::K => format!("a{r}[{t}]"),
        Vec4Along::Out => format!("a{}_{t}[{}]", r / 4, r % 4),
    };
    let b_at = |c: u32, t: u32| match b_mode {
        Vec4Along::K => format!("b{c}[{t}]"),
        Vec4Along::Out => format!("b{}_{t}[{}]", c / 4, c % 4),
    };
    for r in 0..rows {
        let (q, t) = (r / 4, r % 4);
        decl += &format!("    let row{r} = 4u * g{q} + {t}u;\n");
        for c in 0..cols {
            decl += &format!("    var acc{r}_{c} = 0.0;\n");
            let put = if !vec4_out {
                format!("put(out_base + row{r} * p.c_si + (j0 + {c}u) * p.c_sj, acc{r}_{c});")
            } else if c % 4 == 0 {
                format!(
                    "put4((out_base + row{r} * p.c_si + j0) / 4u + {}u, vec4<f32>(acc{r}_{c}, acc{r}_{}, acc{r}_{}, acc{r}_{}));",
                    c / 4,
                    c + 1,
                    c + 2,
                    c + 3
                )
            } else {
                continue;
            };
            // Guards only where the grid overhangs C: an unguarded store is not under an exec
            // mask. With vec4 stores n % 4 == 0, so a group of four is all in or all out.
            let put = if out.guard_n {
                format!("if (j0 + {c}u < p.n) {{ {put} }}")
            } else {
                put
            };
            let put = if out.guard_m {
                format!("if (row{r} < p.m) {{ {put} }}")
            } else {
                put
            };
            store += &format!("    {put}\n");
        }
    }
    // Each accumulator takes its four k's in a row: an accumulator spilled by the register
    // allocator (a tile holds far more than the CPU's 16 vector registers) is then loaded
    // and stored once per k-step instead of once per k (benches/NOTES.md: -5% to -24%).
    for loads in &load_t {
        load += loads;
    }
    for r in 0..rows {
        for c in 0..cols {
            for t in 0..4 {
                fma += &format!(
                    "        acc{r}_{c} = fma({}, {}, acc{r}_{c});\n",
                    a_at(r, t),
                    b_at(c, t)
                );
            }
        }
    }
    let operands = match operands {
        Operands::Buffers => OPERANDS_BUFFERS,
        Operands::Textures => OPERANDS_TEXTURES,
        Operands::StorageTextures => OPERANDS_STORAGE_TEXTURES,
    };
    let output = output_binding(vec4_out, out.accumulate);
    let pre_binding = if pre.is_some() { PRE_BINDING } else { "" };
    // (naga 30 takes subgroup builtins under Features::SUBGROUP and rejects the WGSL
    // `enable subgroups;` directive.)
    let subgroup_arg = match share_b {
        Some(_) => ", @builtin(subgroup_invocation_id) sg_lane: u32",
        None => "",
    };
    vec![
        ("SUBGROUP_ARG", subgroup_arg.to_string()),
        ("PRE", pre_binding.to_string()),
        ("OUTPUT", output),
        ("OPERANDS", operands.to_string()),
        ("GROUPS", groups.to_string()),
        ("LANES_M", lanes_m.to_string()),
        ("COLS", cols.to_string()),
        ("DECL", decl),
        ("LOAD", load),
        ("FMA", fma),
        ("STORE", store),
    ]
}
