// Rows of a dense [vocab, dim] table picked by ids (embedding):
// Y[i, j] = W[IDS[i], j]. P: n (ids × dim) dim
@group(0) @binding(1) var<storage, read> W: array<f32>;
@group(0) @binding(2) var<storage, read> IDS: array<u32>;
@group(0) @binding(3) var<storage, read_write> Y: array<f32>;

@compute @workgroup_size(256)
fn gather_rows(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat(id, nwg);
    if i >= P[0] {
        return;
    }
    let dim = P[1];
    Y[i] = W[IDS[i / dim] * dim + i % dim];
}
