// Softmax / log-softmax of each row of a dense [rows, n] input, max subtracted first.
// P: rows n log
@group(0) @binding(1) var<storage, read> X: array<f32>;
@group(0) @binding(2) var<storage, read_write> Y: array<f32>;

@compute @workgroup_size(256)
fn softmax(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) t: u32) {
    let row = row_index(wg, nwg);
    if row >= P[0] {
        return;
    }
    let n = P[1];
    let base = row * n;
    var m = bitcast<f32>(0xff800000u);
    for (var j = t; j < n; j = j + WG) {
        m = max(m, X[base + j]);
    }
    m = wg_max(t, m);
    var s = 0.0;
    for (var j = t; j < n; j = j + WG) {
        s = s + exp(X[base + j] - m);
    }
    s = wg_sum(t, s);
    if P[2] == 1u {
        let ls = log(s);
        for (var j = t; j < n; j = j + WG) {
            Y[base + j] = X[base + j] - m - ls;
        }
    } else {
        let inv = 1.0 / s;
        for (var j = t; j < n; j = j + WG) {
            Y[base + j] = exp(X[base + j] - m) * inv;
        }
    }
}
