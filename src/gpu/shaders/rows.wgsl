// Workgroup-wide sum and max for the row kernels (one 256-wide workgroup per row).
// Call from uniform control flow only (they synchronise the workgroup).
var<workgroup> red: array<f32, 256>;

fn wg_reduce(t: u32, v: f32, is_max: bool) -> f32 {
    red[t] = v;
    workgroupBarrier();
    for (var s = 128u; s > 0u; s = s >> 1u) {
        if t < s {
            red[t] = select(red[t] + red[t + s], max(red[t], red[t + s]), is_max);
        }
        workgroupBarrier();
    }
    let r = red[0];
    workgroupBarrier();
    return r;
}

fn wg_sum(t: u32, v: f32) -> f32 {
    return wg_reduce(t, v, false);
}

fn wg_max(t: u32, v: f32) -> f32 {
    return wg_reduce(t, v, true);
}

fn row_index(wg: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wg.x + wg.y * nwg.x;
}
