// Step bookkeeping of the chunked scan h_s = c_s ⊙ h_{s−1} + x_s over dense (B, T, D)
// data, in step order s (time t = s, or T − 1 − s when P[3] = 1). With lag 0 the
// coefficient of step s is A at step s (the forward scan); with lag 1 it is A at step
// s − 1 and 0 at the first step (the backward's g_t = dh_t + a_{t+1} g_{t+1}).
// P: B T D reverse has_h0 chunk_len chunks lag. Needs a binding named A.
fn time_of(s: u32) -> u32 {
    return select(s, P[1] - 1u - s, P[3] == 1u);
}

fn at(b: u32, s: u32, c: u32) -> u32 {
    return (b * P[1] + time_of(s)) * P[2] + c;
}

fn coef(b: u32, s: u32, c: u32) -> f32 {
    if P[7] == 0u {
        return A[at(b, s, c)];
    }
    if s == 0u {
        return 0.0;
    }
    return A[at(b, s - 1u, c)];
}

// (batch, chunk, channel) of invocation i over B × chunks × D.
fn chunk_of(i: u32) -> vec3<u32> {
    let c = i % P[2];
    let bc = i / P[2];
    return vec3<u32>(bc / P[6], bc % P[6], c);
}

// Steps [start, end) of the chunk of invocation `q` (from `chunk_of`).
fn chunk_steps(q: vec3<u32>) -> vec2<u32> {
    let s0 = q.y * P[5];
    return vec2<u32>(s0, min(s0 + P[5], P[1]));
}
