//! Named parameters with the official PyTorch names and shapes, their initialisation, and
//! safetensors files.

use std::collections::HashMap;
use std::path::Path;
use std::rc::Rc;

use anyhow::{bail, Context, Result};
use rand::{Rng, SeedableRng};

use crate::gpu::{Gpu, Tensor};

/// What a tensor is to the optimizer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Conv or linear weight: trained, weight-decayed.
    Weight,
    /// BN scale, BN shift, linear bias: trained, never decayed.
    NoDecay,
    /// BN running statistics: state, not trained.
    Buffer,
}

/// A tensor on the host: official name, shape, data.
pub type HostTensor = (String, Vec<usize>, Vec<f32>);
/// Tensors of a safetensors file by name: (shape, data).
pub type TensorMap = HashMap<String, (Vec<usize>, Vec<f32>)>;

#[derive(Debug)]
pub struct Param {
    /// Official name, e.g. `blocks.3.mobile_inverted_conv.depth_conv.conv.weight`.
    pub name: String,
    /// Official (PyTorch) shape; the device tensor has the same elements in the same order,
    /// its shape may drop unit axes (`[c, 1, k, k]` is held as `[c, k, k]`).
    pub shape: Vec<usize>,
    pub value: Rc<Tensor>,
    pub role: Role,
}

impl Param {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    pub fn trainable(&self) -> bool {
        self.role != Role::Buffer
    }
}

/// How a new parameter is filled.
#[derive(Clone, Copy, Debug)]
pub enum Init {
    /// N(0, sqrt(2 / fan_out)): conv weights (DESIGN.md section 4).
    NormalFanOut(usize),
    /// U(-b, b): linear weights, b = 1/sqrt(in).
    Uniform(f32),
    Constant(f32),
}

/// Every parameter and buffer of a network, in creation order.
#[derive(Debug, Default)]
pub struct ParamStore {
    pub params: Vec<Param>,
}

impl ParamStore {
    /// Adds a parameter; returns its index. `device_shape` is the shape the kernels take.
    // Each argument is one property of the new tensor.
    #[allow(clippy::too_many_arguments)]
    pub fn add(
        &mut self,
        gpu: &Gpu,
        rng: &mut rand::rngs::StdRng,
        name: String,
        shape: Vec<usize>,
        device_shape: &[usize],
        role: Role,
        init: Init,
    ) -> Result<usize> {
        let n: usize = shape.iter().product();
        let data: Vec<f32> = match init {
            Init::Constant(c) => vec![c; n],
            Init::Uniform(b) => (0..n).map(|_| rng.random_range(-b..=b)).collect(),
            Init::NormalFanOut(fan_out) => {
                let std = (2.0 / fan_out as f64).sqrt();
                (0..n).map(|_| (normal(rng) * std) as f32).collect()
            }
        };
        let value = Rc::new(gpu.upload(&data, device_shape)?);
        self.params.push(Param {
            name,
            shape,
            value,
            role,
        });
        Ok(self.params.len() - 1)
    }

    pub fn get(&self, i: usize) -> &Param {
        &self.params[i]
    }

    /// Trainable elements: weights, BN scale and shift, biases (not running statistics).
    pub fn trainable_count(&self) -> usize {
        self.params
            .iter()
            .filter(|p| p.trainable())
            .map(Param::numel)
            .sum()
    }

    pub fn bytes(&self) -> u64 {
        self.params.iter().map(|p| p.numel() as u64 * 4).sum()
    }

    /// The BN running statistics, in order.
    pub fn buffers(&self) -> Vec<&Tensor> {
        self.params
            .iter()
            .filter(|p| p.role == Role::Buffer)
            .map(|p| &*p.value)
            .collect()
    }

    /// Every tensor with its official name and shape, read back from the device.
    pub fn to_host(&self, gpu: &Gpu) -> Result<Vec<HostTensor>> {
        self.params
            .iter()
            .map(|p| Ok((p.name.clone(), p.shape.clone(), gpu.read_f32(&p.value)?)))
            .collect()
    }

    /// Overwrites every parameter from `tensors` (name -> (shape, data)); names and shapes
    /// must match exactly, and every parameter must be present. `file` names the source in
    /// errors.
    pub fn load_from(&self, gpu: &Gpu, tensors: &TensorMap, file: &Path) -> Result<()> {
        let f = file.display();
        for p in &self.params {
            let Some((shape, data)) = tensors.get(&p.name) else {
                bail!(
                    "{f}: no tensor named {} (shape {:?}): the weights are not of this net",
                    p.name,
                    p.shape
                );
            };
            if *shape != p.shape {
                bail!(
                    "{f}: tensor {} has shape {shape:?}, the net needs {:?}",
                    p.name,
                    p.shape
                );
            }
            gpu.write(&p.value.buf, data)?;
        }
        let known: std::collections::HashSet<&str> =
            self.params.iter().map(|p| p.name.as_str()).collect();
        let mut extra: Vec<&String> = tensors
            .keys()
            .filter(|k| !known.contains(k.as_str()))
            .collect();
        extra.sort();
        if let Some(name) = extra.first() {
            bail!(
                "{f}: tensor {name} is not a parameter of this net ({} unknown names): the weights are not of this net",
                extra.len()
            );
        }
        Ok(())
    }
}

