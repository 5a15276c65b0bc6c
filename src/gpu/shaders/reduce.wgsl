// Row reductions: one workgroup of 256 invocations per row of a dense [rows, n] input;
// strided partial results, then a tree in workgroup memory (a fixed order, so results
// do not depend on timing). P: rows n op scale_bits; op 0 sum, 1 max, 2 min.
@group(0) @binding(1) var<storage, read> X: array<f32>;
@group(0) @binding(2) var<storage, read_write> Y: array<f32>;

var<workgroup> part: array<f32, 256>;

fn combine(op: u32, a: f32, b: f32) -> f32 {
    switch op {
        case 1u: { return select(a, b, b > a || b != b); }
        case 2u: { return select(a, b, b < a || b != b); }
        default: { return a + b; }
    }
}

@compute @workgroup_size(256)
fn reduce_rows(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) t: u32) {
    let row = wg.x + wg.y * nwg.x;
    let rows = P[0];
    let n = P[1];
    let op = P[2];
    if row >= rows {
        return;
    }
    let base = row * n;
    var acc = select(0.0, X[base], op != 0u && n > 0u);
    for (var j = t; j < n; j = j + WG) {
        acc = combine(op, acc, X[base + j]);
    }
    part[t] = acc;
    workgroupBarrier();
    for (var s = 128u; s > 0u; s = s >> 1u) {
        if t < s {
            part[t] = combine(op, part[t], part[t + s]);
        }
        workgroupBarrier();
    }
    if t == 0u {
        Y[row] = part[0] * pf(3u);
    }
}
