// Shared by every kernel. Binding 0 holds the kernel's parameters as u32 (f32 values
// travel as their bits). Strided kernels start with a header: n, rank, dims[8], then per
// operand (up to 3) offset, strides[8] (see `gpu::strided_header`); kernel-specific
// parameters follow at HDR.
@group(0) @binding(0) var<storage, read> P: array<u32>;

const MAX_RANK: u32 = 8u;
const HDR: u32 = 37u;
const WG: u32 = 256u;

// Flat invocation index over a 2-D grid of WG-wide workgroups (gpu::grid).
fn flat(id: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return id.x + id.y * nwg.x * WG;
}

fn pf(i: u32) -> f32 {
    return bitcast<f32>(P[i]);
}

// Offset of row-major index `i` over `rank` axes whose sizes start at P[dims] and whose
// strides start at P[strides].
fn unravel(i: u32, rank: u32, dims: u32, strides: u32) -> u32 {
    var rem = i;
    var off = 0u;
    var d = rank;
    loop {
        if d == 0u {
            break;
        }
        d = d - 1u;
        let dim = P[dims + d];
        off = off + (rem % dim) * P[strides + d];
        rem = rem / dim;
    }
    return off;
}

// Element offset of row-major index `i` of the op's shape in operand `k`.
fn strided(i: u32, k: u32) -> u32 {
    let base = 2u + MAX_RANK + k * (1u + MAX_RANK);
    return P[base] + unravel(i, P[1], 2u, base + 1u);
}
