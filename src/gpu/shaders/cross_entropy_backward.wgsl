// Cross-entropy backward per row: dx = w·(softmax(x) − ε/c) − w(1 − ε)·onehot(t), the
// softmax recomputed from the forward's (max, log_sum); ignored rows get 0. The weight
// w is G[0]·scale (mode 0: mean or sum over rows) or G[row] (mode 1: no reduction).
// P: rows c smoothing_bits mode scale_bits
@group(0) @binding(1) var<storage, read> X: array<f32>;
@group(0) @binding(2) var<storage, read> T: array<u32>;
@group(0) @binding(3) var<storage, read> STATS: array<f32>;
@group(0) @binding(4) var<storage, read> G: array<f32>;
@group(0) @binding(5) var<storage, read_write> DX: array<f32>;

@compute @workgroup_size(256)
fn cross_entropy_backward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                          @builtin(local_invocation_index) t: u32) {
    let row = row_index(wg, nwg);
    if row >= P[0] {
        return;
    }
    let c = P[1];
    let eps = pf(2u);
    let base = row * c;
    let tgt = T[row];
    let w = select(G[0] * pf(4u), G[row], P[3] == 1u);
    let m = STATS[2u * row];
    let ls = STATS[2u * row + 1u];
    let off = eps / f32(c);
    for (var j = t; j < c; j = j + WG) {
        var v = 0.0;
        if tgt != 0xffffffffu {
            v = w * (exp((X[base + j] - m) - ls) - off);
            if j == tgt {
                v = v - w * (1.0 - eps);
            }
        }
        DX[base + j] = v;
    }
}
