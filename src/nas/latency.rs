//! Latency tables in the official key format (`mobile_trim.yaml` of the reference code):
//! measured here, op by op, on the adapter that searches; loaded from YAML; and the expected
//! latency of a search space's distribution, with its exact gradient in the logits.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::{bail, Context, Result};

use super::space::{Candidate, MixedLayerSpec, SearchSpace};

/// count / mean / var of one op's latency, in ms.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Stat {
    pub count: usize,
    pub mean: f64,
    pub var: f64,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct LatencyTable {
    /// Where it was measured (empty for a table that does not say, like the official ones).
    pub adapter: String,
    pub driver: String,
    pub batch: usize,
    /// How it was timed: "timestamp queries" or "wall clock" (empty when the table does not
    /// say).
    pub timing: String,
    pub entries: BTreeMap<String, Stat>,
}

fn hwc(size: usize, c: usize) -> String {
    format!("{size}x{size}x{c}")
}

/// `Conv-input:...-output:...`: the stem.
pub fn stem_key(space: &SearchSpace) -> String {
    let c = &space.first_conv;
    let out = space.resolution.div_ceil(c.stride);
    format!(
        "Conv-input:{}-output:{}",
        hwc(space.resolution, c.in_channels),
        hwc(out, c.out_channels)
    )
}

/// `expanded_conv-...` of an MBConv at an input resolution.
pub fn mbconv_key(
    size: usize,
    cin: usize,
    cout: usize,
    expand: usize,
    kernel: usize,
    stride: usize,
    idskip: bool,
) -> String {
    format!(
        "expanded_conv-input:{}-output:{}-expand:{expand}-kernel:{kernel}-stride:{stride}-idskip:{}",
        hwc(size, cin),
        hwc(size.div_ceil(stride), cout),
        idskip as u8
    )
}

/// The first block's key (expand 1, k3, stride 1, no skip).
pub fn first_block_key(space: &SearchSpace) -> String {
    let b = &space.first_block;
    let size = space.resolution.div_ceil(space.first_conv.stride);
    mbconv_key(size, b.in_channels, b.out_channels, 1, b.kernel, 1, false)
}

/// Key of candidate `c` of mixed layer `l` (None for Zero, which costs nothing).
pub fn candidate_key(l: &MixedLayerSpec, c: Candidate) -> Option<String> {
    match c {
        Candidate::MbConv { kernel, expand } => Some(mbconv_key(
            l.input_size,
            l.in_channels,
            l.out_channels,
            expand,
            kernel,
            l.stride,
            l.residual(),
        )),
        Candidate::Zero => None,
    }
}

/// Final feature size of the space.
fn last_size(space: &SearchSpace) -> usize {
    space
        .layers
        .last()
        .map_or(space.resolution, |l| l.output_size())
}

/// `Conv_1-...`: the feature mix layer.
pub fn feature_mix_key(space: &SearchSpace) -> String {
    let s = last_size(space);
    let f = &space.feature_mix;
    format!(
        "Conv_1-input:{}-output:{}",
        hwc(s, f.in_channels),
        hwc(s, f.out_channels)
    )
}

/// `Logits-...`: pooling and classifier.
pub fn logits_key(space: &SearchSpace) -> String {
    let s = last_size(space);
    format!(
        "Logits-input:{}-output:{}",
        hwc(s, space.feature_mix.out_channels),
        space.classes
    )
}

impl LatencyTable {
    /// Mean latency (ms) of `key`, with an error naming it when the table lacks it.
    pub fn get(&self, key: &str) -> Result<f64> {
        self.entries
            .get(key)
            .map(|s| s.mean)
            .with_context(|| format!("the latency table has no entry {key} (measure it with `proxyless latency` for this space)"))
    }

    /// Latency of the stem, the first block, the feature mix and the classifier.
    pub fn fixed(&self, space: &SearchSpace) -> Result<f64> {
        Ok(self.get(&stem_key(space))?
            + self.get(&first_block_key(space))?
            + self.get(&feature_mix_key(space))?
            + self.get(&logits_key(space))?)
    }

    /// Latency of every candidate of every mixed layer (Zero: 0), checking every key exists.
    pub fn per_candidate(&self, space: &SearchSpace) -> Result<Vec<Vec<f64>>> {
        space
            .layers
            .iter()
            .map(|l| {
                l.candidates
                    .iter()
                    .map(|&c| candidate_key(l, c).map_or(Ok(0.0), |k| self.get(&k)))
                    .collect()
            })
            .collect()
    }

