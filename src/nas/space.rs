//! Search spaces (DESIGN.md section 4, the official `super_proxyless.py` layout): a stem, a
//! fixed first block, 21 mixed layers in six stages, feature mix and classifier.

use anyhow::{bail, Result};

use crate::nn::config::{Act, BlockOp, BlockSpec, ConvSpec, LinearSpec, MbConvSpec, NetConfig};

/// One candidate of a mixed layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Candidate {
    MbConv {
        kernel: usize,
        expand: usize,
    },
    /// The block is skipped (output = input); only where stride 1 and in == out.
    Zero,
}

impl Candidate {
    /// The official op name (`3x3_MBConv6`, `Zero`).
    pub fn name(&self) -> String {
        match self {
            Candidate::MbConv { kernel, expand } => format!("{kernel}x{kernel}_MBConv{expand}"),
            Candidate::Zero => "Zero".into(),
        }
    }
}

/// The six MBConv candidates, in the official order.
pub const MBCONV_CANDIDATES: [Candidate; 6] = [
    Candidate::MbConv {
        kernel: 3,
        expand: 3,
    },
    Candidate::MbConv {
        kernel: 3,
        expand: 6,
    },
    Candidate::MbConv {
        kernel: 5,
        expand: 3,
    },
    Candidate::MbConv {
        kernel: 5,
        expand: 6,
    },
    Candidate::MbConv {
        kernel: 7,
        expand: 3,
    },
    Candidate::MbConv {
        kernel: 7,
        expand: 6,
    },
];

/// A mixed layer: its shapes and candidates (Zero last where allowed).
#[derive(Clone, Debug, PartialEq)]
pub struct MixedLayerSpec {
    pub in_channels: usize,
    pub out_channels: usize,
    pub stride: usize,
    /// Input resolution (square).
    pub input_size: usize,
    pub candidates: Vec<Candidate>,
}

impl MixedLayerSpec {
    /// Whether the block has an identity shortcut (stride 1, in == out): then Zero is allowed.
    pub fn residual(&self) -> bool {
        self.stride == 1 && self.in_channels == self.out_channels
    }

    pub fn output_size(&self) -> usize {
        self.input_size.div_ceil(self.stride)
    }

    /// The MBConv of kernel `kernel` and expansion `expand` at this layer's shapes.
    pub fn mbconv(&self, kernel: usize, expand: usize) -> MbConvSpec {
        MbConvSpec {
            in_channels: self.in_channels,
            out_channels: self.out_channels,
            kernel,
            stride: self.stride,
            expand_ratio: expand,
            mid_channels: self.in_channels * expand,
        }
    }
}

/// A whole search space at a width multiplier.
#[derive(Clone, Debug, PartialEq)]
pub struct SearchSpace {
    pub name: String,
    pub resolution: usize,
    pub classes: usize,
    pub width: f64,
    pub first_conv: ConvSpec,
    /// The fixed first block (MBConv expand 1, k3, no shortcut).
    pub first_block: MbConvSpec,
    pub layers: Vec<MixedLayerSpec>,
    pub feature_mix: ConvSpec,
    pub classifier: LinearSpec,
}

impl SearchSpace {
    /// Floats of the largest tensor one image makes anywhere in the supernet: the stem's
    /// output, and for every candidate its expanded input (at the layer's input size) and its
    /// depthwise output. A batch is split so that a batch part times this fits one storage
    /// binding (`samples_per_binding`).
    pub fn largest_activation_floats(&self) -> usize {
        let stem = self.resolution.div_ceil(self.first_conv.stride);
        let mut most = stem
            * stem
            * self
                .first_conv
                .out_channels
                .max(self.first_block.mid_channels);
        for l in &self.layers {
            for c in &l.candidates {
                if let Candidate::MbConv { expand, .. } = *c {
                    let mid = l.in_channels * expand;
                    most = most.max(l.input_size * l.input_size * mid);
                }
            }
        }
        most
    }

    /// Images per batch part so that no tensor is over one storage binding of `max_bytes`.
    pub fn samples_per_binding(&self, max_bytes: u64) -> usize {
        ((max_bytes / (4 * self.largest_activation_floats() as u64)) as usize).max(1)
    }
}

