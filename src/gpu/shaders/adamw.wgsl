// AdamW in place on dense buffers of n elements, the same arithmetic per element as
// optim::AdamW on the CPU: p *= decay; m = b1 m + (1 − b1) g; v = b2 v + (1 − b2) g²;
// p −= step_size · m / (√v / bc2_sqrt + eps).
// P: n decay b1 b2 step_size bc2_sqrt eps (f32 as bits)
@group(0) @binding(1) var<storage, read> G: array<f32>;
@group(0) @binding(2) var<storage, read_write> Prm: array<f32>;
@group(0) @binding(3) var<storage, read_write> M: array<f32>;
@group(0) @binding(4) var<storage, read_write> V: array<f32>;

@compute @workgroup_size(256)
fn adamw(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat(id, nwg);
    if i >= P[0] {
        return;
    }
    let b1 = pf(2u);
    let b2 = pf(3u);
    let g = G[i];
    var p = Prm[i] * pf(1u);
    let m = b1 * M[i] + (1.0 - b1) * g;
    let v = b2 * V[i] + (1.0 - b2) * g * g;
    p = p - pf(4u) * m / (sqrt(v) / pf(5u) + pf(6u));
    M[i] = m;
    V[i] = v;
    Prm[i] = p;
}
