// Batched GEMM C[b] = A[b] · B[b] with strided A and B (any row / column / batch strides,
// zero strides for broadcast batch axes) and a dense C of shape [batch, M, N].
// Tiles of 64×64 outputs per workgroup of 16×16 invocations, each computing a 4×4 block
// from 16-deep slices of A and B staged in workgroup memory.
// P: M K N nb dims[4] | a: off rs cs bstrides[4] | b: off rs cs bstrides[4] | batch_base
@group(0) @binding(1) var<storage, read> A: array<f32>;
@group(0) @binding(2) var<storage, read> B: array<f32>;
@group(0) @binding(3) var<storage, read_write> C: array<f32>;

const TS: u32 = 64u;
const TK: u32 = 16u;
var<workgroup> As: array<f32, 1024>; // [TK][TS]
var<workgroup> Bs: array<f32, 1024>; // [TK][TS]

// Offset of batch entry `bi` in the operand whose batch strides start at P[s].
fn batch_offset(bi: u32, s: u32) -> u32 {
    return unravel(bi, P[3], 4u, s);
}

@compute @workgroup_size(16, 16, 1)
fn gemm(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let M = P[0];
    let K = P[1];
    let N = P[2];
    let bi = P[22] + wg.z;
    let a0 = P[8] + batch_offset(bi, 11u);
    let b0 = P[15] + batch_offset(bi, 18u);
    let ars = P[9];
    let acs = P[10];
    let brs = P[16];
    let bcs = P[17];
    let m0 = wg.y * TS;
    let n0 = wg.x * TS;
    let tid = lid.y * 16u + lid.x;
    var acc: array<f32, 16>;
    for (var k0 = 0u; k0 < K; k0 = k0 + TK) {
        for (var r = 0u; r < 4u; r = r + 1u) {
            let e = tid + r * 256u;
            // A tile: element (mm, kk), consecutive invocations along k.
            let mm = e / TK;
            let kk = e % TK;
            var av = 0.0;
            if m0 + mm < M && k0 + kk < K {
                av = A[a0 + (m0 + mm) * ars + (k0 + kk) * acs];
            }
            As[kk * TS + mm] = av;
            // B tile: element (kb, nn), consecutive invocations along n.
            let kb = e / TS;
            let nn = e % TS;
            var bv = 0.0;
            if k0 + kb < K && n0 + nn < N {
                bv = B[b0 + (k0 + kb) * brs + (n0 + nn) * bcs];
            }
            Bs[kb * TS + nn] = bv;
        }
        workgroupBarrier();
        for (var kk = 0u; kk < TK; kk = kk + 1u) {
            var a: array<f32, 4>;
            var b: array<f32, 4>;
            for (var i = 0u; i < 4u; i = i + 1u) {
                a[i] = As[kk * TS + lid.y * 4u + i];
                b[i] = Bs[kk * TS + lid.x * 4u + i];
            }
            for (var i = 0u; i < 4u; i = i + 1u) {
                for (var j = 0u; j < 4u; j = j + 1u) {
                    acc[i * 4u + j] = fma(a[i], b[j], acc[i * 4u + j]);
                }
            }
        }
        workgroupBarrier();
    }
    let c0 = bi * M * N;
    for (var i = 0u; i < 4u; i = i + 1u) {
        let m = m0 + lid.y * 4u + i;
        for (var j = 0u; j < 4u; j = j + 1u) {
            let n = n0 + lid.x * 4u + j;
            if m < M && n < N {
                C[c0 + m * N + n] = acc[i * 4u + j];
            }
        }
    }
}
