// One row's Householder steps H_{count−1} ⋯ H_0 applied in place to WORK[wb .. wb + d],
// shared by the forward and the backward (which recomputes each step's input). Needs
// bindings U, ALPHA and WORK. P: n r d scale_bits
fn apply_steps(row: u32, count: u32, wb: u32) {
    let r = P[1];
    let d = P[2];
    let scale = pf(3u);
    for (var k = 0u; k < count; k = k + 1u) {
        let ub = (row * r + k) * d;
        var dot = 0.0;
        for (var j = 0u; j < d; j = j + 1u) {
            dot = dot + U[ub + j] * WORK[wb + j];
        }
        let coef = scale * ALPHA[row * r + k] * dot;
        for (var j = 0u; j < d; j = j + 1u) {
            WORK[wb + j] = fma(-coef, U[ub + j], WORK[wb + j]);
        }
    }
}
