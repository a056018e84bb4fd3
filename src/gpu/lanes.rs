//! How a kernel maps its lanes to memory. On a GPU neighbouring lanes should touch
//! neighbouring addresses (coalesced). On lavapipe a storage store is a loop over the 8 lanes
//! of a SIMD batch, each lane's scalars in turn; when those 8 lanes write one 128-byte run, a
//! store waits on 2 cache lines at a time, and when they write 8 different lines, on 8: the
//! store-bound kernels (depthwise, BN's per-element passes) ran about twice as fast that way
//! (benches/NOTES.md). Each such kernel family offers both orders.

use std::cell::Cell;

use super::Gpu;

/// Which lane order a kernel variant uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LaneOrder {
    /// Neighbouring lanes on neighbouring addresses (the GPU default).
    Coalesced,
    /// Neighbouring lanes on different cache lines (the default on CPU adapters).
    Spread,
}

thread_local! {
    static FORCED: Cell<Option<LaneOrder>> = const { Cell::new(None) };
}

/// Runs `f` with the lane order forced to `order` on this thread, so that verification can
/// check the order this device does not pick.
pub fn with_lane_order<T>(order: LaneOrder, f: impl FnOnce() -> T) -> T {
    let before = FORCED.with(|o| o.replace(Some(order)));
    let out = f();
    FORCED.with(|o| o.set(before));
    out
}

/// The lane order for kernels on `gpu`: spread on CPU adapters, coalesced elsewhere;
/// `PROXYLESS_LANES=coalesced|spread` overrides (read at each call, for A/B runs).
pub fn lane_order(gpu: &Gpu) -> LaneOrder {
    if let Some(order) = FORCED.with(|o| o.get()) {
        return order;
    }
    match super::tuning().lanes {
        Some(super::Lanes::Coalesced) => LaneOrder::Coalesced,
        Some(super::Lanes::Spread) => LaneOrder::Spread,
        None if gpu.cpu_like() => LaneOrder::Spread,
        None => LaneOrder::Coalesced,
    }
}
