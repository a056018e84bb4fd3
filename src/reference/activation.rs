//! ReLU6: `y = min(max(x, 0), 6)`, elementwise.

/// Forward pass: `y = clamp(x, 0, 6)`.
pub fn relu6_forward(x: &[f64]) -> Vec<f64> {
    x.iter().map(|&v| v.clamp(0.0, 6.0)).collect()
}

/// Backward pass: `dx = dy` where `0 < x < 6`, else 0 (at the kinks the gradient is taken as 0,
/// the same choice as PyTorch's `hardtanh_backward`).
pub fn relu6_backward(x: &[f64], dy: &[f64]) -> Vec<f64> {
    assert_eq!(
        x.len(),
        dy.len(),
        "relu6_backward: x has {} elements, dy has {}",
        x.len(),
        dy.len()
    );
    x.iter()
        .zip(dy)
        .map(|(&v, &g)| if v > 0.0 && v < 6.0 { g } else { 0.0 })
        .collect()
}
