//! Growing the supernet from one trained path.
//!
//! A supernet whose every layer switches at random between independently initialised
//! candidates hardly learns at first: each candidate of a layer computes a different random
//! projection, so the layers after it see a new basis at every step (DESIGN.md section 5, and
//! issue 20's measurements: random paths stay at chance for hundreds of steps where one fixed
//! path learns). The `grow` warm-up trains one anchor candidate per layer first (a plain net,
//! which learns as fast as any), then sets every other MBConv candidate to compute exactly the
//! anchor's function, the way Net2Net (Chen, Goodfellow and Shlens, ICLR 2016) widens a
//! layer without changing what it computes:
//! - a larger depthwise kernel is the anchor's kernel padded with zeros (a smaller one is its
//!   centre crop, which is not exact);
//! - with more mid channels, the first ones copy the anchor's (expand rows, BN, depthwise
//!   kernel) and the projection's columns of the others are zero, so they add nothing until
//!   training moves them (with fewer, the first ones are kept, which is not exact);
//! - the projection and its BN are the anchor's.
//!
//! From then on every path computes what the anchor path computed, and the candidates drift
//! apart only as their own updates move them, so the layers after them are never handed an
//! unknown basis. With the smallest candidate (3x3_MBConv3) as anchor every copy is exact.

use anyhow::{bail, Result};

use crate::gpu::Gpu;
use crate::nn::layers::{ConvBnAct, MbConv};

use super::space::Candidate;
use super::supernet::Supernet;

/// The anchor of the `grow` warm-up: the candidate every other one of the layer contains.
pub fn default_anchor(candidates: &[Candidate]) -> Option<usize> {
    candidates
        .iter()
        .enumerate()
        .filter_map(|(i, c)| match *c {
            Candidate::MbConv { kernel, expand } => Some((kernel * expand, i)),
            Candidate::Zero => None,
        })
        .min()
        .map(|(_, i)| i)
}

/// Sets every MBConv candidate of every mixed layer to compute what candidate `anchor[l]`
/// computes (see the module's comment). Returns how many candidates were set, and how many
/// of those copies were inexact (a smaller kernel or fewer mid channels than the anchor).
pub fn grow_from_anchor(gpu: &Gpu, net: &Supernet, anchor: &[usize]) -> Result<(usize, usize)> {
    if anchor.len() != net.layers.len() {
        bail!(
            "grow: {} anchors for {} mixed layers",
            anchor.len(),
            net.layers.len()
        );
    }
    let (mut set, mut inexact) = (0, 0);
    for (l, (layer, &a)) in net.layers.iter().zip(anchor).enumerate() {
        let Some(Some(src)) = layer.ops.get(a) else {
            bail!("grow: candidate {a} of mixed layer {l} is not an MBConv");
        };
        let from = Host::read(gpu, net, src)?;
        for (k, op) in layer.ops.iter().enumerate() {
            let Some(dst) = op else { continue };
            if k == a {
                continue;
            }
            let mut to = Host::read(gpu, net, dst)?;
            if !to.take(&from)? {
                inexact += 1;
            }
            to.write(gpu, net, dst)?;
            set += 1;
        }
    }
    Ok((set, inexact))
}

/// A conv's weight and BN tensors on the host: weight, gamma, beta, running mean, running var.
struct HostConv {
    weight: Vec<f32>,
    bn: [Vec<f32>; 4],
}

/// An MBConv's tensors on the host, with the shapes that the copy needs.
struct Host {
    cin: usize,
    mid: usize,
    cout: usize,
    kernel: usize,
    expand: Option<HostConv>,
    depth: HostConv,
    project: HostConv,
}

fn bn_params(c: &ConvBnAct) -> Result<[usize; 4]> {
    match &c.bn {
        Some(bn) => Ok([bn.gamma, bn.beta, bn.running_mean, bn.running_var]),
        None => bail!("grow: a candidate conv without BN"),
    }
}

