//! The whole network of a net config: stem, blocks, feature mix, pooling, classifier.

use std::rc::Rc;

use anyhow::{bail, Result};

use crate::autograd::{Tape, Var};
use crate::gpu::{Gpu, Tensor};

use super::config::{BlockOp, NetConfig};
use super::layers::{Builder, ConvBnAct, Ctx, Linear, MbConv};
use super::params::{seeded, ParamStore};

/// One block: an MBConv (with or without the identity shortcut), or the identity (a
/// `ZeroLayer` with a shortcut: the block is skipped).
#[derive(Clone, Debug)]
pub enum Block {
    MbConv { op: Box<MbConv>, shortcut: bool },
    Identity { channels: usize },
}

pub struct Network {
    pub config: NetConfig,
    pub params: ParamStore,
    pub first_conv: ConvBnAct,
    pub blocks: Vec<Block>,
    pub feature_mix: Option<ConvBnAct>,
    pub classifier: Linear,
    zero_bias: Rc<Tensor>,
}

/// One row of the layer table of `proxyless info`.
#[derive(Clone, Debug)]
pub struct LayerRow {
    pub name: String,
    pub kind: String,
    pub input: [usize; 3],
    pub output: [usize; 3],
    pub params: usize,
    pub macs: u64,
}

impl Network {
    /// Builds the net with freshly initialised weights (DESIGN.md section 4), from `seed`.
    pub fn new(gpu: &Gpu, config: &NetConfig, seed: u64) -> Result<Network> {
        let mut rng = seeded(seed);
        let mut store = ParamStore::default();
        let mut b = Builder {
            gpu,
            rng: &mut rng,
            store: &mut store,
        };
        let first_conv = ConvBnAct::from_spec(&mut b, "first_conv", &config.first_conv)?;
        let mut blocks = Vec::new();
        for (i, spec) in config.blocks.iter().enumerate() {
            blocks.push(match &spec.op {
                BlockOp::MbConv(m) => Block::MbConv {
                    op: Box::new(MbConv::new(
                        &mut b,
                        &format!("blocks.{i}.mobile_inverted_conv"),
                        m,
                    )?),
                    shortcut: spec.shortcut,
                },
                BlockOp::Zero { .. } => Block::Identity {
                    channels: spec.in_channels,
                },
            });
        }
        let feature_mix = match &config.feature_mix {
            Some(f) => Some(ConvBnAct::from_spec(&mut b, "feature_mix_layer", f)?),
            None => None,
        };
        let c = &config.classifier;
        let classifier = Linear::new(
            &mut b,
            "classifier.linear",
            c.in_features,
            c.out_features,
            c.bias,
            c.dropout,
        )?;
        let zero_bias = Rc::new(gpu.upload(&vec![0f32; c.out_features], &[c.out_features])?);
        Ok(Network {
            config: config.clone(),
            params: store,
            first_conv,
            blocks,
            feature_mix,
            classifier,
            zero_bias,
        })
    }

    /// Logits `[n, classes]` for images `x` `[n, h, w, 3]` (NHWC).
    pub fn forward(&self, tape: &Tape, x: &Var, train: bool) -> Result<Var> {
        let s = x.shape();
        if s.len() != 4 || s[3] != self.config.first_conv.in_channels {
            bail!(
                "the net takes images [n, h, w, {}], got {:?}",
                self.config.first_conv.in_channels,
                s
            );
        }
        let ctx = Ctx {
            tape,
            params: &self.params,
            train,
            bn_momentum: self.config.bn_momentum,
            bn_eps: self.config.bn_eps,
        };
        let mut h = self.first_conv.forward(&ctx, x)?;
        for block in &self.blocks {
            h = match block {
                Block::MbConv { op, shortcut } => {
                    let out = if *shortcut {
                        op.forward_residual(&ctx, &h)?
                    } else {
                        op.forward(&ctx, &h)?
                    };
                    if train {
                        // Only the expand conv's weight gradient reads the block input now.
                        tape.texture_only(&h);
                    }
                    out
                }
                Block::Identity { .. } => h,
            };
        }
        if let Some(f) = &self.feature_mix {
            h = f.forward(&ctx, &h)?;
        }
        let pooled = tape.global_avg_pool(&h)?;
        drop(h);
        let zero = tape.constant_shared(&self.zero_bias);
        self.classifier.forward(&ctx, &pooled, &zero)
    }

