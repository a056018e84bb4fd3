//! Per-channel normalisation `(x / 255 - mean) / std`, so inputs are centred whatever the data.

use anyhow::{bail, Result};

use super::Dataset;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Normalize {
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

/// Images [`Normalize::of`] looks at: enough for three-digit precision, quick on any set.
const STATS_IMAGES: usize = 10_000;

impl Normalize {
    /// Mean and standard deviation of the CIFAR-10 training set (all 50,000 images, population
    /// std), as measured by [`Normalize::of`].
    pub const CIFAR10: Normalize = Normalize {
        mean: [0.4914, 0.4822, 0.4465],
        std: [0.2470, 0.2435, 0.2616],
    };

    /// The ImageNet constants that torchvision models (and the official ProxylessNAS code) use.
    pub const IMAGENET: Normalize = Normalize {
        mean: [0.485, 0.456, 0.406],
        std: [0.229, 0.224, 0.225],
    };

    /// Leaves values in [0, 1]: for tests and for looking at what the net sees.
    pub const IDENTITY: Normalize = Normalize {
        mean: [0.0; 3],
        std: [1.0; 3],
    };

    /// Statistics of the first 10,000 images of `data` (all of a smaller set). A channel that
    /// never changes gets std 1 rather than a division by zero.
    pub fn of(data: &Dataset) -> Normalize {
        let n = data.len().min(STATS_IMAGES);
        let bytes = &data.images[..n * data.image_bytes()];
        let mut sum = [0u64; 3];
        let mut sq = [0u64; 3];
        for px in bytes.chunks_exact(3) {
            for c in 0..3 {
                let v = px[c] as u64;
                sum[c] += v;
                sq[c] += v * v;
            }
        }
        let count = (bytes.len() / 3).max(1) as f64;
        let mut out = Normalize::IDENTITY;
        for c in 0..3 {
            let mean = sum[c] as f64 / count / 255.0;
            let var = (sq[c] as f64 / count / (255.0 * 255.0) - mean * mean).max(0.0);
            out.mean[c] = mean as f32;
            out.std[c] = if var.sqrt() < 1e-6 {
                1.0
            } else {
                var.sqrt() as f32
            };
        }
        out
    }

    /// Byte value -> normalised value, per channel: 768 entries computed once per batch, so
    /// every pixel costs a load instead of a divide.
    pub(crate) fn table(&self) -> [[f32; 256]; 3] {
        let mut t = [[0.0f32; 256]; 3];
        for (c, row) in t.iter_mut().enumerate() {
            for (v, out) in row.iter_mut().enumerate() {
                *out = (v as f32 / 255.0 - self.mean[c]) / self.std[c];
            }
        }
        t
    }

    /// One value, for callers that normalise outside the loader.
    pub fn apply(&self, channel: usize, byte: u8) -> f32 {
        (byte as f32 / 255.0 - self.mean[channel]) / self.std[channel]
    }
}

/// What `--normalize` asks for when weights carry no usable normalisation of their own.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum NormalizeChoice {
    /// The statistics of the training images of `--data`.
    Data,
    /// Fixed constants: `imagenet`, or given as MEAN,STD (every channel) or m1,m2,m3,s1,s2,s3.
    Fixed(Normalize),
}

impl NormalizeChoice {
    pub fn parse(s: &str) -> Result<NormalizeChoice> {
        let forms = "data, imagenet, MEAN,STD or m1,m2,m3,s1,s2,s3 (on pixels scaled to [0, 1])";
        match s {
            "data" => return Ok(NormalizeChoice::Data),
            "imagenet" => return Ok(NormalizeChoice::Fixed(Normalize::IMAGENET)),
            _ => {}
        }
        let v: Vec<f32> = s
            .split(',')
            .map(|t| t.trim().parse::<f32>())
            .collect::<std::result::Result<_, _>>()
            .map_err(|_| anyhow::anyhow!("--normalize {s:?}: expected {forms}"))?;
        let n = match v[..] {
            [m, d] => Normalize {
                mean: [m; 3],
                std: [d; 3],
            },
            [m0, m1, m2, d0, d1, d2] => Normalize {
                mean: [m0, m1, m2],
                std: [d0, d1, d2],
            },
            _ => bail!("--normalize {s:?}: {} numbers; expected {forms}", v.len()),
        };
        if !n.usable() {
            bail!("--normalize {s:?}: means must be finite and standard deviations above 0");
        }
        Ok(NormalizeChoice::Fixed(n))
    }
}

impl Normalize {
    /// Finite means and positive, finite standard deviations.
    pub fn usable(&self) -> bool {
        self.mean.iter().all(|m| m.is_finite())
            && self.std.iter().all(|d| d.is_finite() && *d > 0.0)
    }
}