impl HostConv {
    fn read(gpu: &Gpu, net: &Supernet, c: &ConvBnAct) -> Result<HostConv> {
        let get = |i: usize| gpu.read_f32(&net.params.get(i).value);
        let [g, b, m, v] = bn_params(c)?;
        Ok(HostConv {
            weight: get(c.weight)?,
            bn: [get(g)?, get(b)?, get(m)?, get(v)?],
        })
    }

    fn write(&self, gpu: &Gpu, net: &Supernet, c: &ConvBnAct) -> Result<()> {
        let put = |i: usize, data: &[f32]| gpu.write(&net.params.get(i).value.buf, data);
        put(c.weight, &self.weight)?;
        for (i, data) in bn_params(c)?.into_iter().zip(&self.bn) {
            put(i, data)?;
        }
        Ok(())
    }

    /// Channel `c` of every BN tensor from `from`'s channel `c`, for `c < n`.
    fn take_bn(&mut self, from: &HostConv, n: usize) {
        for (to, from) in self.bn.iter_mut().zip(&from.bn) {
            to[..n].copy_from_slice(&from[..n]);
        }
    }
}

impl Host {
    fn read(gpu: &Gpu, net: &Supernet, op: &MbConv) -> Result<Host> {
        Ok(Host {
            cin: op.spec.in_channels,
            mid: op.depth.in_channels,
            cout: op.spec.out_channels,
            kernel: op.spec.kernel,
            expand: match &op.expand {
                Some(e) => Some(HostConv::read(gpu, net, e)?),
                None => None,
            },
            depth: HostConv::read(gpu, net, &op.depth)?,
            project: HostConv::read(gpu, net, &op.project)?,
        })
    }

    fn write(&self, gpu: &Gpu, net: &Supernet, op: &MbConv) -> Result<()> {
        if let (Some(h), Some(e)) = (&self.expand, &op.expand) {
            h.write(gpu, net, e)?;
        }
        self.depth.write(gpu, net, &op.depth)?;
        self.project.write(gpu, net, &op.project)
    }

    /// Takes `from`'s function; false where the copy cannot be exact.
    fn take(&mut self, from: &Host) -> Result<bool> {
        if (self.cin, self.cout) != (from.cin, from.cout)
            || self.expand.is_some() != from.expand.is_some()
        {
            bail!("grow: candidates of one layer with different shapes");
        }
        let n = self.mid.min(from.mid);
        // Expand: rows (output channels) 0..n, each of cin inputs; BN channels 0..n.
        if let (Some(to), Some(src)) = (&mut self.expand, &from.expand) {
            to.weight[..n * self.cin].copy_from_slice(&src.weight[..n * self.cin]);
            to.take_bn(src, n);
        }
        // Depthwise: channel c's kernel centred in this kernel (zero ring) or cropped.
        let (k, ks) = (self.kernel, from.kernel);
        for c in 0..n {
            for i in 0..k {
                for j in 0..k {
                    // Offsets from the centre, the same in both kernels.
                    let (di, dj) = (i as isize - (k / 2) as isize, j as isize - (k / 2) as isize);
                    let (si, sj) = (di + (ks / 2) as isize, dj + (ks / 2) as isize);
                    let inside = (0..ks as isize).contains(&si) && (0..ks as isize).contains(&sj);
                    self.depth.weight[(c * k + i) * k + j] = if inside {
                        from.depth.weight[(c * ks + si as usize) * ks + sj as usize]
                    } else {
                        0.0
                    };
                }
            }
        }
        self.depth.take_bn(&from.depth, n);
        // Projection [cout, mid]: the anchor's columns, zero past them; its BN whole.
        for o in 0..self.cout {
            for c in 0..self.mid {
                self.project.weight[o * self.mid + c] = if c < n {
                    from.project.weight[o * from.mid + c]
                } else {
                    0.0
                };
            }
        }
        self.project.take_bn(&from.project, self.cout);
        Ok(self.mid >= from.mid && self.kernel >= from.kernel)
    }
}
