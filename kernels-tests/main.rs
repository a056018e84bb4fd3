//! The test suite: every GPU kernel against the f64 CPU reference, every reference backward
//! against central finite differences, network gradients, training, data, the NAS layer and
//! the command line.

mod autograd;
mod bad_input_cli;
mod bad_input_conv_bn;
mod bad_input_core;
mod bad_input_depthwise;
mod bad_input_files;
mod bad_input_misc;
mod cli;
mod common;
mod data;
mod gpu_kernels;
#[cfg(feature = "mpi")]
mod mpi;
mod nas;
mod pool;
mod profiles;
mod reference_fd;
mod search;
mod texture_alias;
mod texture_reuse;
mod training;
mod warmup;
