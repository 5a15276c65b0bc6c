// Pass 2 of the chunked scan: the state entering each chunk, chained through the chunk
// transfers from h0 (or zeros). One invocation per (batch, channel).
@group(0) @binding(1) var<storage, read> E: array<f32>;
@group(0) @binding(2) var<storage, read> PR: array<f32>;
@group(0) @binding(3) var<storage, read> H0: array<f32>;
@group(0) @binding(4) var<storage, read_write> CIN: array<f32>;

@compute @workgroup_size(256)
fn scan_carry(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat(id, nwg);
    let D = P[2];
    let nc = P[6];
    if i >= P[0] * D {
        return;
    }
    let b = i / D;
    let c = i % D;
    var carry = select(0.0, H0[i], P[4] == 1u);
    for (var k = 0u; k < nc; k = k + 1u) {
        let j = (b * nc + k) * D + c;
        CIN[j] = carry;
        carry = fma(PR[j], carry, E[j]);
    }
}
