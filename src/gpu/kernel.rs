//! Compiled kernels. A `KernelSpec` names a WGSL source, its entry point and the access of each
//! storage binding; `Gpu::kernel` compiles it once per set of template values and caches it.
//!
//! Binding convention of every kernel: `@group(0) @binding(0)` is a uniform block of at most
//! `MAX_PARAM_WORDS` 32-bit words (served from a ring with a dynamic offset, so per-dispatch
//! parameters need no new buffer), bindings 1.. are storage buffers in `bindings` order.

/// How a kernel uses a storage binding.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Access {
    Read,
    ReadWrite,
    /// Bound as a read-only uniform buffer (16-byte element stride, at most
    /// `max_uniform_buffer_binding_size`): on CPU drivers a uniform-address read from it is
    /// one scalar load, where a storage read is a loop over the SIMD lanes.
    Uniform,
    /// A `texture_2d<f32>` (rgba32float, read with `textureLoad`): see `gpu::texture`.
    Texture,
    /// The same texture bound as a read-only `texture_storage_2d<rgba32float, read>` (only
    /// where `Gpu::storage_texture_reads`): on lavapipe a cheaper load than `Texture`.
    StorageTexture,
}

/// A kernel entry point in a WGSL file.
#[derive(Clone, Copy, Debug)]
pub struct KernelSpec {
    /// Short name, for errors and the cache key (e.g. "pointwise").
    pub file: &'static str,
    /// The WGSL text (`include_str!` of a file in `shaders/`).
    pub source: &'static str,
    pub entry: &'static str,
    pub bindings: &'static [Access],
}

/// Parameter words per dispatch; the uniform ring slot holds this many.
pub const MAX_PARAM_WORDS: usize = 32;

/// A compiled pipeline and its bind-group layout.
pub struct Kernel {
    pub(crate) name: String,
    /// Its WGSL with the holes filled (`proxyless kernels --dump`); compiled after
    /// `unroll_loops`.
    pub(crate) source: String,
    pub(crate) entry: &'static str,
    pub(crate) pipeline: wgpu::ComputePipeline,
    pub(crate) layout: wgpu::BindGroupLayout,
    pub(crate) bindings: &'static [Access],
}

impl Kernel {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The kernel's WGSL with its holes filled, loops as written.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The exact WGSL compiled: `source` with its entry point alone, its branches on
    /// constants taken and its loops over constants unrolled.
    pub fn compiled_source(&self) -> anyhow::Result<String> {
        unroll_loops(&only_entry(&self.source, self.entry)?)
    }
}

/// Replaces `{{NAME}}` placeholders by their values; errors on a placeholder left unfilled.
pub(crate) fn instantiate(spec: &KernelSpec, values: &[(&str, String)]) -> anyhow::Result<String> {
    let mut text = spec.source.to_string();
    for (name, value) in values {
        text = text.replace(&format!("{{{{{name}}}}}"), value);
    }
    if let Some(pos) = text.find("{{") {
        let end = text[pos..]
            .find("}}")
            .map(|e| pos + e + 2)
            .unwrap_or(text.len());
        anyhow::bail!(
            "kernel {}::{}: template value {} was not given",
            spec.file,
            spec.entry,
            &text[pos..end]
        );
    }
    Ok(text)
}

/// `text` without its entry points other than `entry` (a `@compute` function and its body;
/// the comments before it stay): a file holds a kernel family, a pipeline compiles one entry
/// point, and the others, once unrolled, only lengthened what naga parses and checks.
pub(crate) fn only_entry(text: &str, entry: &str) -> anyhow::Result<String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("@compute") {
        let tail = &rest[at..];
        let name = tail
            .find("fn ")
            .map(|f| &tail[f + 3..])
            .and_then(|t| t.split('(').next())
            .map(str::trim)
            .ok_or_else(|| anyhow::anyhow!("an @compute without a function"))?;
        let open = tail
            .find('{')
            .ok_or_else(|| anyhow::anyhow!("entry point {name} has no body"))?;
        let close = matching(tail, open, '{', '}')
            .ok_or_else(|| anyhow::anyhow!("unbalanced braces in entry point {name}"))?;
        out.push_str(&rest[..at]);
        if name == entry {
            out.push_str(&tail[..=close]);
        }
        rest = &tail[close + 1..];
    }
    out.push_str(rest);
    if !out.contains(&format!("fn {entry}(")) {
        anyhow::bail!("no entry point {entry}");
    }
    Ok(out)
}

/// Loops of at most this many trips are unrolled by `unroll_loops`.
const MAX_UNROLLED_TRIPS: u32 = 64;

