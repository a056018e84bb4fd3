//! Every knob that steers kernel choices, in one typed configuration. It is read once, from
//! the `PROXYLESS_*` environment variables (and the command line's `--profile`), validated
//! (an unknown variable or a malformed value is an error listing what is accepted), and then
//! consulted by the kernels. Benchmarks that alternate settings in one process replace it
//! with [`set_tuning`].
//!
//! The profile decides what "a CPU adapter" means to the kernel choices: `native` follows the
//! adapter, `gpu` makes a CPU adapter take every decision a discrete GPU would (storage-buffer
//! operands, no storage-texture reads, no aliasing, coalesced lanes, a GPU's parallelism), so
//! that the variants a real GPU runs are exercised on a machine without one.

use std::sync::RwLock;

use anyhow::{bail, Result};

/// Which of wgpu's run-time checks our shaders are compiled with. The checks wgpu injects
/// (loop counters that break infinite loops, guards on integer division, index clamps
/// where the driver has no robust access of its own) cost instructions in every loop
/// iteration; our kernels are verified by the test suite, so by default only the bounds
/// checks stay. `PROXYLESS_SHADER_CHECKS=all` keeps every check, `none` drops the bounds
/// checks too.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ShaderChecks {
    All,
    #[default]
    Bounds,
    None,
}

/// How a CPU adapter is treated.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Profile {
    /// The adapter's own type decides.
    #[default]
    Native,
    /// Every decision as on a discrete GPU.
    Gpu,
}

/// How the matrix products read their operands (`None` in [`Tuning`]: by adapter).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GemmOperands {
    Buffers,
    Textures,
    Storage,
}

/// Where a per-channel kernel reads x and dy from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BnOperands {
    Buffers,
    Textures,
}

/// Lane order override.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lanes {
    Coalesced,
    Spread,
}

/// The knobs. `None` and `false` are the defaults: the engine decides.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tuning {
    pub profile: Profile,
    pub gemm_operands: Option<GemmOperands>,
    pub gemm_scalar: bool,
    pub gemm_tile: Option<(u32, u32)>,
    pub gemm4_tile: Option<(u32, u32)>,
    pub gemm_lanes_m: Option<u32>,
    pub bn_operands: Option<BnOperands>,
    pub conv_fwd_tile: Option<(usize, usize)>,
    pub conv_dx_tile: Option<(usize, usize)>,
    pub conv_dw_tile: Option<(usize, usize)>,
    pub no_fusion: bool,
    pub bn_stats_separate: bool,
    pub sgd_per_tensor: bool,
    pub lanes: Option<Lanes>,
    /// `Some(0)`: off.
    pub texture_reuse: Option<usize>,
    pub shader_checks: ShaderChecks,
    pub alias_off: bool,
    pub subgroups_off: bool,
    pub parallel_groups: Option<usize>,
    pub no_storage_textures: bool,
}

/// Every variable, what it takes, and what it does (the README's table is this list).
pub const KNOBS: &[(&str, &str, &str)] = &[
    ("PROXYLESS_PROFILE", "native|gpu", "gpu: a CPU adapter takes every decision a discrete GPU would (also --profile)"),
    ("PROXYLESS_GEMM_OPERANDS", "buffers|textures|storage", "how matrix products read their operands (default: storage textures on CPU adapters, buffers on GPUs)"),
    ("PROXYLESS_GEMM_SCALAR", "1", "the scalar matrix-product kernel everywhere (no vec4 kernel)"),
    ("PROXYLESS_GEMM_TILE", "RxC", "scalar kernel's outputs per invocation, R 1..=16, C 1..=32"),
    ("PROXYLESS_GEMM4_TILE", "RxC", "vec4 kernel's tile, multiples of 4 from 4 to 32"),
    ("PROXYLESS_GEMM_LANES_M", "1..=64", "lanes of a 64-lane workgroup spread along m"),
    ("PROXYLESS_BN_OPERANDS", "buffers|textures", "where BN and per-channel kernels read x and dy"),
    ("PROXYLESS_CONV_FWD_TILE", "AxB", "direct conv forward register tile, 1..=8 each"),
    ("PROXYLESS_CONV_DX_TILE", "AxB", "direct conv dx register tile, 1..=8 each"),
    ("PROXYLESS_CONV_DW_TILE", "AxB", "direct conv dw register tile, 1..=8 each"),
    ("PROXYLESS_NO_FUSION", "1", "BN + ReLU6 and the next conv as separate ops in training"),
    ("PROXYLESS_BN_STATS", "separate", "the BN after a depthwise conv takes its own statistics"),
    ("PROXYLESS_SGD", "per-tensor", "one SGD dispatch a tensor (same bits)"),
    ("PROXYLESS_LANES", "coalesced|spread", "lane order of the kernels (default: spread on CPU adapters)"),
    ("PROXYLESS_TEXTURE_REUSE", "off|N", "buffers of at most N floats keep their texture copy until written (default 65536)"),
    ("PROXYLESS_SHADER_CHECKS", "bounds|all|none", "wgpu's run-time shader checks (default: bounds only)"),
    ("PROXYLESS_ALIAS", "on|off", "off: texture copies instead of textures sharing a buffer's memory"),
    ("PROXYLESS_SUBGROUPS", "on|off", "off: no subgroup operations"),
    ("PROXYLESS_PARALLEL_GROUPS", "N >= 1", "workgroups a split reduction aims for"),
    ("PROXYLESS_NO_STORAGE_TEXTURES", "1", "kernels read textures as sampled, never as storage"),
];

