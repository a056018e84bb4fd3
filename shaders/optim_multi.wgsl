// SGD steps of several tensors in one dispatch (the arithmetic of sgd_step in optim.wgsl,
// expression for expression, so both give the same bits). A training step updates every
// parameter tensor, ~200 of them, most small: on CPU drivers each dispatch costs far more
// than the arithmetic of a BN's gamma, so the optimizer batches the tensors.
//
// Tensor t (0 <= t < TENSORS) is bound as w{t}, g{t}, buf{t}, each viewed as vec4<f32>
// (lengths are multiples of 4; other tensors take sgd_step), and takes whole workgroups:
// groups[t - 1] .. groups[t] (groups[-1] = 0), so the branch that picks the tensor is uniform
// over a workgroup and a GPU runs one tensor's code in it. llvmpipe (Mesa 22.3) still runs
// every branch, masked: each invocation pays for every tensor's loads and stores, which is
// why only small tensors are batched (ops::optim::MULTI_LARGEST). One invocation updates one
// vec4 unit i of its tensor:
//   d = g + decay[t] * w,  buf = momentum * buf + d,
//   w -= lr * (d + momentum * buf if nesterov else buf)

struct Params {
    stride_groups: u32, // workgroups along x, to rebuild the flat index from a folded grid
    lr: f32,
    momentum: f32,
    nesterov: u32,
    groups: array<vec4<u32>, {{SLOTS}}>, // groups[t / 4][t % 4]: end of tensor t's workgroups
    units: array<vec4<u32>, {{SLOTS}}>,  // vec4 units of tensor t
    decay: array<vec4<f32>, {{SLOTS}}>,  // weight decay of tensor t: 0 for BN and bias terms
}

@group(0) @binding(0) var<uniform> p: Params;
{{BINDINGS}}

@compute @workgroup_size(64)
fn sgd_step_multi(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let wg = wid.x + wid.y * p.stride_groups;
{{BODY}}
}