/// Rounds `v` to a multiple of `divisor`, never below 90% of `v` (the official
/// `make_divisible` of the MobileNet code).
pub fn make_divisible(v: f64, divisor: usize) -> usize {
    let d = divisor as f64;
    let mut new = (((v + d / 2.0) / d).floor() * d).max(d);
    if new < 0.9 * v {
        new += d;
    }
    new as usize
}

/// Names of the spaces `space` knows.
pub const SPACES: &[&str] = &["cifar", "imagenet"];

impl SearchSpace {
    /// `cifar` (32 px, stem stride 1, first stage stride 1) or `imagenet` (224 px, stride 2
    /// both); channels scaled by `width`; `classes` outputs.
    pub fn new(name: &str, width: f64, classes: usize) -> Result<SearchSpace> {
        let (resolution, stem_stride, first_stage_stride) = match name {
            "cifar" => (32usize, 1usize, 1usize),
            "imagenet" => (224, 2, 2),
            other => bail!(
                "unknown search space {other:?}; valid: {}",
                SPACES.join(", ")
            ),
        };
        if !(width.is_finite() && width > 0.0 && width <= 4.0) {
            bail!("width multiplier {width} must be in (0, 4]");
        }
        if classes < 2 {
            bail!("a classifier needs at least 2 classes, got {classes}");
        }
        let c = |v: usize| make_divisible(v as f64 * width, 8);
        let stem = c(32);
        let first_out = c(16);
        let stages = [
            (c(24), 4, first_stage_stride),
            (c(40), 4, 2),
            (c(80), 4, 2),
            (c(96), 4, 1),
            (c(192), 4, 2),
            (c(320), 1, 1),
        ];
        let mut size = resolution.div_ceil(stem_stride);
        let mut channels = first_out;
        let mut layers = Vec::new();
        for (out, blocks, stride) in stages {
            for i in 0..blocks {
                let s = if i == 0 { stride } else { 1 };
                let mut l = MixedLayerSpec {
                    in_channels: channels,
                    out_channels: out,
                    stride: s,
                    input_size: size,
                    candidates: MBCONV_CANDIDATES.to_vec(),
                };
                if l.residual() {
                    l.candidates.push(Candidate::Zero);
                }
                size = l.output_size();
                channels = out;
                layers.push(l);
            }
        }
        let last = if width > 1.0 { c(1280) } else { 1280 };
        Ok(SearchSpace {
            name: name.into(),
            resolution,
            classes,
            width,
            first_conv: ConvSpec {
                in_channels: 3,
                out_channels: stem,
                kernel: 3,
                stride: stem_stride,
                use_bn: true,
                act: Act::Relu6,
            },
            first_block: MbConvSpec {
                in_channels: stem,
                out_channels: first_out,
                kernel: 3,
                stride: 1,
                expand_ratio: 1,
                mid_channels: stem,
            },
            layers,
            feature_mix: ConvSpec {
                in_channels: channels,
                out_channels: last,
                kernel: 1,
                stride: 1,
                use_bn: true,
                act: Act::Relu6,
            },
            classifier: LinearSpec {
                in_features: last,
                out_features: classes,
                bias: true,
                dropout: 0.0,
            },
        })
    }

    /// The candidate index per mixed layer of a net derived from this space (the inverse of
    /// [`SearchSpace::derive`]); an error names the first block that is not a candidate.
    pub fn choice_of(&self, config: &NetConfig) -> Result<Vec<usize>> {
        if config.blocks.len() != self.layers.len() + 1 {
            bail!(
                "the net has {} blocks, the space {} mixed layers and a fixed first block: \
                 was it derived from another space or width?",
                config.blocks.len(),
                self.layers.len()
            );
        }
        let mut choice = Vec::new();
        for (i, (l, b)) in self.layers.iter().zip(&config.blocks[1..]).enumerate() {
            let want = match &b.op {
                BlockOp::MbConv(m) => Candidate::MbConv {
                    kernel: m.kernel,
                    expand: m.expand_ratio,
                },
                BlockOp::Zero { .. } => Candidate::Zero,
            };
            match l.candidates.iter().position(|&c| c == want) {
                Some(k) => choice.push(k),
                None => bail!("block {} is not a candidate of mixed layer {i}", i + 1),
            }
        }
        Ok(choice)
    }

