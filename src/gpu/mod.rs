//! Layer 1: the device and its memory. Adapter choice, a size-bucketed buffer pool with
//! live-byte accounting, a cache of compiled kernels, batched dispatch with a uniform ring for
//! per-dispatch parameters, readback and synchronised timing.

mod alias;
mod context;
mod kernel;
mod lanes;
mod pool;
mod tensor;
mod texture;
mod tuning;

pub use alias::{aliased_buffer, AliasedBuffer};
pub use context::{
    cpu_driver_threads, describe_adapters, without_subgroups, AdapterSummary, Binding, Gpu,
    GpuOptions, PoisonScope,
};
pub use kernel::{groups_for, Access, Kernel, KernelSpec, MAX_PARAM_WORDS};
pub use lanes::{lane_order, with_lane_order, LaneOrder};
pub use pool::{GpuBuffer, PoolStats};
pub use tensor::Tensor;
pub use texture::{GpuTexture, TEX_WIDTH};
pub use tuning::{
    load_tuning, set_tuning, tuning, BnOperands, GemmOperands, Lanes, Profile, ShaderChecks,
    Tuning, KNOBS,
};
