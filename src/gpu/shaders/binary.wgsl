// Binary elementwise ops with broadcasting: both operands strided (zero strides on
// broadcast axes). The op code (P[HDR]) follows `ops::elementwise::Binary`.
@group(0) @binding(1) var<storage, read> A: array<f32>;
@group(0) @binding(2) var<storage, read> B: array<f32>;
@group(0) @binding(3) var<storage, read_write> Y: array<f32>;

fn b2f(b: bool) -> f32 {
    return select(0.0, 1.0, b);
}

@compute @workgroup_size(256)
fn binary(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat(id, nwg);
    if i >= P[0] {
        return;
    }
    let x = A[strided(i, 0u)];
    let y = B[strided(i, 1u)];
    var r: f32;
    switch P[HDR] {
        case 0u: { r = x + y; }
        case 1u: { r = x - y; }
        case 2u: { r = x * y; }
        case 3u: { r = x / y; }
        case 4u: { r = select(y, x, x >= y); }
        case 5u: { r = select(y, x, x <= y); }
        case 6u: { r = b2f(x == y); }
        case 7u: { r = b2f(x < y); }
        case 8u: { r = b2f(x <= y); }
        case 9u: { r = b2f(x > y); }
        default: { r = b2f(x >= y); }
    }
    Y[i] = r;
}
