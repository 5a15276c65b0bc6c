// Strided copy into a strided destination: Y[dst(i)] = X[src(i)] over the op's shape
// (operand 0 the source, operand 1 the destination). Positions of Y that no index maps
// to keep their contents (zeros in a fresh buffer): narrow backward, concat, shift.
@group(0) @binding(1) var<storage, read> X: array<f32>;
@group(0) @binding(2) var<storage, read_write> Y: array<f32>;

@compute @workgroup_size(256)
fn place(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat(id, nwg);
    if i >= P[0] {
        return;
    }
    Y[strided(i, 1u)] = X[strided(i, 0u)];
}
