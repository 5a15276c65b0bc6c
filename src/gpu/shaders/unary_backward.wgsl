// Backward of the unary ops: out = g * f'(saved). Operand 0 is the saved input or
// output (the gradient itself for ops that save nothing), operand 1 the gradient.
@group(0) @binding(1) var<storage, read> S: array<f32>;
@group(0) @binding(2) var<storage, read> G: array<f32>;
@group(0) @binding(3) var<storage, read_write> Y: array<f32>;

@compute @workgroup_size(256)
fn unary_backward(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat(id, nwg);
    if i >= P[0] {
        return;
    }
    let d = derivative(P[HDR], S[strided(i, 0u)], pf(HDR + 1u), pf(HDR + 2u));
    Y[i] = G[strided(i, 1u)] * d;
}
