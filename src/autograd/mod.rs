//! Layer 4: reverse-mode automatic differentiation over the kernels of `ops`.
//!
//! Forward ops record a node on a [`Tape`] holding exactly the tensors their backward needs
//! (shared through `Rc`, so a tensor saved by two nodes is stored once). [`Tape::backward`]
//! walks the nodes in reverse; each node is dropped as soon as it has run, which returns its
//! saved activations to the pool right after their last use. Gradients of a value used twice
//! (the input of a residual block) are summed.
//!
//! Parameters enter the tape as leaves tagged with the caller's index ([`Tape::param`]); the
//! gradients of exactly those leaves come back from `backward`. A parameter that no recorded
//! op used gets no gradient at all, which is how unsampled paths are left out of a step.

mod ops;
mod tape;

pub use ops::BnArgs;
pub use tape::{Gradients, NoGradGuard, Tape, Var};
