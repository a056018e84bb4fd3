//! Net configs in the official `ProxylessNASNets` JSON format (`net.config` of the reference
//! code): parsed into typed layer specs with errors that name the field, and written back.

use std::path::Path;

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

/// The activation after a conv layer's BN.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Act {
    None,
    Relu6,
}

/// `ConvLayer` (ops order weight, BN, activation).
#[derive(Clone, Debug, PartialEq)]
pub struct ConvSpec {
    pub in_channels: usize,
    pub out_channels: usize,
    pub kernel: usize,
    pub stride: usize,
    pub use_bn: bool,
    pub act: Act,
}

/// `MBInvertedConvLayer`: [1x1 expand, BN, ReLU6] (when expand != 1), depthwise k x k, BN,
/// ReLU6, 1x1 project, BN.
#[derive(Clone, Debug, PartialEq)]
pub struct MbConvSpec {
    pub in_channels: usize,
    pub out_channels: usize,
    pub kernel: usize,
    pub stride: usize,
    pub expand_ratio: usize,
    /// `mid_channels` when the config gives it, else round(in * expand).
    pub mid_channels: usize,
}

#[derive(Clone, Debug, PartialEq)]
pub enum BlockOp {
    MbConv(MbConvSpec),
    /// `ZeroLayer`: outputs zeros; with an identity shortcut the block is the identity.
    Zero {
        stride: usize,
    },
}

/// `MobileInvertedResidualBlock`: an op plus an optional identity shortcut.
#[derive(Clone, Debug, PartialEq)]
pub struct BlockSpec {
    pub op: BlockOp,
    pub shortcut: bool,
    pub in_channels: usize,
    pub out_channels: usize,
}

impl BlockSpec {
    pub fn stride(&self) -> usize {
        match &self.op {
            BlockOp::MbConv(m) => m.stride,
            BlockOp::Zero { stride } => *stride,
        }
    }
}

/// `LinearLayer` (optionally preceded by dropout, as the official ops order does).
#[derive(Clone, Debug, PartialEq)]
pub struct LinearSpec {
    pub in_features: usize,
    pub out_features: usize,
    pub bias: bool,
    pub dropout: f32,
}

#[derive(Clone, Debug, PartialEq)]
pub struct NetConfig {
    pub bn_momentum: f32,
    pub bn_eps: f32,
    pub first_conv: ConvSpec,
    pub blocks: Vec<BlockSpec>,
    pub feature_mix: Option<ConvSpec>,
    pub classifier: LinearSpec,
}

