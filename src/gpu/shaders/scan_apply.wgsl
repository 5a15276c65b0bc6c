// Pass 3 of the chunked scan (the whole scan when there is one chunk): rescan each
// chunk from the state entering it, writing every step. Each step is one fused
// multiply-add, as on the CPU. One invocation per (batch, chunk, channel); channels
// adjacent, so each step reads contiguous rows.
@group(0) @binding(1) var<storage, read> A: array<f32>;
@group(0) @binding(2) var<storage, read> X: array<f32>;
@group(0) @binding(3) var<storage, read> CIN: array<f32>;
@group(0) @binding(4) var<storage, read_write> H: array<f32>;

@compute @workgroup_size(256)
fn scan_apply(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat(id, nwg);
    if i >= P[0] * P[6] * P[2] {
        return;
    }
    let q = chunk_of(i);
    let steps = chunk_steps(q);
    var h = select(0.0, CIN[i], P[4] == 1u || P[6] > 1u);
    for (var s = steps.x; s < steps.y; s = s + 1u) {
        let k = at(q.x, s, q.z);
        h = fma(coef(q.x, s, q.z), h, X[k]);
        H[k] = h;
    }
}
