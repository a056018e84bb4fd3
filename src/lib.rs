//! proxyless: ProxylessNAS on a from-scratch wgpu/WGSL compute engine.
//!
//! Layers (lower never imports higher): `gpu` (device, memory, pipelines),
//! `ops` (WGSL kernels with typed launchers), `reference` (f64 CPU twins of every op),
//! `verify` (GPU-vs-reference comparisons used by the tests and `proxyless check`).

pub mod autograd;
pub mod data;
pub mod dist;
pub mod gpu;
pub mod nas;
pub mod nn;
pub mod ops;
pub mod reference;
pub mod train;
pub mod verify;
pub mod workloads;
