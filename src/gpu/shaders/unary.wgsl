// Unary elementwise ops, forward and backward, over strided operands. The op code
// (P[HDR]) follows the order of `ops::elementwise::Unary`; 20 is a plain copy.
@group(0) @binding(1) var<storage, read> X: array<f32>;
@group(0) @binding(2) var<storage, read_write> Y: array<f32>;

@compute @workgroup_size(256)
fn unary_forward(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat(id, nwg);
    if i >= P[0] {
        return;
    }
    Y[i] = forward(P[HDR], X[strided(i, 0u)], pf(HDR + 1u), pf(HDR + 2u));
}
