//! The tape, its values and the reverse walk.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use anyhow::{bail, Result};

use crate::gpu::{Gpu, Tensor};
use crate::ops::elementwise;

use super::ops::Node;

/// A value on the tape: a device tensor plus the id the tape knows it by.
#[derive(Clone, Debug)]
pub struct Var {
    pub(super) id: usize,
    pub(super) value: Rc<Tensor>,
}

impl Var {
    pub fn value(&self) -> &Tensor {
        &self.value
    }

    pub fn shape(&self) -> &[usize] {
        &self.value.shape
    }

    /// The shared tensor (for callers that keep it beyond the tape).
    pub fn tensor(&self) -> Rc<Tensor> {
        Rc::clone(&self.value)
    }
}

/// What a value is to the backward walk.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum Source {
    /// Data (images, labels): no gradient.
    Constant,
    /// A parameter leaf: its gradient is returned under the caller's index.
    Param(usize),
    /// Computed by a recorded op from something that needs a gradient.
    Computed,
    /// Computed without a recorded op (under `no_grad`, or from constants only).
    Detached,
}

/// Parameter gradients of one backward walk, by the caller's parameter index.
#[derive(Debug, Default)]
pub struct Gradients {
    pub by_param: Vec<(usize, Tensor)>,
}

/// Records forward ops and replays them backwards. One tape per step; it is not `Send`.
pub struct Tape<'g> {
    pub(super) gpu: &'g Gpu,
    sources: RefCell<Vec<Source>>,
    pub(super) nodes: RefCell<Vec<Node>>,
    grad_enabled: Cell<bool>,
    /// Parameters enter as constants (architecture steps: weights frozen, no dW computed).
    params_frozen: Cell<bool>,
    /// Dropout masks are hashed from this and a per-op counter, so a step is reproducible.
    pub(super) seed: Cell<u32>,
    /// When set, every op is timed alone (the device synchronised around it): seconds and
    /// calls per op name. For finding where a step's time goes; it slows the step down.
    profile: RefCell<Option<std::collections::BTreeMap<String, OpTime>>>,
}

/// Restores gradient recording when dropped (see [`Tape::no_grad`]).
pub struct NoGradGuard<'t, 'g> {
    tape: &'t Tape<'g>,
    previous: bool,
}

impl Drop for NoGradGuard<'_, '_> {
    fn drop(&mut self) {
        self.tape.grad_enabled.set(self.previous);
    }
}