/// Unrolls every loop written `for (var X = A; X < B; X++) { BODY }` whose bounds A and B are
/// constant (see `constant_value`), with at most `MAX_UNROLLED_TRIPS` trips, into
/// `{ const X = Au; BODY } { const X = (A + 1)u; BODY } ...` (inner loops first). Why: kernels
/// keep per-invocation tiles and windows in private arrays indexed by such loops, and lavapipe
/// keeps an array in registers only where every index is a constant, while its compiler (NIR)
/// unrolls a loop only below a size limit that an 8 x 16 GEMM tile already passes: left
/// rolled, that tile's arrays go to memory, 3x slower (benches/NOTES.md, issue 23). GPU
/// compilers unroll such loops themselves. X is a `const`, so that expressions of it are
/// constant expressions where WGSL asks for one (`subgroupBroadcast`'s lane). The body must
/// not `break` or `continue`.
///
/// First, every `if (COND) { A } else { B }` whose COND is decided by constants (see
/// `constant_condition`) is replaced by the block taken: the kernels branch on their variant's
/// flags (`if (A_ALONG_K)`), and unrolling the loops of a branch never taken only lengthens
/// what naga parses (with `only_entry`, this took compiling every variant from 12.1 to 9.2 s).
pub(crate) fn unroll_loops(text: &str) -> anyhow::Result<String> {
    let consts = constants_of(text);
    let folded = fold_constant_ifs(text, &flags_of(text), &consts)?;
    unroll_with(&folded, &consts)
}

/// The `const NAME: bool = true;` (or false) declarations of a text.
fn flags_of(text: &str) -> Vec<(String, bool)> {
    text.lines()
        .filter_map(|line| {
            let decl = line.trim().strip_prefix("const ")?;
            let (name, value) = decl.split_once(": bool = ")?;
            let value = value.split(';').next()?.trim().parse().ok()?;
            Some((name.trim().to_string(), value))
        })
        .collect()
}

/// Whether COND, terms joined by `&&`, holds, where that is decided by constants: each term
/// is a flag, `!flag`, or `NAME == N` (`!=`, `>`) of a u32 constant; one term known false
/// decides it whatever the others are. None where it is not decided.
fn constant_condition(
    cond: &str,
    flags: &[(String, bool)],
    consts: &[(String, u32)],
) -> Option<bool> {
    let term = |t: &str| -> Option<bool> {
        let t = t.trim();
        if let Some(f) = flags.iter().find(|(n, _)| n == t) {
            return Some(f.1);
        }
        if let Some(rest) = t.strip_prefix('!') {
            return flags.iter().find(|(n, _)| n == rest.trim()).map(|f| !f.1);
        }
        let tokens: Vec<&str> = t.split_whitespace().collect();
        let [a, op, b] = tokens[..] else {
            return None;
        };
        let (a, b) = (constant_value(a, consts)?, constant_value(b, consts)?);
        match op {
            "==" => Some(a == b),
            "!=" => Some(a != b),
            ">" => Some(a > b),
            _ => None,
        }
    };
    if cond.contains("||") {
        return None;
    }
    let terms: Vec<Option<bool>> = cond.split("&&").map(term).collect();
    if terms.contains(&Some(false)) {
        Some(false)
    } else if terms.iter().all(|t| *t == Some(true)) {
        Some(true)
    } else {
        None
    }
}

/// Replaces each `if` decided by constants by the block it takes (kept in braces, for its
/// scope), or by nothing.
fn fold_constant_ifs(
    text: &str,
    flags: &[(String, bool)],
    consts: &[(String, u32)],
) -> anyhow::Result<String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("if (") {
        out.push_str(&rest[..at]);
        let tail = &rest[at..];
        let skip = |out: &mut String| {
            out.push_str("if (");
            &tail["if (".len()..]
        };
        // Not part of a longer name (`elif (`), and not an `else if`.
        let word_start =
            at == 0 || !rest[..at].ends_with(|c: char| c.is_alphanumeric() || c == '_');
        let Some(close) = matching(tail, 3, '(', ')') else {
            anyhow::bail!(
                "unbalanced parentheses at {:?}",
                &tail[..tail.len().min(40)]
            );
        };
        let cond = &tail[4..close];
        let decided = if word_start && !out.trim_end().ends_with("else") {
            constant_condition(cond, flags, consts)
        } else {
            None
        };
        let after_cond = &tail[close + 1..];
        let open = after_cond.len() - after_cond.trim_start().len();
        let Some(taken) = decided.filter(|_| after_cond[open..].starts_with('{')) else {
            rest = skip(&mut out);
            continue;
        };
        let then_end = matching(after_cond, open, '{', '}')
            .ok_or_else(|| anyhow::anyhow!("unbalanced braces after if ({cond})"))?;
        let then_body = &after_cond[open + 1..then_end];
        let after_then = &after_cond[then_end + 1..];
        let trimmed = after_then.trim_start();
        let (else_body, end) = if let Some(e) = trimmed.strip_prefix("else") {
            let e_open = e.len() - e.trim_start().len();
            if !e[e_open..].starts_with('{') {
                // `else if`: left to the compiler.
                rest = skip(&mut out);
                continue;
            }
            let e_end = matching(e, e_open, '{', '}')
                .ok_or_else(|| anyhow::anyhow!("unbalanced braces after else of if ({cond})"))?;
            let consumed = after_then.len() - e.len() + e_end + 1;
            (Some(&e[e_open + 1..e_end]), consumed)
        } else {
            (None, 0)
        };
        let block = if taken { Some(then_body) } else { else_body };
        if let Some(b) = block {
            out.push('{');
            out.push_str(&fold_constant_ifs(b, flags, consts)?);
            out.push('}');
        }
        rest = &after_then[end..];
    }
    out.push_str(rest);
    Ok(out)
}

