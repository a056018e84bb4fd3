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
    /// The exact WGSL it was compiled from (`proxyless kernels --dump`).
    pub(crate) source: String,
    pub(crate) pipeline: wgpu::ComputePipeline,
    pub(crate) layout: wgpu::BindGroupLayout,
    pub(crate) bindings: &'static [Access],
}

impl Kernel {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The WGSL source this kernel was compiled from, template holes filled.
    pub fn source(&self) -> &str {
        &self.source
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
}