impl NetConfig {
    pub fn load(path: &Path) -> Result<NetConfig> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read net config {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("net config {}", path.display()))
    }

    pub fn parse(text: &str) -> Result<NetConfig> {
        let v: Value = serde_json::from_str(text).context("not valid JSON")?;
        let name = v.get("name").and_then(Value::as_str).unwrap_or("");
        if name != "ProxylessNASNets" {
            bail!("\"name\" is {name:?}; expected \"ProxylessNASNets\"");
        }
        let (bn_momentum, bn_eps) = match v.get("bn") {
            // PyTorch's BatchNorm2d defaults, which the official `build_from_config` keeps
            // when a config has no "bn" (its own configs all give one, with eps 1e-3).
            None | Some(Value::Null) => (0.1, 1e-5),
            Some(bn) => (
                num(bn, "momentum", "bn")? as f32,
                num(bn, "eps", "bn")? as f32,
            ),
        };
        if !(0.0..=1.0).contains(&bn_momentum)
            || bn_eps.partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater)
        {
            bail!("bn: momentum {bn_momentum} must be in [0, 1] and eps {bn_eps} > 0");
        }
        let first_conv = conv_layer(field(&v, "first_conv", "net")?, "first_conv")?;
        let blocks_v = field(&v, "blocks", "net")?
            .as_array()
            .context("\"blocks\" must be a list")?;
        let mut blocks = Vec::new();
        let mut channels = first_conv.out_channels;
        for (i, b) in blocks_v.iter().enumerate() {
            let at = format!("blocks[{i}]");
            let block = block(b, &at, channels)?;
            if block.in_channels != channels {
                bail!(
                    "{at}: takes {} input channels but the layer before gives {channels}: channels do not chain",
                    block.in_channels
                );
            }
            channels = block.out_channels;
            blocks.push(block);
        }
        let feature_mix = match v.get("feature_mix_layer") {
            None | Some(Value::Null) => None,
            Some(f) => Some(conv_layer(f, "feature_mix_layer")?),
        };
        if let Some(f) = &feature_mix {
            if f.in_channels != channels {
                bail!(
                    "feature_mix_layer: takes {} input channels but the last block gives {channels}: channels do not chain",
                    f.in_channels
                );
            }
            channels = f.out_channels;
        }
        let classifier = linear_layer(field(&v, "classifier", "net")?, "classifier")?;
        if classifier.in_features != channels {
            bail!(
                "classifier: takes {} features but the layer before gives {channels}: channels do not chain",
                classifier.in_features
            );
        }
        Ok(NetConfig {
            bn_momentum,
            bn_eps,
            first_conv,
            blocks,
            feature_mix,
            classifier,
        })
    }

    pub fn classes(&self) -> usize {
        self.classifier.out_features
    }

    /// The official JSON form.
    pub fn to_json(&self) -> Value {
        let conv = |c: &ConvSpec| {
            json!({
                "name": "ConvLayer", "kernel_size": c.kernel, "stride": c.stride, "dilation": 1,
                "groups": 1, "bias": false, "has_shuffle": false,
                "in_channels": c.in_channels, "out_channels": c.out_channels,
                "use_bn": c.use_bn,
                "act_func": match c.act { Act::Relu6 => json!("relu6"), Act::None => Value::Null },
                "dropout_rate": 0, "ops_order": "weight_bn_act"
            })
        };
        let blocks: Vec<Value> = self
            .blocks
            .iter()
            .map(|b| {
                let op = match &b.op {
                    BlockOp::MbConv(m) => {
                        let mut o = json!({
                            "name": "MBInvertedConvLayer", "in_channels": m.in_channels,
                            "out_channels": m.out_channels, "kernel_size": m.kernel,
                            "stride": m.stride, "expand_ratio": m.expand_ratio
                        });
                        if m.mid_channels != default_mid(m.in_channels, m.expand_ratio) {
                            o["mid_channels"] = json!(m.mid_channels);
                        }
                        o
                    }
                    BlockOp::Zero { stride } => json!({"name": "ZeroLayer", "stride": stride}),
                };
                let shortcut = if b.shortcut {
                    json!({
                        "name": "IdentityLayer", "in_channels": b.in_channels,
                        "out_channels": b.out_channels, "use_bn": false, "act_func": null,
                        "dropout_rate": 0, "ops_order": "weight_bn_act"
                    })
                } else {
                    Value::Null
                };
                json!({"name": "MobileInvertedResidualBlock", "mobile_inverted_conv": op, "shortcut": shortcut})
            })
            .collect();
        let c = &self.classifier;
        json!({
            "name": "ProxylessNASNets",
            "bn": {"momentum": self.bn_momentum, "eps": self.bn_eps},
            "first_conv": conv(&self.first_conv),
            "feature_mix_layer": self.feature_mix.as_ref().map(conv).unwrap_or(Value::Null),
            "classifier": {
                "name": "LinearLayer", "in_features": c.in_features, "out_features": c.out_features,
                "bias": c.bias, "use_bn": false, "act_func": null, "dropout_rate": c.dropout,
                "ops_order": "weight_bn_act"
            },
            "blocks": blocks
        })
    }
}

/// round(in * expand), as the official `MBInvertedConvLayer` computes its middle width.
pub fn default_mid(in_channels: usize, expand_ratio: usize) -> usize {
    in_channels * expand_ratio
}

fn field<'a>(v: &'a Value, key: &str, at: &str) -> Result<&'a Value> {
    v.get(key)
        .with_context(|| format!("{at}: missing field \"{key}\""))
}

fn num(v: &Value, key: &str, at: &str) -> Result<f64> {
    field(v, key, at)?
        .as_f64()
        .with_context(|| format!("{at}: \"{key}\" must be a number"))
}

fn count(v: &Value, key: &str, at: &str) -> Result<usize> {
    let x = field(v, key, at)?;
    match x.as_u64() {
        Some(n) if n > 0 => Ok(n as usize),
        _ => bail!("{at}: \"{key}\" must be a positive integer, got {x}"),
    }
}

fn flag(v: &Value, key: &str, default: bool) -> bool {
    v.get(key).and_then(Value::as_bool).unwrap_or(default)
}

fn layer_name<'a>(v: &'a Value, at: &str) -> Result<&'a str> {
    field(v, "name", at)?
        .as_str()
        .with_context(|| format!("{at}: \"name\" must be a string"))
}

fn act(v: &Value, at: &str) -> Result<Act> {
    match v.get("act_func") {
        None | Some(Value::Null) => Ok(Act::None),
        Some(Value::String(s)) if s == "relu6" => Ok(Act::Relu6),
        Some(other) => bail!("{at}: act_func {other} is not supported (relu6 or null)"),
    }
}

fn no_dropout(v: &Value, at: &str) -> Result<()> {
    let d = v.get("dropout_rate").and_then(Value::as_f64).unwrap_or(0.0);
    if d != 0.0 {
        bail!("{at}: dropout_rate {d} on a conv layer is not supported");
    }
    Ok(())
}