    /// The layer table at input resolution `size` (square).
    /// The most floats one image's activation takes in this net at input `size`: the largest
    /// input or output of any conv, the expanded ones inside MBConv blocks included. A batch of
    /// more images than a storage binding holds of these is cut into parts.
    pub fn largest_activation_floats(&self, size: usize) -> usize {
        let conv = |c: &ConvBnAct, s: usize| {
            let o = c.out_size(s);
            (s * s * c.in_channels).max(o * o * c.out_channels)
        };
        let mut s = size;
        let mut most = conv(&self.first_conv, s);
        s = self.first_conv.out_size(s);
        for block in &self.blocks {
            if let Block::MbConv { op, .. } = block {
                if let Some(e) = &op.expand {
                    most = most.max(conv(e, s));
                }
                most = most.max(conv(&op.depth, s));
                most = most.max(conv(&op.project, op.depth.out_size(s)));
                s = op.out_size(s);
            }
        }
        if let Some(f) = &self.feature_mix {
            most = most.max(conv(f, s));
        }
        most
    }

    pub fn layers(&self, size: usize) -> Vec<LayerRow> {
        let params_of = |c: &ConvBnAct| {
            let mut n = self.params.get(c.weight).numel();
            if let Some(bn) = &c.bn {
                n += self.params.get(bn.gamma).numel() + self.params.get(bn.beta).numel();
            }
            n
        };
        let mut rows = Vec::new();
        let conv_row = |name: &str, c: &ConvBnAct, s: usize| LayerRow {
            name: name.into(),
            kind: format!("ConvLayer k{} s{}", c.kernel, c.stride),
            input: [s, s, c.in_channels],
            output: [c.out_size(s), c.out_size(s), c.out_channels],
            params: params_of(c),
            macs: c.macs(s),
        };
        let mut s = size;
        rows.push(conv_row("first_conv", &self.first_conv, s));
        s = self.first_conv.out_size(s);
        for (i, block) in self.blocks.iter().enumerate() {
            let name = format!("blocks.{i}");
            match block {
                Block::MbConv { op, shortcut } => {
                    let m = &op.spec;
                    let mut p = params_of(&op.depth) + params_of(&op.project);
                    if let Some(e) = &op.expand {
                        p += params_of(e);
                    }
                    let o = op.out_size(s);
                    rows.push(LayerRow {
                        name,
                        kind: format!(
                            "MBConv k{} e{} s{}{}",
                            m.kernel,
                            m.expand_ratio,
                            m.stride,
                            if *shortcut { " +id" } else { "" }
                        ),
                        input: [s, s, m.in_channels],
                        output: [o, o, m.out_channels],
                        params: p,
                        macs: op.macs(s),
                    });
                    s = o;
                }
                Block::Identity { channels } => rows.push(LayerRow {
                    name,
                    kind: "Zero +id (skipped)".into(),
                    input: [s, s, *channels],
                    output: [s, s, *channels],
                    params: 0,
                    macs: 0,
                }),
            }
        }
        if let Some(f) = &self.feature_mix {
            rows.push(conv_row("feature_mix_layer", f, s));
            s = f.out_size(s);
        }
        let c = &self.classifier;
        let bias = c.bias.map_or(0, |b| self.params.get(b).numel());
        rows.push(LayerRow {
            name: "classifier".into(),
            kind: "LinearLayer".into(),
            input: [1, 1, c.in_features],
            output: [1, 1, c.out_features],
            params: self.params.get(c.weight).numel() + bias,
            macs: c.macs(),
        });
        let _ = s;
        rows
    }
}
