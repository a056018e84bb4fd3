// Optimizer steps (PyTorch semantics, no dampening), in place on the weights and their state.
// L2 weight decay is folded into the gradient: d = g + wd * w.
//
// Instantiated by src/ops/optim.rs like the elementwise kernels: V = vec4<f32> over the first
// len/4 units, V = f32 over the len%4 tail. One invocation updates one unit of every tensor;
// lanes take consecutive units.

alias V = {{V}};

struct SgdParams {
    count: u32,         // units this dispatch covers
    start: u32,         // first unit, in units of V
    stride_groups: u32, // workgroups along x, to rebuild the flat index from a folded grid
    lr: f32,
    momentum: f32,
    weight_decay: f32,
    nesterov: u32,
}

struct AdamParams {
    count: u32,
    start: u32,
    stride_groups: u32,
    lr: f32,
    beta1: f32,
    beta2: f32,
    eps: f32,
    weight_decay: f32,
    correction1: f32,   // 1 - beta1^t, computed on the host in f64
    correction2: f32,   // 1 - beta2^t
}

@group(0) @binding(0) var<uniform> sgd_p: SgdParams;
@group(0) @binding(0) var<uniform> adam_p: AdamParams;
@group(0) @binding(1) var<storage, read_write> w: array<V>;
@group(0) @binding(2) var<storage, read> g: array<V>;
@group(0) @binding(3) var<storage, read_write> buf: array<V>;
@group(0) @binding(4) var<storage, read_write> v2: array<V>;

// sgd_step: w, g, buf (momentum buffer) [len]; for one unit:
//   buf = momentum * buf + d;  w -= lr * (d + momentum * buf if nesterov else buf)
@compute @workgroup_size(64)
fn sgd_step(@builtin(global_invocation_id) gid: vec3<u32>) {
    let f = gid.x + gid.y * sgd_p.stride_groups * 64u;
    if (f >= sgd_p.count) {
        return;
    }
    let i = sgd_p.start + f;
    let wi = w[i];
    let d = g[i] + sgd_p.weight_decay * wi;
    let m = sgd_p.momentum * buf[i] + d;
    buf[i] = m;
    let step = select(m, d + sgd_p.momentum * m, sgd_p.nesterov != 0u);
    w[i] = wi - sgd_p.lr * step;
}

// adam_step: w, g, m (binding 3), v (binding 4) [len]; for one unit:
//   m = b1 m + (1 - b1) d;  v = b2 v + (1 - b2) d^2;
//   w -= lr * (m / c1) / (sqrt(v / c2) + eps)
@compute @workgroup_size(64)
fn adam_step(@builtin(global_invocation_id) gid: vec3<u32>) {
    let f = gid.x + gid.y * adam_p.stride_groups * 64u;
    if (f >= adam_p.count) {
        return;
    }
    let i = adam_p.start + f;
    let wi = w[i];
    let d = g[i] + adam_p.weight_decay * wi;
    let m = adam_p.beta1 * buf[i] + (1.0 - adam_p.beta1) * d;
    let v = adam_p.beta2 * v2[i] + (1.0 - adam_p.beta2) * d * d;
    buf[i] = m;
    v2[i] = v;
    let m_hat = m / adam_p.correction1;
    let v_hat = v / adam_p.correction2;
    w[i] = wi - adam_p.lr * m_hat / (sqrt(v_hat) + V(adam_p.eps));
}
