// LayerNorm (center = 1) or RMSNorm (center = 0) of each row of a dense [rows, d] input:
// y = (x − mean)·rstd ⊙ w + b, rstd = 1/sqrt(var + eps) (population variance, two
// passes). Writes (mean, rstd) per row to STATS. W and B are dummies when absent.
// P: rows d center has_w has_b eps_bits
@group(0) @binding(1) var<storage, read> X: array<f32>;
@group(0) @binding(2) var<storage, read> W: array<f32>;
@group(0) @binding(3) var<storage, read> Bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> Y: array<f32>;
@group(0) @binding(5) var<storage, read_write> STATS: array<f32>;

@compute @workgroup_size(256)
fn norm(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) t: u32) {
    let row = row_index(wg, nwg);
    if row >= P[0] {
        return;
    }
    let d = P[1];
    let base = row * d;
    let inv_d = 1.0 / f32(d);
    let center = P[2] == 1u;
    var s = 0.0;
    if center {
        for (var j = t; j < d; j = j + WG) {
            s = s + X[base + j];
        }
    }
    let mu = select(0.0, wg_sum(t, s) * inv_d, center);
    var q = 0.0;
    for (var j = t; j < d; j = j + WG) {
        let c = X[base + j] - mu;
        q = q + c * c;
    }
    let rs = 1.0 / sqrt(wg_sum(t, q) * inv_d + pf(5u));
    for (var j = t; j < d; j = j + WG) {
        var v = (X[base + j] - mu) * rs;
        if P[3] == 1u {
            v = v * W[j];
        }
        if P[4] == 1u {
            v = v + Bias[j];
        }
        Y[base + j] = v;
    }
    if t == 0u {
        STATS[2u * row] = mu;
        STATS[2u * row + 1u] = rs;
    }
}