/// A standard normal draw (Box-Muller).
pub fn normal(rng: &mut impl Rng) -> f64 {
    let u1: f64 = rng.random_range(f64::MIN_POSITIVE..1.0);
    let u2: f64 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

pub fn seeded(seed: u64) -> rand::rngs::StdRng {
    rand::rngs::StdRng::seed_from_u64(seed)
}

/// Writes tensors (name, shape, f32 data) and string metadata as safetensors, atomically:
/// a temporary file in the same directory, fsynced, then renamed over `path`.
pub fn save_safetensors(
    path: &Path,
    tensors: &[HostTensor],
    metadata: Option<HashMap<String, String>>,
) -> Result<()> {
    use safetensors::tensor::{Dtype, TensorView};
    let views: Vec<(String, TensorView)> = tensors
        .iter()
        .map(|(name, shape, data)| {
            let bytes: &[u8] = bytemuck::cast_slice(data);
            TensorView::new(Dtype::F32, shape.clone(), bytes)
                .map(|v| (name.clone(), v))
                .with_context(|| format!("tensor {name}: shape {shape:?} and data disagree"))
        })
        .collect::<Result<_>>()?;
    let bytes = safetensors::tensor::serialize(views, metadata)
        .with_context(|| format!("{}: could not serialise", path.display()))?;
    let bytes = sorted_header(&bytes)
        .with_context(|| format!("{}: could not serialise", path.display()))?;
    write_atomic(path, &bytes)
}

/// The same file with its JSON header's keys in sorted order. `safetensors` writes the metadata
/// map in hash order, which differs from one process to the next, so identical content gave
/// different bytes. The header is 8 bytes of little-endian length, then JSON padded with spaces
/// to a multiple of 8; the data after it is untouched (its offsets are relative to it).
fn sorted_header(bytes: &[u8]) -> Result<Vec<u8>> {
    use serde_json::{Map, Value};
    let n = bytes
        .get(..8)
        .map(|b| u64::from_le_bytes(b.try_into().unwrap_or_default()) as usize)
        .context("no header length")?;
    let json = bytes.get(8..8 + n).context("header cut short")?;
    let Value::Object(header) = serde_json::from_slice(json)? else {
        bail!("the header is not a JSON object");
    };
    // serde_json's map may keep insertion order (feature `preserve_order`): sort explicitly.
    let sort = |m: Map<String, Value>| -> Map<String, Value> {
        let mut entries: Vec<(String, Value)> = m.into_iter().collect();
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        entries.into_iter().collect()
    };
    let header: Map<String, Value> = sort(header)
        .into_iter()
        .map(|(k, v)| match v {
            Value::Object(m) if k == "__metadata__" => (k, Value::Object(sort(m))),
            v => (k, v),
        })
        .collect();
    let mut text = serde_json::to_vec(&Value::Object(header))?;
    text.resize(text.len().next_multiple_of(8), b' ');
    let mut out = Vec::with_capacity(8 + text.len() + bytes.len() - 8 - n);
    out.extend_from_slice(&(text.len() as u64).to_le_bytes());
    out.extend_from_slice(&text);
    out.extend_from_slice(&bytes[8 + n..]);
    Ok(out)
}

/// Reads every f32 tensor of a safetensors file, with its metadata.
pub fn load_safetensors(path: &Path) -> Result<(TensorMap, HashMap<String, String>)> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes)
        .with_context(|| format!("{}: not a safetensors file", path.display()))?;
    let st = safetensors::SafeTensors::deserialize(&bytes)
        .with_context(|| format!("{}: not a safetensors file", path.display()))?;
    let mut out = HashMap::new();
    for (name, view) in st.tensors() {
        // PyTorch's BatchNorm counts its batches in an I64 buffer that inference never reads
        // (momentum is set): a state_dict saved as it is loads without it.
        if name.ends_with(".num_batches_tracked") {
            continue;
        }
        if view.dtype() != safetensors::Dtype::F32 {
            bail!(
                "{}: tensor {name} is {:?}; only f32 is supported (convert it, e.g. with .float(), before saving)",
                path.display(),
                view.dtype()
            );
        }
        let data: Vec<f32> = bytemuck::pod_collect_to_vec(view.data());
        out.insert(name, (view.shape().to_vec(), data));
    }
    let meta = meta.metadata().clone().unwrap_or_default();
    Ok((out, meta))
}

/// Never a torn file: write a sibling temporary, fsync it, rename it over `path`, fsync the
/// directory.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .with_context(|| format!("{} is not a file path", path.display()))?;
    let tmp = dir.join(format!(".{}.tmp", name.to_string_lossy()));
    let mut f =
        std::fs::File::create(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
    f.write_all(bytes)
        .and_then(|_| f.sync_all())
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    drop(f);
    std::fs::rename(&tmp, path)
        .with_context(|| format!("cannot rename {} to {}", tmp.display(), path.display()))?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}
