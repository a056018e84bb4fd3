//! The weights file of a trained net: its tensors under the official names, with the input
//! normalisation it was trained with in the metadata.

use std::path::Path;

use anyhow::{bail, Result};

use crate::data::Normalize;
use crate::gpu::Gpu;
use crate::nn::Network;

/// The weights alone, under the official names (what `eval` and the reference code load),
/// with the input normalisation they were trained with in the metadata.
pub fn save_weights(gpu: &Gpu, net: &Network, path: &Path, norm: Option<Normalize>) -> Result<()> {
    let meta = norm.map(|n| {
        std::collections::HashMap::from([
            ("normalize_mean".to_string(), format!("{:?}", n.mean)),
            ("normalize_std".to_string(), format!("{:?}", n.std)),
        ])
    });
    crate::nn::params::save_safetensors(path, &net.params.to_host(gpu)?, meta)
}

/// The normalisation stored by [`save_weights`]: None when the weights carry none; an error
/// naming the key when it is there but not three numbers (with positive deviations).
pub fn stored_normalization(path: &Path) -> Result<Option<Normalize>> {
    let (_, meta) = crate::nn::params::load_safetensors(path)?;
    let keys = ["normalize_mean", "normalize_std"];
    if keys.iter().all(|k| !meta.contains_key(*k)) {
        return Ok(None);
    }
    let mut v = [[0.0f32; 3]; 2];
    for (k, out) in keys.iter().zip(&mut v) {
        let raw = meta.get(*k).map(String::as_str).unwrap_or("(missing)");
        *out = serde_json::from_str(raw).map_err(|_| {
            anyhow::anyhow!(
                "{}: metadata {k} is {raw:?}, not three numbers like [0.5, 0.5, 0.5]: pass --normalize data|imagenet|MEAN,STD",
                path.display()
            )
        })?;
    }
    let n = Normalize {
        mean: v[0],
        std: v[1],
    };
    if !n.usable() {
        bail!(
            "{}: stored normalisation {n:?} is not usable: pass --normalize data|imagenet|MEAN,STD",
            path.display()
        );
    }
    Ok(Some(n))
}

/// Loads weights saved by [`save_weights`] (or converted from the reference code) into `net`.
pub fn load_weights(gpu: &Gpu, net: &Network, path: &Path) -> Result<()> {
    let (tensors, _) = crate::nn::params::load_safetensors(path)?;
    net.params.load_from(gpu, &tensors, path)
}