/// Variables read elsewhere, not knobs of the engine (tests and benchmarks).
const OTHER_VARS: &[&str] = &["PROXYLESS_CHURN"];

fn tile(name: &str, v: &str, ok: impl Fn(u32, u32) -> bool, accepted: &str) -> Result<(u32, u32)> {
    let parsed = v
        .split_once('x')
        .and_then(|(r, c)| Some((r.parse::<u32>().ok()?, c.parse::<u32>().ok()?)));
    match parsed {
        Some((r, c)) if ok(r, c) => Ok((r, c)),
        _ => bail!("{name}={v:?}: expected {accepted}"),
    }
}

impl Tuning {
    /// The tuning given by `vars` (name, value) pairs: every `PROXYLESS_*` one must be a knob
    /// of [`KNOBS`] with an accepted value.
    pub fn from_vars<'a>(vars: impl IntoIterator<Item = (&'a str, &'a str)>) -> Result<Tuning> {
        let mut t = Tuning::default();
        for (name, v) in vars {
            if !name.starts_with("PROXYLESS_") || OTHER_VARS.contains(&name) {
                continue;
            }
            let Some(&(_, accepted, _)) = KNOBS.iter().find(|k| k.0 == name) else {
                let names: Vec<&str> = KNOBS.iter().map(|k| k.0).collect();
                bail!(
                    "unknown variable {name}: the engine's knobs are {} (README, \"Tuning\")",
                    names.join(", ")
                );
            };
            let bad = || anyhow::anyhow!("{name}={v:?}: expected {accepted}");
            let flag = |on: &str| if v == on { Ok(true) } else { Err(bad()) };
            match name {
                "PROXYLESS_PROFILE" => t.profile = Profile::parse(v).map_err(|_| bad())?,
                "PROXYLESS_GEMM_OPERANDS" => {
                    t.gemm_operands = Some(match v {
                        "buffers" => GemmOperands::Buffers,
                        "textures" => GemmOperands::Textures,
                        "storage" => GemmOperands::Storage,
                        _ => return Err(bad()),
                    })
                }
                "PROXYLESS_GEMM_SCALAR" => t.gemm_scalar = flag("1")?,
                "PROXYLESS_GEMM_TILE" => {
                    let ok = |r, c| (1..=16).contains(&r) && (1..=32).contains(&c);
                    t.gemm_tile = Some(tile(name, v, ok, accepted)?)
                }
                "PROXYLESS_GEMM4_TILE" => {
                    let ok = |r: u32, c: u32| {
                        r.is_multiple_of(4)
                            && c.is_multiple_of(4)
                            && (4..=32).contains(&r)
                            && (4..=32).contains(&c)
                    };
                    t.gemm4_tile = Some(tile(name, v, ok, accepted)?)
                }
                "PROXYLESS_GEMM_LANES_M" => {
                    t.gemm_lanes_m = Some(
                        v.parse()
                            .ok()
                            .filter(|l| (1..=64).contains(l))
                            .ok_or_else(bad)?,
                    )
                }
                "PROXYLESS_BN_OPERANDS" => {
                    t.bn_operands = Some(match v {
                        "buffers" => BnOperands::Buffers,
                        "textures" => BnOperands::Textures,
                        _ => return Err(bad()),
                    })
                }
                "PROXYLESS_CONV_FWD_TILE" | "PROXYLESS_CONV_DX_TILE" | "PROXYLESS_CONV_DW_TILE" => {
                    let ok = |a, b| (1..=8).contains(&a) && (1..=8).contains(&b);
                    let (a, b) = tile(name, v, ok, accepted)?;
                    let slot = match name {
                        "PROXYLESS_CONV_FWD_TILE" => &mut t.conv_fwd_tile,
                        "PROXYLESS_CONV_DX_TILE" => &mut t.conv_dx_tile,
                        _ => &mut t.conv_dw_tile,
                    };
                    *slot = Some((a as usize, b as usize));
                }
                "PROXYLESS_NO_FUSION" => t.no_fusion = flag("1")?,
                "PROXYLESS_BN_STATS" => t.bn_stats_separate = flag("separate")?,
                "PROXYLESS_SGD" => t.sgd_per_tensor = flag("per-tensor")?,
                "PROXYLESS_LANES" => {
                    t.lanes = Some(match v {
                        "coalesced" => Lanes::Coalesced,
                        "spread" => Lanes::Spread,
                        _ => return Err(bad()),
                    })
                }
                "PROXYLESS_TEXTURE_REUSE" => {
                    t.texture_reuse = Some(match v {
                        "off" => 0,
                        n => n.parse().map_err(|_| bad())?,
                    })
                }
                "PROXYLESS_SHADER_CHECKS" => {
                    t.shader_checks = match v {
                        "bounds" => ShaderChecks::Bounds,
                        "all" => ShaderChecks::All,
                        "none" => ShaderChecks::None,
                        _ => return Err(bad()),
                    }
                }
                "PROXYLESS_ALIAS" => {
                    t.alias_off = match v {
                        "on" => false,
                        "off" => true,
                        _ => return Err(bad()),
                    }
                }
                "PROXYLESS_SUBGROUPS" => {
                    t.subgroups_off = match v {
                        "on" => false,
                        "off" => true,
                        _ => return Err(bad()),
                    }
                }
                "PROXYLESS_PARALLEL_GROUPS" => {
                    t.parallel_groups = Some(v.parse().ok().filter(|&n| n >= 1).ok_or_else(bad)?)
                }
                "PROXYLESS_NO_STORAGE_TEXTURES" => t.no_storage_textures = flag("1")?,
                _ => unreachable!("every knob of KNOBS has an arm"),
            }
        }
        Ok(t)
    }

    /// The tuning of this process's environment.
    pub fn from_env() -> Result<Tuning> {
        let vars: Vec<(String, String)> = std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().unwrap_or_default())))
            .collect();
        Tuning::from_vars(vars.iter().map(|(k, v)| (k.as_str(), v.as_str())))
    }

    /// With the `gpu` profile, the decisions a discrete GPU gets, where no knob says otherwise.
    pub fn with_profile(mut self, profile: Profile) -> Tuning {
        self.profile = profile;
        self
    }

    /// Whether an adapter of `device_type` takes the CPU adapters' decisions.
    pub fn cpu_like(&self, device_type: wgpu::DeviceType) -> bool {
        device_type == wgpu::DeviceType::Cpu && self.profile == Profile::Native
    }

    /// Whether aliasing may be used (off under the `gpu` profile: no GPU gets it).
    pub fn alias_allowed(&self) -> bool {
        !self.alias_off && self.profile == Profile::Native
    }

    /// Whether kernels may read textures as storage textures (never under the `gpu` profile,
    /// the variants of a GPU without the feature).
    pub fn storage_textures_allowed(&self) -> bool {
        !self.no_storage_textures && self.profile == Profile::Native
    }
}