    /// Writes the official YAML layout (adapter, driver and batch as comments, which the
    /// reference code's loader skips).
    pub fn to_yaml(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "# adapter: {}", self.adapter);
        let _ = writeln!(s, "# driver: {}", self.driver);
        let _ = writeln!(s, "# batch: {}", self.batch);
        if !self.timing.is_empty() {
            let _ = writeln!(s, "# timing: {}", self.timing);
        }
        for (k, v) in &self.entries {
            let _ = writeln!(
                s,
                "{k}:\n  count: {}\n  mean: {}\n  var: {}",
                v.count, v.mean, v.var
            );
        }
        s
    }

    /// Parses the YAML layout above (and the official tables: `key:` then indented
    /// `count`/`mean`/`var`).
    pub fn parse(text: &str, origin: &str) -> Result<LatencyTable> {
        let mut t = LatencyTable::default();
        let mut current: Option<(String, Stat)> = None;
        let finish = |cur: &mut Option<(String, Stat)>, t: &mut LatencyTable| {
            if let Some((k, s)) = cur.take() {
                t.entries.insert(k, s);
            }
        };
        for (n, line) in text.lines().enumerate() {
            let at = || format!("{origin}:{}", n + 1);
            if let Some(c) = line.strip_prefix('#') {
                if let Some((k, v)) = c.trim().split_once(':') {
                    let v = v.trim().to_string();
                    match k.trim() {
                        "adapter" => t.adapter = v,
                        "driver" => t.driver = v,
                        "batch" => t.batch = v.parse().unwrap_or(0),
                        "timing" => t.timing = v,
                        _ => {}
                    }
                }
                continue;
            }
            if line.trim().is_empty() {
                continue;
            }
            if !line.starts_with(' ') {
                finish(&mut current, &mut t);
                let key = line
                    .trim_end()
                    .strip_suffix(':')
                    .with_context(|| format!("{}: expected `key:`, got {line:?}", at()))?;
                current = Some((
                    key.to_string(),
                    Stat {
                        count: 0,
                        mean: f64::NAN,
                        var: 0.0,
                    },
                ));
                continue;
            }
            let (k, v) = line
                .trim()
                .split_once(':')
                .with_context(|| format!("{}: expected `name: value`, got {line:?}", at()))?;
            let Some((_, stat)) = current.as_mut() else {
                bail!("{}: a value before any key", at());
            };
            let v = v.trim();
            let num = || -> Result<f64> {
                v.parse()
                    .with_context(|| format!("{}: {k} is not a number: {v:?}", at()))
            };
            match k.trim() {
                "count" => stat.count = num()? as usize,
                "mean" => stat.mean = num()?,
                "var" => stat.var = num()?,
                _ => {}
            }
        }
        finish(&mut current, &mut t);
        if let Some((k, _)) = t.entries.iter().find(|(_, s)| !s.mean.is_finite()) {
            bail!("{origin}: entry {k} has no mean");
        }
        if let Some((k, s)) = t.entries.iter().find(|(_, s)| s.mean < 0.0 || s.var < 0.0) {
            bail!(
                "{origin}: entry {k} has a negative mean or variance ({} and {})",
                s.mean,
                s.var
            );
        }
        if t.entries.is_empty() {
            bail!("{origin}: no latency entries");
        }
        Ok(t)
    }

    pub fn load(path: &Path) -> Result<LatencyTable> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read latency table {}", path.display()))?;
        Self::parse(&text, &path.display().to_string())
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        crate::nn::params::write_atomic(path, self.to_yaml().as_bytes())
    }
}

/// Expected latency E = fixed + sum over layers of sum_j p_j LAT_j, and its gradient in the
/// logits: dE/dalpha_i = p_i (LAT_i - E_layer) per layer.
pub fn expected_latency(fixed: f64, lat: &[Vec<f64>], probs: &[Vec<f64>]) -> (f64, Vec<Vec<f64>>) {
    let mut e = fixed;
    let mut grad = Vec::with_capacity(lat.len());
    for (l, p) in lat.iter().zip(probs) {
        let el: f64 = l.iter().zip(p).map(|(a, b)| a * b).sum();
        e += el;
        grad.push(l.iter().zip(p).map(|(li, pi)| pi * (li - el)).collect());
    }
    (e, grad)
}

/// The table-predicted latency of a whole net config at input `resolution`: stem, every block
/// (Zero blocks cost nothing), feature mix and classifier.
pub fn net_latency(
    table: &LatencyTable,
    net: &crate::nn::NetConfig,
    resolution: usize,
) -> Result<f64> {
    use crate::nn::config::BlockOp;
    let c = &net.first_conv;
    let mut size = resolution.div_ceil(c.stride);
    let mut total = table.get(&format!(
        "Conv-input:{}-output:{}",
        hwc(resolution, c.in_channels),
        hwc(size, c.out_channels)
    ))?;
    for b in &net.blocks {
        if let BlockOp::MbConv(m) = &b.op {
            total += table.get(&mbconv_key(
                size,
                m.in_channels,
                m.out_channels,
                m.expand_ratio,
                m.kernel,
                m.stride,
                b.shortcut,
            ))?;
            size = size.div_ceil(m.stride);
        }
    }
    let mut channels = net.blocks.last().map_or(c.out_channels, |b| b.out_channels);
    if let Some(f) = &net.feature_mix {
        total += table.get(&format!(
            "Conv_1-input:{}-output:{}",
            hwc(size, f.in_channels),
            hwc(size, f.out_channels)
        ))?;
        channels = f.out_channels;
    }
    total += table.get(&format!(
        "Logits-input:{}-output:{}",
        hwc(size, channels),
        net.classifier.out_features
    ))?;
    Ok(total)
}
