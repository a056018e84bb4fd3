//! Inverted dropout with a counter-based mask.
//!
//! The mask must be reproduced bit for bit by a WGSL shader, which has no f64 and no 64-bit
//! integers, so it is a pure function of `(seed, element index)` built from wrapping 32-bit
//! integer ops, and the keep test is done in f32.

/// PCG-style integer hash of `(seed, index)` (wrapping u32 arithmetic throughout).
pub fn dropout_hash(seed: u32, index: u32) -> u32 {
    let v = index.wrapping_mul(747796405).wrapping_add(2891336453) ^ seed.wrapping_mul(0x9E3779B9);
    let word = ((v >> ((v >> 28) + 4)) ^ v).wrapping_mul(277803737);
    (word >> 22) ^ word
}

/// Whether element `index` is kept at drop probability `p`: the top 24 bits of the hash,
/// scaled to a uniform `u` in `[0, 1)`, must satisfy `u >= p`. 24 bits are exactly
/// representable in f32, so the shader computes the same `u`.
pub fn dropout_keep(seed: u32, index: u32, p: f32) -> bool {
    (dropout_hash(seed, index) >> 8) as f32 * (1.0 / 16777216.0) >= p
}

/// Mask-and-scale factor of element `index`: `1 / (1 - p)` if kept, else 0.
fn dropout_scale(seed: u32, index: usize, p: f32) -> f64 {
    if dropout_keep(seed, index as u32, p) {
        1.0 / (1.0 - f64::from(p))
    } else {
        0.0
    }
}

/// Checks the arguments shared by forward and backward.
fn check_args(op: &str, len: usize, p: f32) {
    assert!(
        (0.0..1.0).contains(&p),
        "{op}: drop probability {p} is not in [0, 1)"
    );
    assert!(
        len <= u32::MAX as usize + 1,
        "{op}: {len} elements do not fit 32-bit mask indices"
    );
}

/// Forward pass: `y[i] = x[i] * keep(i) / (1 - p)`, element `i` hashed with index `i`.
pub fn dropout_forward(x: &[f64], p: f32, seed: u32) -> Vec<f64> {
    check_args("dropout_forward", x.len(), p);
    x.iter()
        .enumerate()
        .map(|(i, v)| v * dropout_scale(seed, i, p))
        .collect()
}

/// Backward pass: `dx[i] = dy[i] * keep(i) / (1 - p)` with the forward's mask.
pub fn dropout_backward(dy: &[f64], p: f32, seed: u32) -> Vec<f64> {
    check_args("dropout_backward", dy.len(), p);
    dy.iter()
        .enumerate()
        .map(|(i, g)| g * dropout_scale(seed, i, p))
        .collect()
}
