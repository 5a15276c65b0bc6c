// Householder mixer v ← H_{r−1} ⋯ H_0 v, H_i = I − scale·α_i u_i u_iᵀ, one invocation per
// row (u: [n, r, d], alpha: [n, r], v: [n, d]; all dense). P: n r d scale_bits
@group(0) @binding(1) var<storage, read> U: array<f32>;
@group(0) @binding(2) var<storage, read> ALPHA: array<f32>;
@group(0) @binding(3) var<storage, read> V: array<f32>;
@group(0) @binding(4) var<storage, read_write> Y: array<f32>;

@compute @workgroup_size(256)
fn householder(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let row = flat(id, nwg);
    let r = P[1];
    let d = P[2];
    if row >= P[0] {
        return;
    }
    let scale = pf(3u);
    let vb = row * d;
    for (var j = 0u; j < d; j = j + 1u) {
        Y[vb + j] = V[vb + j];
    }
    for (var i = 0u; i < r; i = i + 1u) {
        let ub = (row * r + i) * d;
        var dot = 0.0;
        for (var j = 0u; j < d; j = j + 1u) {
            dot = dot + U[ub + j] * Y[vb + j];
        }
        let coef = scale * ALPHA[row * r + i] * dot;
        for (var j = 0u; j < d; j = j + 1u) {
            Y[vb + j] = fma(-coef, U[ub + j], Y[vb + j]);
        }
    }
}