impl<'g> Tape<'g> {
    pub fn new(gpu: &'g Gpu, seed: u32) -> Tape<'g> {
        Tape {
            gpu,
            sources: RefCell::new(Vec::new()),
            nodes: RefCell::new(Vec::new()),
            grad_enabled: Cell::new(true),
            params_frozen: Cell::new(false),
            seed: Cell::new(seed),
            profile: RefCell::new(None),
        }
    }

    /// Times every op from now on (see [`Tape::profile_report`]).
    pub fn enable_profile(&self) {
        *self.profile.borrow_mut() = Some(Default::default());
    }

    /// Per op ("forward pointwise", "backward batchnorm", ...): wall seconds, CPU seconds of
    /// all the process's threads (the driver's workers included on a CPU adapter; 0 where
    /// unknown), calls. CPU over wall says how many cores an op kept busy.
    pub fn profile_report(&self) -> Vec<(String, f64, f64, usize)> {
        self.profile
            .borrow()
            .as_ref()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.0, v.1, v.2)).collect())
            .unwrap_or_default()
    }

    /// Runs `f`, timing it alone when profiling.
    /// `name` is only built when profiling: op names with shapes would otherwise cost a string
    /// per op on every step.
    pub fn timed<T, N: Into<String>>(
        &self,
        name: impl FnOnce() -> N,
        f: impl FnOnce() -> Result<T>,
    ) -> Result<T> {
        if self.profile.borrow().is_none() {
            return f();
        }
        self.gpu.sync()?;
        let c0 = process_cpu_seconds();
        let t0 = std::time::Instant::now();
        let out = f()?;
        self.gpu.sync()?;
        let dt = t0.elapsed().as_secs_f64();
        let dc = process_cpu_seconds() - c0;
        if let Some(m) = self.profile.borrow_mut().as_mut() {
            let e = m.entry(name().into()).or_insert((0.0, 0.0, 0));
            e.0 += dt;
            e.1 += dc;
            e.2 += 1;
        }
        Ok(out)
    }

    pub fn gpu(&self) -> &'g Gpu {
        self.gpu
    }

    /// Declares that nothing reads `x`'s buffer any more, only the texture copy an op made of
    /// it for its backward (`Gpu::to_texture_for_backward`; a block input once the block's
    /// forward is done): the buffer goes back to the pool and the texture is x's only copy
    /// (`Gpu::keep_only_texture`; a later reader of the buffer gets it back by a copy).
    /// Without such a copy nothing happens.
    pub fn texture_only(&self, x: &Var) {
        self.gpu
            .keep_only_kept_texture(&x.value.buf, x.value.numel());
    }

    /// While the guard lives, ops record nothing and save nothing.
    pub fn no_grad(&self) -> NoGradGuard<'_, 'g> {
        let previous = self.grad_enabled.replace(false);
        NoGradGuard {
            tape: self,
            previous,
        }
    }

    pub fn grad_enabled(&self) -> bool {
        self.grad_enabled.get()
    }

    /// Number of recorded nodes not yet walked back.
    pub fn recorded(&self) -> usize {
        self.nodes.borrow().len()
    }

    /// A data value: never differentiated.
    pub fn constant(&self, t: Tensor) -> Var {
        self.push_value(Rc::new(t), Source::Constant)
    }

    /// From now on parameters are constants: a backward computes data gradients only.
    pub fn freeze_params(&self) {
        self.params_frozen.set(true);
    }

    /// A new value sharing `v`'s tensor whose gradient is wanted (so that everything computed
    /// from it is recorded even when nothing before it needs a gradient).
    pub fn requiring_grad(&self, v: &Var) -> Var {
        self.push_value(Rc::clone(&v.value), Source::Computed)
    }

    /// A data value held elsewhere too (a constant tensor reused across steps).
    pub fn constant_shared(&self, t: &Rc<Tensor>) -> Var {
        self.push_value(Rc::clone(t), Source::Constant)
    }

    /// A parameter leaf. `index` is the caller's name for it in [`Gradients`]; a frozen
    /// parameter (`trainable == false`) is treated as a constant.
    pub fn param(&self, index: usize, t: &Rc<Tensor>, trainable: bool) -> Var {
        let src = if trainable && self.grad_enabled() && !self.params_frozen.get() {
            Source::Param(index)
        } else {
            Source::Constant
        };
        self.push_value(Rc::clone(t), src)
    }

    pub(super) fn push_value(&self, value: Rc<Tensor>, src: Source) -> Var {
        let mut s = self.sources.borrow_mut();
        s.push(src);
        Var {
            id: s.len() - 1,
            value,
        }
    }

    pub(super) fn needs_grad(&self, v: &Var) -> bool {
        matches!(
            self.sources.borrow()[v.id],
            Source::Param(_) | Source::Computed
        )
    }

    /// The output of an op on `inputs`: recorded when gradients are on and any input needs one
    /// (`make` builds the node only then, so nothing is saved otherwise).
    pub(super) fn output(
        &self,
        y: Tensor,
        inputs: &[&Var],
        make: impl FnOnce(usize, Rc<Tensor>) -> Node,
    ) -> Var {
        let record = self.grad_enabled() && inputs.iter().any(|v| self.needs_grad(v));
        if !record {
            return self.push_value(Rc::new(y), Source::Detached);
        }
        let v = self.push_value(Rc::new(y), Source::Computed);
        let node = make(v.id, Rc::clone(&v.value));
        self.nodes.borrow_mut().push(node);
        v
    }

    /// Walks the tape back from `from` with upstream gradient `grad` (same shape) and returns
    /// the gradient of every parameter leaf reached. The tape is empty afterwards, and every
    /// activation it saved has gone back to the pool.
    pub fn backward(&self, from: &Var, grad: Tensor) -> Result<Gradients> {
        Ok(self.backward_watching(from, grad, &[])?.0)
    }

    /// [`Tape::backward`] that also returns the gradient of each value in `watch` (None where
    /// no gradient reached it): the architecture step needs dL/dy at every mixed layer.
    pub fn backward_watching(
        &self,
        from: &Var,
        grad: Tensor,
        watch: &[&Var],
    ) -> Result<(Gradients, Vec<Option<Rc<Tensor>>>)> {
        if grad.shape != from.value.shape {
            bail!(
                "backward: the upstream gradient has shape {:?}, the value {:?}",
                grad.shape,
                from.value.shape
            );
        }
        let sources = self.sources.borrow().clone();
        let mut grads: Vec<Option<Rc<Tensor>>> = vec![None; sources.len()];
        grads[from.id] = Some(Rc::new(grad));
        let nodes = std::mem::take(&mut *self.nodes.borrow_mut());
        let mut nodes = nodes;
        let mut watched: Vec<Option<Rc<Tensor>>> = vec![None; watch.len()];
        let keep = |id: usize, g: &Rc<Tensor>, watched: &mut Vec<Option<Rc<Tensor>>>| {
            for (w, slot) in watch.iter().zip(watched.iter_mut()) {
                if w.id == id {
                    *slot = Some(Rc::clone(g));
                }
            }
        };
        while let Some(node) = nodes.pop() {
            let out = node.output();
            let Some(dy) = grads[out].take() else {
                continue; // nothing downstream needed this value
            };
            keep(out, &dy, &mut watched);
            let input_grads = self.timed(
                || format!("backward {}", node.name()),
                || node.backward(self.gpu, &dy, &sources),
            )?;
            for (input, g) in input_grads {
                accumulate(self.gpu, &mut grads[input], g)?;
            }
            // `node` and `dy` drop here: their saved tensors go back to the pool.
        }
        // Watched leaves and values whose gradient was never consumed by a node.
        for (id, g) in grads.iter().enumerate() {
            if let Some(g) = g {
                keep(id, g, &mut watched);
            }
        }
        let mut out = Gradients::default();
        for (id, src) in sources.iter().enumerate() {
            if let (Source::Param(index), Some(g)) = (src, grads[id].take()) {
                let g = match Rc::try_unwrap(g) {
                    Ok(t) => t,
                    Err(shared) => {
                        let t = self.gpu.empty(&shared.shape);
                        self.gpu.copy(&shared.buf, &t.buf)?;
                        t
                    }
                };
                out.by_param.push((*index, g));
            }
        }
        self.sources.borrow_mut().clear();
        Ok((out, watched))
    }
}

/// Adds `g` into a value's gradient slot. Gradients may be shared (an add passes the same
/// tensor to both inputs), so the sum is out of place.
fn accumulate(gpu: &Gpu, slot: &mut Option<Rc<Tensor>>, g: Rc<Tensor>) -> Result<()> {
    *slot = Some(match slot.take() {
        None => g,
        Some(prev) => Rc::new(elementwise::add(gpu, &prev, &g)?),
    });
    Ok(())
}

/// Profile entry of one op name: wall seconds, CPU seconds, calls.
type OpTime = (f64, f64, usize);

/// CPU seconds run so far by all threads of this process, from each thread's
/// /proc/self/task/*/schedstat (nanoseconds; Linux only, 0 elsewhere). Profiling only.
fn process_cpu_seconds() -> f64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0.0;
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<f64>().ok())
        .sum::<f64>()
        / 1e9
}
