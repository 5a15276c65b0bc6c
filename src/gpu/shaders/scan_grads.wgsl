// The rest of the scan backward from g (the reverse scan of dh): da_t = g_t ⊙ h_{t−1}
// (h0, or 0, at the forward's first step) and dh0 = a_first ⊙ g_first. One invocation
// per element. P as the forward's (its direction in P[3]).
@group(0) @binding(1) var<storage, read> A: array<f32>;
@group(0) @binding(2) var<storage, read> H: array<f32>;
@group(0) @binding(3) var<storage, read> H0: array<f32>;
@group(0) @binding(4) var<storage, read> G: array<f32>;
@group(0) @binding(5) var<storage, read_write> DA: array<f32>;
@group(0) @binding(6) var<storage, read_write> DH0: array<f32>;

@compute @workgroup_size(256)
fn scan_grads(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let k = flat(id, nwg);
    let T = P[1];
    let D = P[2];
    if k >= P[0] * T * D {
        return;
    }
    let c = k % D;
    let t = (k / D) % T;
    let b = k / (T * D);
    let s = time_of(t); // time_of is its own inverse
    let first = b * D + c;
    var hp = select(0.0, H0[first], P[4] == 1u);
    if s > 0u {
        hp = H[at(b, s - 1u, c)];
    }
    DA[k] = G[k] * hp;
    if s == 0u {
        DH0[first] = A[k] * G[k];
    }
}
