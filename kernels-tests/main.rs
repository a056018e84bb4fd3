//! Kernel correctness: every GPU kernel against the f64 CPU reference, and every reference
//! backward against central finite differences.

mod common;
mod gpu_kernels;
mod reference_fd;
