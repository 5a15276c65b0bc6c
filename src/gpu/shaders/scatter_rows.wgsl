// Gradient of gather_rows without atomics: DW[v, j] = Σ G[p, j] over the positions p
// whose id is v, summed in ascending p from 0 (the CPU's scatter-add order). IDX holds
// CSR offsets (vocab + 1 entries), then the positions grouped by id. P: n (vocab × dim) dim vocab
@group(0) @binding(1) var<storage, read> G: array<f32>;
@group(0) @binding(2) var<storage, read> IDX: array<u32>;
@group(0) @binding(3) var<storage, read_write> DW: array<f32>;

@compute @workgroup_size(256)
fn scatter_rows(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat(id, nwg);
    if i >= P[0] {
        return;
    }
    let dim = P[1];
    let pos = P[2] + 1u;
    let v = i / dim;
    let j = i % dim;
    var s = 0.0;
    for (var k = IDX[v]; k < IDX[v + 1u]; k = k + 1u) {
        s = s + G[IDX[pos + k] * dim + j];
    }
    DW[i] = s;
}
