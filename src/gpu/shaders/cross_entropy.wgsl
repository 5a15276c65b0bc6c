// Cross-entropy of each row of dense [rows, c] logits against one class per row (u32;
// 0xffffffff: ignored), with label smoothing ε, as ops::fused::cross_entropy_rows:
// loss = (1 − ε)((m − x_t) + ls) + ε(ls − mean(x − m)), m = max, ls = log Σ exp(x − m).
// Writes (m, ls) per row for the backward. P: rows c smoothing_bits
@group(0) @binding(1) var<storage, read> X: array<f32>;
@group(0) @binding(2) var<storage, read> T: array<u32>;
@group(0) @binding(3) var<storage, read_write> LOSS: array<f32>;
@group(0) @binding(4) var<storage, read_write> STATS: array<f32>;

@compute @workgroup_size(256)
fn cross_entropy(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) t: u32) {
    let row = row_index(wg, nwg);
    if row >= P[0] {
        return;
    }
    let c = P[1];
    let eps = pf(2u);
    let base = row * c;
    var m = bitcast<f32>(0xff800000u);
    for (var j = t; j < c; j = j + WG) {
        m = max(m, X[base + j]);
    }
    m = wg_max(t, m);
    var s = 0.0;
    var d = 0.0;
    for (var j = t; j < c; j = j + WG) {
        s = s + exp(X[base + j] - m);
        d = d + (X[base + j] - m);
    }
    s = wg_sum(t, s);
    d = wg_sum(t, d);
    if t == 0u {
        let tgt = T[row];
        let ls = log(s);
        if tgt == 0xffffffffu {
            LOSS[row] = 0.0;
        } else {
            var v = (1.0 - eps) * ((m - X[base + tgt]) + ls);
            if eps != 0.0 {
                v = v + eps * (ls - d / f32(c));
            }
            LOSS[row] = v;
        }
        STATS[2u * row] = m;
        STATS[2u * row + 1u] = ls;
    }
}
