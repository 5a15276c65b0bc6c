// Backward of `householder`, one invocation per row, steps in reverse. The input v_i of
// step i is recomputed from v into the du_i slot (not yet written), then replaced by
// du_i = −cα_i [(u_iᵀv_i) g + (u_iᵀg) v_i]; dα_i = −c (u_iᵀv_i)(u_iᵀg);
// g ← g − cα_i u_i (u_iᵀg) ends as dv. P: n r d scale_bits
@group(0) @binding(1) var<storage, read> U: array<f32>;
@group(0) @binding(2) var<storage, read> ALPHA: array<f32>;
@group(0) @binding(3) var<storage, read> V: array<f32>;
@group(0) @binding(4) var<storage, read> G: array<f32>;
@group(0) @binding(5) var<storage, read_write> WORK: array<f32>; // du
@group(0) @binding(6) var<storage, read_write> DA: array<f32>;
@group(0) @binding(7) var<storage, read_write> DV: array<f32>;

@compute @workgroup_size(256)
fn householder_backward(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let row = flat(id, nwg);
    let r = P[1];
    let d = P[2];
    if row >= P[0] {
        return;
    }
    let scale = pf(3u);
    let vb = row * d;
    for (var j = 0u; j < d; j = j + 1u) {
        DV[vb + j] = G[vb + j];
    }
    for (var ii = r; ii > 0u; ii = ii - 1u) {
        let i = ii - 1u;
        let wb = (row * r + i) * d;
        // v_i = H_{i−1} ⋯ H_0 v, built in du's slot i.
        for (var j = 0u; j < d; j = j + 1u) {
            WORK[wb + j] = V[vb + j];
        }
        apply_steps(row, i, wb);
        var s = 0.0;
        var w = 0.0;
        for (var j = 0u; j < d; j = j + 1u) {
            s = s + U[wb + j] * WORK[wb + j];
            w = w + U[wb + j] * DV[vb + j];
        }
        let ca = scale * ALPHA[row * r + i];
        DA[row * r + i] = -scale * s * w;
        for (var j = 0u; j < d; j = j + 1u) {
            WORK[wb + j] = -ca * (s * DV[vb + j] + w * WORK[wb + j]);
        }
        for (var j = 0u; j < d; j = j + 1u) {
            DV[vb + j] = fma(-ca * w, U[wb + j], DV[vb + j]);
        }
    }
}