fn unroll_with(text: &str, consts: &[(String, u32)]) -> anyhow::Result<String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("for (var ") {
        out.push_str(&rest[..at]);
        let tail = &rest[at..];
        let Some((var, trips, body_start)) = constant_loop(tail, consts) else {
            out.push_str("for (var ");
            rest = &tail["for (var ".len()..];
            continue;
        };
        let body_end = matching(tail, body_start, '{', '}').ok_or_else(|| {
            anyhow::anyhow!(
                "unbalanced braces in the loop over {var} at {:?}",
                &tail[..tail.len().min(40)]
            )
        })?;
        let body = unroll_with(&tail[body_start + 1..body_end], consts)?;
        for trip in trips {
            out.push_str(&format!("{{ const {var} = {trip}u;{body}}}"));
        }
        rest = &tail[body_end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// The `const NAME: u32 = EXPR;` declarations of a text whose EXPR is constant, in order (a
/// declaration may use the ones before it).
fn constants_of(text: &str) -> Vec<(String, u32)> {
    let mut consts = Vec::new();
    for line in text.lines() {
        let Some(decl) = line.trim().strip_prefix("const ") else {
            continue;
        };
        let Some((name, value)) = decl.split_once(": u32 = ") else {
            continue;
        };
        let Some(expr) = value.split(';').next() else {
            continue;
        };
        if let Some(v) = constant_value(expr, &consts) {
            consts.push((name.trim().to_string(), v));
        }
    }
    consts
}

/// The value of a literal (`4u`), a known constant, or two of them joined by one of `+ - * /`
/// (`K - S`); None for anything else.
fn constant_value(expr: &str, consts: &[(String, u32)]) -> Option<u32> {
    let term = |t: &str| -> Option<u32> {
        match t.strip_suffix('u').unwrap_or(t).parse() {
            Ok(v) => Some(v),
            Err(_) => consts.iter().find(|(name, _)| name == t).map(|c| c.1),
        }
    };
    let tokens: Vec<&str> = expr.split_whitespace().collect();
    match tokens[..] {
        [t] => term(t),
        [a, op, b] => {
            let (a, b) = (term(a)?, term(b)?);
            match op {
                "+" => a.checked_add(b),
                "-" => a.checked_sub(b),
                "*" => a.checked_mul(b),
                "/" => a.checked_div(b),
                _ => None,
            }
        }
        _ => None,
    }
}

/// For a text starting `for (var X = A; X < B; X++) {` with constant A and B: X, the trips
/// A..B and the position of the body's opening brace.
fn constant_loop<'a>(
    text: &'a str,
    consts: &[(String, u32)],
) -> Option<(&'a str, std::ops::Range<u32>, usize)> {
    let header_end = text.find(')')?;
    let header = &text["for (var ".len()..header_end];
    let mut parts = header.split(';').map(str::trim);
    let (var, start) = parts.next()?.split_once('=')?;
    let var = var.trim();
    let start = constant_value(start.trim(), consts)?;
    let bound = parts
        .next()?
        .strip_prefix(var)?
        .trim()
        .strip_prefix('<')?
        .trim();
    if parts.next()? != format!("{var}++") || parts.next().is_some() {
        return None;
    }
    let end = constant_value(bound, consts)?;
    let brace = header_end + text[header_end..].find('{')?;
    let between_ok = text[header_end + 1..brace].trim().is_empty();
    let trips = start..end.max(start);
    (between_ok && trips.len() <= MAX_UNROLLED_TRIPS as usize).then_some((var, trips, brace))
}

/// The position of the `close` that closes the `open_ch` at `open`.
fn matching(text: &str, open: usize, open_ch: char, close: char) -> Option<usize> {
    let mut depth = 0usize;
    for (i, ch) in text[open..].char_indices() {
        if ch == open_ch {
            depth += 1;
        } else if ch == close {
            depth -= 1;
            if depth == 0 {
                return Some(open + i);
            }
        }
    }
    None
}

/// Workgroup counts for `n` workgroups along one logical axis, folded into x and y because a
/// dimension holds at most `max` (65535 in WebGPU). Kernels rebuild the flat index as
/// `wid.x + wid.y * nwg.x` and skip indices past the end.
pub fn groups_for(n: u32, max: u32) -> [u32; 3] {
    if n <= max {
        [n.max(1), 1, 1]
    } else {
        let y = n.div_ceil(max);
        [n.div_ceil(y), y, 1]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folded_groups_cover_n() {
        for n in [1u32, 7, 65535, 65536, 200_000, 10_000_000] {
            let [x, y, _] = groups_for(n, 65535);
            assert!(x <= 65535 && y <= 65535 && x * y >= n, "{n}: {x}x{y}");
        }
    }

    #[test]
    fn unfilled_template_is_an_error() {
        let spec = KernelSpec {
            file: "t",
            source: "const R = {{ROWS}}u; const C = {{COLS}}u;",
            entry: "main",
            bindings: &[],
        };
        let ok = instantiate(&spec, &[("ROWS", "4".into()), ("COLS", "8".into())]).unwrap();
        assert_eq!(ok, "const R = 4u; const C = 8u;");
        let err = instantiate(&spec, &[("ROWS", "4".into())]).unwrap_err();
        assert!(err.to_string().contains("{{COLS}}"), "{err}");
    }

    #[test]
    fn other_entry_points_are_dropped_and_constant_ifs_folded() {
        let text = "const F: bool = false;\nconst N: u32 = 2u;\nfn helper() {}\n@compute @workgroup_size(64)\nfn a() { if (F) { x(); } else { y(); } }\n// b's comment\n@compute @workgroup_size(64)\nfn b() { if (N == 2u) { z(); } if (!F && q) { w(); } }\n";
        let only_a = only_entry(text, "a").unwrap();
        assert!(
            only_a.contains("fn helper()") && only_a.contains("fn a()"),
            "{only_a}"
        );
        assert!(!only_a.contains("fn b()"), "{only_a}");
        assert!(only_entry(text, "c").is_err());
        let folded = unroll_loops(&only_entry(text, "b").unwrap()).unwrap();
        // N == 2u holds: its block stays, unconditioned; `!F && q` is not decided by
        // constants alone and stays an if.
        assert!(
            folded.contains("{ z(); }") && !folded.contains("N == 2u"),
            "{folded}"
        );
        assert!(folded.contains("if (!F && q) { w(); }"), "{folded}");
        let a = unroll_loops(&only_a).unwrap();
        assert!(a.contains("{ y(); }") && !a.contains("x();"), "{a}");
    }

    #[test]
    fn constant_loops_are_unrolled_and_others_kept() {
        let text = "const N: u32 = 2u;\nconst M2: u32 = N * 3u;\nfn f() {\n    for (var i = 0u; i < N; i++) { for (var j = 0u; j < N; j++) { x[i][j] = 1.0; } }\n    for (var k = a; k < b; k++) { y(k); }\n    for (var w = 0u; w < M; w++) { z(w); }\n    for (var v = N - 1u; v < M2; v++) { u(v); }\n}";
        let out = unroll_loops(text).unwrap();
        // Each outer trip binds i, then holds the inner trips (whose bound is declared outside).
        for i in 0..2 {
            assert!(
                out.contains(&format!("{{ const i = {i}u; {{ const j = 0u;")),
                "{out}"
            );
        }
        assert_eq!(out.matches("const j = 1u;").count(), 2, "{out}");
        assert_eq!(out.matches("x[i][j] = 1.0;").count(), 4, "{out}");
        assert!(!out.contains("for (var j"), "{out}");
        // A loop of runtime bounds, or over an unknown constant, stays a loop.
        assert!(
            out.contains("for (var k = a; k < b; k++) { y(k); }"),
            "{out}"
        );
        assert!(
            out.contains("for (var w = 0u; w < M; w++) { z(w); }"),
            "{out}"
        );
        assert!(!out.contains("for (var i"), "{out}");
        // Bounds from expressions of constants: v runs 1..6.
        let trips: Vec<&str> = out.matches("const v = ").collect();
        assert_eq!(trips.len(), 5, "{out}");
        assert!(out.contains("{ const v = 1u; u(v); }") && out.contains("{ const v = 5u; u(v); }"));
    }
}
