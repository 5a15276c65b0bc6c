// Per-sample relative residual of the fixed-point solver (fpr::solver::residuals):
// R[b] = max_t ‖Y_t − N_t‖_∞ / (‖N_t‖_∞ + eps) over dense [B, T, D] iterates, NaN when
// any difference, new value or ratio is NaN (the solver counts NaN as +∞). One
// workgroup per sample; its threads stride over time steps. P: B T D eps_bits
@group(0) @binding(1) var<storage, read> Y: array<f32>;
@group(0) @binding(2) var<storage, read> N: array<f32>;
@group(0) @binding(3) var<storage, read_write> R: array<f32>;

// By the bits: a compiler may fold `x != x` to false.
fn nan(x: f32) -> bool {
    return (bitcast<u32>(x) & 0x7fffffffu) > 0x7f800000u;
}

@compute @workgroup_size(256)
fn fp_residual(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) t: u32) {
    let b = row_index(wg, nwg);
    if b >= P[0] {
        return;
    }
    let time = P[1];
    let d = P[2];
    let eps = pf(3u);
    var worst = 0.0;
    var bad = 0.0;
    for (var s = t; s < time; s = s + WG) {
        let base = (b * time + s) * d;
        var diff = 0.0;
        var norm = 0.0;
        for (var k = 0u; k < d; k = k + 1u) {
            let n = N[base + k];
            let e = abs(Y[base + k] - n);
            if nan(e) || nan(n) {
                bad = 1.0;
            }
            diff = max(diff, e);
            norm = max(norm, abs(n));
        }
        let r = diff / (norm + eps);
        if nan(r) {
            bad = 1.0;
        } else {
            worst = max(worst, r);
        }
    }
    worst = wg_max(t, worst);
    bad = wg_max(t, bad);
    if t == 0u {
        R[b] = select(worst, bitcast<f32>(0x7fc00000u), bad > 0.0);
    }
}
