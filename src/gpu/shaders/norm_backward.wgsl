// Backward of `norm` per row: xhat = (x − mean)·rstd, dxhat = g ⊙ w,
// dx = rstd·(dxhat − mean(dxhat) − xhat·mean(dxhat ⊙ xhat)) (no mean(dxhat) term for
// RMSNorm), and GX = g ⊙ xhat, whose column sums are the weight gradient.
// P: rows d center has_w
@group(0) @binding(1) var<storage, read> X: array<f32>;
@group(0) @binding(2) var<storage, read> G: array<f32>;
@group(0) @binding(3) var<storage, read> W: array<f32>;
@group(0) @binding(4) var<storage, read> STATS: array<f32>;
@group(0) @binding(5) var<storage, read_write> DX: array<f32>;
@group(0) @binding(6) var<storage, read_write> GX: array<f32>;

fn dxhat(base: u32, j: u32) -> f32 {
    return select(G[base + j], G[base + j] * W[j], P[3] == 1u);
}

@compute @workgroup_size(256)
fn norm_backward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) t: u32) {
    let row = row_index(wg, nwg);
    if row >= P[0] {
        return;
    }
    let d = P[1];
    let base = row * d;
    let inv_d = 1.0 / f32(d);
    let mu = STATS[2u * row];
    let rs = STATS[2u * row + 1u];
    var sa = 0.0;
    var sc = 0.0;
    for (var j = t; j < d; j = j + WG) {
        let h = (X[base + j] - mu) * rs;
        let dh = dxhat(base, j);
        sa = sa + dh;
        sc = sc + dh * h;
        GX[base + j] = G[base + j] * h;
    }
    let a = select(0.0, wg_sum(t, sa) * inv_d, P[2] == 1u);
    let c = wg_sum(t, sc) * inv_d;
    for (var j = t; j < d; j = j + WG) {
        let h = (X[base + j] - mu) * rs;
        DX[base + j] = rs * (dxhat(base, j) - a - h * c);
    }
}