fn conv_layer(v: &Value, at: &str) -> Result<ConvSpec> {
    let name = layer_name(v, at)?;
    if name != "ConvLayer" {
        bail!("{at}: unknown layer name {name:?} here (expected \"ConvLayer\")");
    }
    for (key, want) in [("dilation", 1), ("groups", 1)] {
        if let Some(x) = v.get(key) {
            if x.as_u64() != Some(want) {
                bail!("{at}: {key} {x} is not supported (only {want})");
            }
        }
    }
    if flag(v, "bias", false) || flag(v, "has_shuffle", false) {
        bail!("{at}: conv bias and channel shuffle are not supported");
    }
    if let Some(o) = v.get("ops_order").and_then(Value::as_str) {
        if o != "weight_bn_act" {
            bail!("{at}: ops_order {o:?} is not supported (weight_bn_act)");
        }
    }
    no_dropout(v, at)?;
    let kernel = count(v, "kernel_size", at)?;
    if kernel % 2 == 0 {
        bail!("{at}: kernel_size {kernel} must be odd");
    }
    Ok(ConvSpec {
        in_channels: count(v, "in_channels", at)?,
        out_channels: count(v, "out_channels", at)?,
        kernel,
        stride: count(v, "stride", at)?,
        use_bn: flag(v, "use_bn", true),
        act: act(v, at)?,
    })
}

fn linear_layer(v: &Value, at: &str) -> Result<LinearSpec> {
    let name = layer_name(v, at)?;
    if name != "LinearLayer" {
        bail!("{at}: unknown layer name {name:?} here (expected \"LinearLayer\")");
    }
    if flag(v, "use_bn", false) || act(v, at)? != Act::None {
        bail!("{at}: BN or an activation on the classifier is not supported");
    }
    let dropout = v.get("dropout_rate").and_then(Value::as_f64).unwrap_or(0.0) as f32;
    if !(0.0..1.0).contains(&dropout) {
        bail!("{at}: dropout_rate {dropout} must be in [0, 1)");
    }
    Ok(LinearSpec {
        in_features: count(v, "in_features", at)?,
        out_features: count(v, "out_features", at)?,
        bias: flag(v, "bias", true),
        dropout,
    })
}

fn block(v: &Value, at: &str, channels_in: usize) -> Result<BlockSpec> {
    let name = layer_name(v, at)?;
    if name != "MobileInvertedResidualBlock" {
        bail!("{at}: unknown layer name {name:?} (expected \"MobileInvertedResidualBlock\")");
    }
    let op_at = format!("{at}.mobile_inverted_conv");
    let op_v = field(v, "mobile_inverted_conv", at)?;
    let shortcut = match v.get("shortcut") {
        None | Some(Value::Null) => None,
        Some(s) => {
            let s_at = format!("{at}.shortcut");
            let n = layer_name(s, &s_at)?;
            if n != "IdentityLayer" {
                bail!("{s_at}: unknown layer name {n:?} (expected \"IdentityLayer\" or null)");
            }
            let (i, o) = (
                count(s, "in_channels", &s_at)?,
                count(s, "out_channels", &s_at)?,
            );
            if i != o {
                bail!("{s_at}: an identity shortcut needs in_channels == out_channels, got {i} and {o}");
            }
            Some(i)
        }
    };
    let op = match layer_name(op_v, &op_at)? {
        "MBInvertedConvLayer" => {
            let in_channels = count(op_v, "in_channels", &op_at)?;
            let expand_ratio = count(op_v, "expand_ratio", &op_at)?;
            let kernel = count(op_v, "kernel_size", &op_at)?;
            if ![3, 5, 7].contains(&kernel) {
                bail!("{op_at}: kernel_size {kernel} is not supported (3, 5 or 7)");
            }
            let stride = count(op_v, "stride", &op_at)?;
            if ![1, 2].contains(&stride) {
                bail!("{op_at}: stride {stride} is not supported (1 or 2)");
            }
            let mid_channels = match op_v.get("mid_channels") {
                None | Some(Value::Null) => default_mid(in_channels, expand_ratio),
                Some(_) => count(op_v, "mid_channels", &op_at)?,
            };
            BlockOp::MbConv(MbConvSpec {
                in_channels,
                out_channels: count(op_v, "out_channels", &op_at)?,
                kernel,
                stride,
                expand_ratio,
                mid_channels,
            })
        }
        "ZeroLayer" => BlockOp::Zero {
            stride: count(op_v, "stride", &op_at)?,
        },
        other => bail!(
            "{op_at}: unknown layer name {other:?} (expected \"MBInvertedConvLayer\" or \"ZeroLayer\")"
        ),
    };
    let (in_channels, out_channels) = match &op {
        BlockOp::MbConv(m) => (m.in_channels, m.out_channels),
        // A zero op keeps the width it is given (its shortcut says so when present).
        BlockOp::Zero { .. } => {
            let c = shortcut.unwrap_or(channels_in);
            (c, c)
        }
    };
    let spec = BlockSpec {
        op,
        shortcut: shortcut.is_some(),
        in_channels,
        out_channels,
    };
    if let Some(c) = shortcut {
        if spec.stride() != 1 || c != in_channels || c != out_channels {
            bail!(
                "{at}: an identity shortcut needs stride 1 and {c} channels in and out; the op has stride {} and {in_channels} -> {out_channels}",
                spec.stride()
            );
        }
    }
    if let BlockOp::Zero { stride } = spec.op {
        if !spec.shortcut {
            bail!("{at}: a ZeroLayer without a shortcut (stride {stride}) outputs zeros; not supported");
        }
    }
    Ok(spec)
}
