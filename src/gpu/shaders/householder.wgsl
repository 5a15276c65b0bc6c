// Householder mixer v ← H_{r−1} ⋯ H_0 v, H_i = I − scale·α_i u_i u_iᵀ, one invocation per
// row (u: [n, r, d], alpha: [n, r], v: [n, d]; all dense). WORK is the output.
@group(0) @binding(1) var<storage, read> U: array<f32>;
@group(0) @binding(2) var<storage, read> ALPHA: array<f32>;
@group(0) @binding(3) var<storage, read> V: array<f32>;
@group(0) @binding(4) var<storage, read_write> WORK: array<f32>;

@compute @workgroup_size(256)
fn householder(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let row = flat(id, nwg);
    if row >= P[0] {
        return;
    }
    let vb = row * P[2];
    for (var j = 0u; j < P[2]; j = j + 1u) {
        WORK[vb + j] = V[vb + j];
    }
    apply_steps(row, P[1], vb);
}
