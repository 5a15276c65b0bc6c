// Pass 1 of the chunked scan: each chunk's transfer, the product of its coefficients
// (PR) and its end state from zero (E). One invocation per (batch, chunk, channel).
@group(0) @binding(1) var<storage, read> A: array<f32>;
@group(0) @binding(2) var<storage, read> X: array<f32>;
@group(0) @binding(3) var<storage, read_write> E: array<f32>;
@group(0) @binding(4) var<storage, read_write> PR: array<f32>;

@compute @workgroup_size(256)
fn scan_reduce(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat(id, nwg);
    if i >= P[0] * P[6] * P[2] {
        return;
    }
    let q = chunk_of(i);
    let steps = chunk_steps(q);
    var e = 0.0;
    var p = 1.0;
    for (var s = steps.x; s < steps.y; s = s + 1u) {
        let a = coef(q.x, s, q.z);
        e = fma(a, e, X[at(q.x, s, q.z)]);
        p = p * a;
    }
    E[i] = e;
    PR[i] = p;
}
