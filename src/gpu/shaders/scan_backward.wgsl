// Backward of `scan_forward`, run against its direction: g_t = dh_t + a_{t+1} ⊙ g_{t+1},
// du = g, da_t = g_t ⊙ h_{t−1} (h0 at the first step), dh0 = a_first ⊙ g_first.
// P: B T D reverse has_h0
@group(0) @binding(1) var<storage, read> A: array<f32>;
@group(0) @binding(2) var<storage, read> H: array<f32>;
@group(0) @binding(3) var<storage, read> H0: array<f32>;
@group(0) @binding(4) var<storage, read> DH: array<f32>;
@group(0) @binding(5) var<storage, read_write> DU: array<f32>;
@group(0) @binding(6) var<storage, read_write> DA: array<f32>;
@group(0) @binding(7) var<storage, read_write> DH0: array<f32>;

@compute @workgroup_size(256)
fn scan_backward(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat(id, nwg);
    let T = P[1];
    let D = P[2];
    if i >= P[0] * D {
        return;
    }
    let b = i / D;
    let c = i % D;
    let rev = P[3] == 1u;
    var g = 0.0;
    var coef = 0.0;
    for (var s = T; s > 0u; s = s - 1u) {
        let t = select(s - 1u, T - s, rev);
        let k = (b * T + t) * D + c;
        g = fma(coef, g, DH[k]);
        DU[k] = g;
        var hp = select(0.0, H0[i], P[4] == 1u);
        if s > 1u {
            let tp = select(s - 2u, T - s + 1u, rev);
            hp = H[(b * T + tp) * D + c];
        }
        DA[k] = g * hp;
        coef = A[k];
    }
    DH0[i] = coef * g;
}