    /// The op names of an architecture, one per mixed layer (`5x5_MBConv3`, `Zero`, ...).
    pub fn op_names(&self, choice: &[usize]) -> Vec<String> {
        choice
            .iter()
            .zip(&self.layers)
            .map(|(&k, l)| l.candidates[k].name())
            .collect()
    }

    /// The net that takes candidate `choice[i]` at mixed layer i (Zero removes the block).
    pub fn derive(&self, choice: &[usize]) -> Result<NetConfig> {
        if choice.len() != self.layers.len() {
            bail!(
                "an architecture needs one choice per mixed layer ({}), got {}",
                self.layers.len(),
                choice.len()
            );
        }
        let mut blocks = vec![BlockSpec {
            op: BlockOp::MbConv(self.first_block.clone()),
            shortcut: false,
            in_channels: self.first_block.in_channels,
            out_channels: self.first_block.out_channels,
        }];
        for (l, &k) in self.layers.iter().zip(choice) {
            let Some(cand) = l.candidates.get(k) else {
                bail!(
                    "choice {k} out of range for a layer of {} candidates",
                    l.candidates.len()
                );
            };
            let op = match *cand {
                Candidate::MbConv { kernel, expand } => BlockOp::MbConv(l.mbconv(kernel, expand)),
                Candidate::Zero => BlockOp::Zero { stride: 1 },
            };
            blocks.push(BlockSpec {
                op,
                shortcut: l.residual(),
                in_channels: l.in_channels,
                out_channels: l.out_channels,
            });
        }
        Ok(NetConfig {
            bn_momentum: 0.1,
            bn_eps: 1e-3,
            first_conv: self.first_conv.clone(),
            blocks,
            feature_mix: Some(self.feature_mix.clone()),
            classifier: self.classifier.clone(),
        })
    }
}

/// Multiply-accumulates of an MBConv at input `size` (the official count: 1x1 expand, depthwise,
/// 1x1 project).
fn mbconv_macs(
    size: usize,
    cin: usize,
    cout: usize,
    kernel: usize,
    stride: usize,
    expand: usize,
) -> f64 {
    let mid = cin * expand;
    let out = size.div_ceil(stride);
    let expand_macs = if expand == 1 {
        0
    } else {
        cin * mid * size * size
    };
    (expand_macs + mid * kernel * kernel * out * out + mid * cout * out * out) as f64
}

impl SearchSpace {
    /// Millions of multiply-accumulates: the fixed part (stem, first block, feature mix,
    /// classifier) and every candidate of every mixed layer (Zero: 0). `--objective flops`.
    pub fn macs(&self) -> (f64, Vec<Vec<f64>>) {
        let c = &self.first_conv;
        let s0 = self.resolution.div_ceil(c.stride);
        let stem = (c.in_channels * c.out_channels * c.kernel * c.kernel * s0 * s0) as f64;
        let b = &self.first_block;
        let first = mbconv_macs(s0, b.in_channels, b.out_channels, b.kernel, 1, 1);
        let last = self.layers.last().map_or(s0, |l| l.output_size());
        let f = &self.feature_mix;
        let mix = (f.in_channels * f.out_channels * last * last) as f64;
        let cls = (self.classifier.in_features * self.classifier.out_features) as f64;
        let per = self
            .layers
            .iter()
            .map(|l| {
                l.candidates
                    .iter()
                    .map(|c| match *c {
                        Candidate::MbConv { kernel, expand } => {
                            mbconv_macs(
                                l.input_size,
                                l.in_channels,
                                l.out_channels,
                                kernel,
                                l.stride,
                                expand,
                            ) / 1e6
                        }
                        Candidate::Zero => 0.0,
                    })
                    .collect()
            })
            .collect();
        ((stem + first + mix + cls) / 1e6, per)
    }
}