impl Profile {
    pub fn parse(s: &str) -> Result<Profile> {
        match s {
            "native" => Ok(Profile::Native),
            "gpu" => Ok(Profile::Gpu),
            other => bail!("unknown profile {other:?}; valid: native, gpu"),
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Profile::Native => "native",
            Profile::Gpu => "gpu",
        }
    }
}

static TUNING: RwLock<Option<Tuning>> = RwLock::new(None);

/// The tuning in force: the one set, or else the environment's (default where it is malformed;
/// [`load_tuning`], which `Gpu::new` calls, reports that error first).
pub fn tuning() -> Tuning {
    if let Some(t) = *TUNING.read().unwrap_or_else(|p| p.into_inner()) {
        return t;
    }
    let t = Tuning::from_env().unwrap_or_default();
    *TUNING.write().unwrap_or_else(|p| p.into_inner()) = Some(t);
    t
}

/// Reads and validates the environment's tuning once (a later call keeps what is set), with
/// `profile` (the command line's `--profile`) over the environment's.
pub fn load_tuning(profile: Option<Profile>) -> Result<Tuning> {
    let mut slot = TUNING.write().unwrap_or_else(|p| p.into_inner());
    let t = match *slot {
        Some(t) if profile.is_none() => t,
        _ => {
            let t = Tuning::from_env()?;
            profile.map_or(t, |p| t.with_profile(p))
        }
    };
    *slot = Some(t);
    Ok(t)
}

/// Replaces the tuning in force (benchmarks comparing settings in one process; tests).
pub fn set_tuning(t: Tuning) {
    *TUNING.write().unwrap_or_else(|p| p.into_inner()) = Some(t);
}
