// The diagonal scan h_t = a_t ⊙ h_{t−1} + u_t over dense (B, T, D) inputs: one invocation
// per (batch, channel) walks time (channels adjacent, so each step reads contiguous
// rows). Each step is one fused multiply-add, as on the CPU. `reverse` runs time
// backwards. P: B T D reverse has_h0
@group(0) @binding(1) var<storage, read> A: array<f32>;
@group(0) @binding(2) var<storage, read> U: array<f32>;
@group(0) @binding(3) var<storage, read> H0: array<f32>;
@group(0) @binding(4) var<storage, read_write> H: array<f32>;

@compute @workgroup_size(256)
fn scan_forward(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat(id, nwg);
    let T = P[1];
    let D = P[2];
    if i >= P[0] * D {
        return;
    }
    let b = i / D;
    let c = i % D;
    var h = select(0.0, H0[i], P[4] == 1u);
    for (var s = 0u; s < T; s = s + 1u) {
        let t = select(s, T - 1u - s, P[3] == 1u);
        let k = (b * T + t) * D + c;
        h = fma(A[k], h, U[k]);
        H[k] = h;
    }
}
