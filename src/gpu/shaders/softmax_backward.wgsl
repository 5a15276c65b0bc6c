// Backward of softmax (dx = y ⊙ (g − Σ g⊙y)) and log-softmax (dx = g − e^y Σ g) from
// the forward's output y, per row of dense [rows, n] inputs. P: rows n log
@group(0) @binding(1) var<storage, read> Yf: array<f32>;
@group(0) @binding(2) var<storage, read> G: array<f32>;
@group(0) @binding(3) var<storage, read_write> DX: array<f32>;

@compute @workgroup_size(256)
fn softmax_backward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                    @builtin(local_invocation_index) t: u32) {
    let row = row_index(wg, nwg);
    if row >= P[0] {
        return;
    }
    let n = P[1];
    let base = row * n;
    let log_form = P[2] == 1u;
    var s = 0.0;
    for (var j = t; j < n; j = j + WG) {
        s = s + select(G[base + j] * Yf[base + j], G[base + j], log_form);
    }
    s = wg_sum(t, s);
    for (var j = t; j < n; j = j + WG) {
        let y = Yf[base + j];
        let g = G[base + j];
        DX[base + j] = select(y * (g - s), g - exp(y) * s, log_form);
    }
}
