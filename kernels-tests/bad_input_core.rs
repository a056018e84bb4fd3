//! Bad input to the core ops and the device layer: errors that name the op and the shapes.

use crate::common::gpu;
use proxyless::gpu::KernelSpec;
use proxyless::ops::pointwise::{pointwise_backward, pointwise_forward};

fn err_of<T>(r: anyhow::Result<T>) -> String {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => format!("{e:#}"),
    }
}

#[test]
fn pointwise_rejects_mismatched_channels_and_empty_dims() {
    let g = gpu();
    let x = g.zeros(&[2, 3, 3, 8]);
    let w = g.zeros(&[16, 7]);
    let e = err_of(pointwise_forward(g, &x, &w));
    assert!(
        e.contains("pointwise_forward") && e.contains("[16, 7]") && e.contains("[2, 3, 3, 8]"),
        "{e}"
    );
    let empty = g.zeros(&[2, 0, 3, 8]);
    let w = g.zeros(&[16, 8]);
    let e = err_of(pointwise_forward(g, &empty, &w));
    assert!(
        e.contains("pointwise_forward") && e.contains("zero-sized"),
        "{e}"
    );
    let flat = g.zeros(&[18, 8]);
    let e = err_of(pointwise_forward(g, &flat, &w));
    assert!(e.contains("4 dims"), "{e}");
    let dy = g.zeros(&[2, 3, 3, 15]);
    let e = err_of(pointwise_backward(g, &x, &w, &dy));
    assert!(e.contains("pointwise_backward") && e.contains("dy"), "{e}");
}

#[test]
fn a_tensor_over_the_binding_limit_is_an_error_not_an_abort() {
    let g = gpu();
    let max = g.max_binding_bytes() as usize;
    // One more row of 16 channels than fits in a binding.
    let rows = max / (16 * 4) + 1;
    let x = g.empty(&[1, 1, rows, 16]);
    let w = g.zeros(&[8, 16]);
    let e = err_of(pointwise_forward(g, &x, &w));
    assert!(
        e.contains("pointwise_forward") && e.contains("storage-binding limit"),
        "{e}"
    );
    g.sync().expect("no device error may be left behind");
}

#[test]
fn broken_wgsl_is_reported_with_the_kernel_name() {
    let spec = KernelSpec {
        file: "broken",
        source: "@compute @workgroup_size(64) fn main() { let x: f32 = 1u; }",
        entry: "main",
        bindings: &[],
    };
    let e = err_of(gpu().kernel(&spec, &[]));
    assert!(e.contains("broken::main"), "{e}");
}

#[test]
fn upload_and_copy_check_sizes() {
    let g = gpu();
    let e = err_of(g.upload(&[1.0f32; 5], &[2, 3]));
    assert!(e.contains("upload") && e.contains("[2, 3]"), "{e}");
    let small = g.zeros(&[2]);
    let big = g.zeros(&[8]);
    let e = err_of(g.copy(&big.buf, &small.buf));
    assert!(e.contains("copy"), "{e}");
}
