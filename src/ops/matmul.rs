//! Matrix products on `matrixmultiply::sgemm` with strided operands: transposed or
//! narrowed inputs are passed by their strides, never copied. Batch axes broadcast
//! (NumPy rules). Backward accumulates into the gradient buffers (beta = 1) where a
//! batch axis was broadcast, so `dW += xᵀ·dy` needs no temporary.

use crate::autograd::Backward;
use crate::error::{Error, Result};
use crate::layout::Layout;
use crate::shape::{Shape, broadcast_shape};
use crate::storage::{Device, Storage};
use crate::tensor::Tensor;
use rayon::prelude::*;
use std::sync::Arc;

/// Whether a gemm overwrites its output or adds to it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accum {
    Replace,
    Add,
}

/// A strided matrix view into a slice.
#[derive(Clone, Copy)]
pub struct MatRef<'a> {
    pub data: &'a [f32],
    pub offset: usize,
    pub rows: usize,
    pub cols: usize,
    pub rs: usize,
    pub cs: usize,
}

/// `c = a·b` (Replace) or `c += a·b` (Add) for an `m×n` block of `c` at `c_off` with
/// strides `(c_rs, c_cs)`.
pub fn gemm(a: MatRef, b: MatRef, c: &mut [f32], c_off: usize, c_rs: usize, c_cs: usize, accum: Accum) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    assert!(b.rows == k, "gemm: {m}x{k} * {}x{n}", b.rows);
    if m == 0 || n == 0 {
        return;
    }
    let c_end = c_off + (m - 1) * c_rs + (n - 1) * c_cs;
    assert!(c_end < c.len(), "gemm: output block out of bounds");
    if k == 0 {
        if accum == Accum::Replace {
            for i in 0..m {
                for j in 0..n {
                    c[c_off + i * c_rs + j * c_cs] = 0.0;
                }
            }
        }
        return;
    }
    assert!(a.offset + (m - 1) * a.rs + (k - 1) * a.cs < a.data.len(), "gemm: lhs out of bounds");
    assert!(b.offset + (k - 1) * b.rs + (n - 1) * b.cs < b.data.len(), "gemm: rhs out of bounds");
    // SAFETY: the asserts above bound every element the three strided views touch, and
    // `c` is borrowed mutably for the call.
    unsafe { sgemm_raw(a, b, c.as_mut_ptr().add(c_off), c_rs, c_cs, accum) }
}

/// The `matrixmultiply` call behind [`gemm`], for `m, k, n ≥ 1`.
///
/// # Safety
/// `a` and `b` must be in bounds of their slices, the `m×n` block at `c` with strides
/// `(c_rs, c_cs)` must be valid for writes, and nothing else may access it meanwhile.
unsafe fn sgemm_raw(a: MatRef, b: MatRef, c: *mut f32, c_rs: usize, c_cs: usize, accum: Accum) {
    let beta = if accum == Accum::Add { 1.0 } else { 0.0 };
    // SAFETY: the caller's promise.
    unsafe {
        matrixmultiply::sgemm(
            a.rows,
            a.cols,
            b.cols,
            1.0,
            a.data.as_ptr().add(a.offset),
            a.rs as isize,
            a.cs as isize,
            b.data.as_ptr().add(b.offset),
            b.rs as isize,
            b.cs as isize,
            beta,
            c,
            c_rs as isize,
            c_cs as isize,
        );
    }
}

/// Rows per parallel task of a large GEMM: a function of the shape only, so the same
/// sgemm calls run whatever the thread count (bit-identical results).
fn gemm_rows_per_task(m: usize) -> usize {
    // At least 64 rows per task (each task re-packs the rhs), at most 8 tasks.
    m.div_ceil(8).max(64).next_multiple_of(8)
}

/// `gemm` into a dense row-major `m×n` output slice, split over row blocks in parallel
/// when the product is large enough to pay for a fork/join. A short, wide product (a
/// batch of 128 rows times a weight matrix) is split over column blocks instead, as is
/// any product where that packs less: every row task re-packs the whole right-hand
/// side, while a column task packs only its own part of it and all of the left (the
/// MLP student's 18 GEMMs at batch 128 took 52–56 ms instead of 62–69 on 2 threads in
/// a one-off timing; `fixpoint dino --bench-steps` shows the step).
/// The split never changes a result: each element's sum runs over `k` in the same
/// blocks and order whichever block of `c` it is computed in (tested at 1–4 threads).
pub fn gemm_dense(a: MatRef, b: MatRef, c: &mut [f32], accum: Accum) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    debug_assert_eq!(c.len(), m * n);
    let threads = crate::cpu::par::threads();
    if m * k * n < crate::cpu::par::GEMM_MIN_FLOPS || threads == 1 || n == 0 || k == 0 {
        gemm(a, b, c, 0, n, 1, accum);
        return;
    }
    let rows = gemm_rows_per_task(m);
    let row_tasks = m.div_ceil(rows);
    // Every row task packs all of `b` (k×n), every column task all of `a` (m×k). Split
    // by columns when the product is short and wide (n ≥ 4m), when that packs less
    // (`threads·m < row_tasks·n`: at 2 threads and batch 128, any n > 128), or when the
    // rows would make one task. (The packing clause was added to `n ≥ 4m`: in one run
    // of the MLP student's step at 2 threads, its 4096→256 input gradient went from 3.2
    // to 2.6 ms and its 2048×2048 weight gradient from 6.5 to 5.3 ms.)
    if n >= 4 * m || threads * m < row_tasks * n || (row_tasks == 1 && n >= 32) {
        // Column blocks, one per thread, a multiple of the micro-kernel's widths.
        let width = n.div_ceil(threads).next_multiple_of(16);
        assert!(a.offset + (m - 1) * a.rs + (k - 1) * a.cs < a.data.len(), "gemm: lhs out of bounds");
        assert!(b.offset + (k - 1) * b.rs + (n - 1) * b.cs < b.data.len(), "gemm: rhs out of bounds");
        assert!(c.len() >= m * n, "gemm: output block out of bounds");
        let cp = crate::cpu::par::SyncPtr(c.as_mut_ptr());
        (0..n.div_ceil(width)).into_par_iter().for_each(|j| {
            let j0 = j * width;
            let bj = MatRef { offset: b.offset + j0 * b.cs, cols: width.min(n - j0), ..b };
            // SAFETY: the asserts bound both operands and `c` (m×n, row-major); task `j`
            // writes only columns j0..j0 + width of it, disjoint from every other task,
            // and `c` stays mutably borrowed until all tasks are done.
            unsafe { sgemm_raw(a, bj, cp.at(j0), n, 1, accum) }
        });
        return;
    }
    if m <= rows {
        gemm(a, b, c, 0, n, 1, accum);
        return;
    }
    crate::cpu::par::for_chunks_mut(c, rows * n, 0, |i, cc| {
        let r0 = i * rows;
        let sub = MatRef { offset: a.offset + r0 * a.rs, rows: cc.len() / n, ..a };
        gemm(sub, b, cc, 0, n, 1, accum);
    });
}

/// If the axes `dims` (with `strides`) can be walked as a single axis, its stride.
/// A stride of 0 is real (a broadcast operand, e.g. the gradient of a sum) and must be
/// passed on as 0, not rounded up: only the output may not alias.
fn merged_stride(dims: &[usize], strides: &[usize]) -> Option<usize> {
    let pairs: Vec<(usize, usize)> =
        dims.iter().copied().zip(strides.iter().copied()).filter(|(d, _)| *d != 1).collect();
    match pairs.len() {
        0 => Some(0),
        _ => {
            for w in pairs.windows(2) {
                if w[0].1 != w[1].0 * w[1].1 {
                    return None;
                }
            }
            Some(pairs.last().unwrap().1)
        }
    }
}

/// `out[batch] (+)= lhs[batch] · rhs[batch]` where `out` has `out_batch` leading axes
/// (broadcast from the full batch `batch`; a size-1 / missing output batch axis
/// accumulates). `lhs`, `rhs` are already broadcast to `batch` + their matrix dims.
fn batched_gemm(
    lhs: &Tensor,
    l: &Layout,
    rhs: &Tensor,
    r: &Layout,
    batch: &[usize],
    out: &mut [f32],
    out_layout: &Layout,
) {
    let nb = batch.len();
    let (m, k) = (l.dims()[nb], l.dims()[nb + 1]);
    let n = r.dims()[nb + 1];
    let (ls, rs, os) = (&l.strides, &r.strides, &out_layout.strides);
    let (ld, rd, od) = (lhs.storage.cpu(), rhs.storage.cpu(), out);
    let accum = if os[..nb].contains(&0) && batch.iter().zip(&os[..nb]).any(|(&d, &s)| d > 1 && s == 0) {
        Accum::Add
    } else {
        Accum::Replace
    };
    // Fold the batch into M when the rhs is shared across it and lhs/out rows merge.
    if nb > 0 && rs[..nb].iter().zip(batch).all(|(&s, &d)| s == 0 || d == 1) {
        let lm: Vec<usize> = batch.iter().copied().chain([m]).collect();
        let lstr: Vec<usize> = ls[..=nb].to_vec();
        let ostr: Vec<usize> = os[..=nb].to_vec();
        if let (Some(lrs), Some(ors)) = (merged_stride(&lm, &lstr), merged_stride(&lm, &ostr))
            && !ostr[..nb].contains(&0)
        {
            let mm: usize = lm.iter().product();
            let a = MatRef { data: ld, offset: l.offset, rows: mm, cols: k, rs: lrs, cs: ls[nb + 1] };
            let b = MatRef { data: rd, offset: r.offset, rows: k, cols: n, rs: rs[nb], cs: rs[nb + 1] };
            if out_layout.offset == 0 && ors == n && os[nb + 1] == 1 && od.len() == mm * n {
                gemm_dense(a, b, od, Accum::Replace);
            } else {
                gemm(a, b, od, out_layout.offset, ors.max(1), os[nb + 1], Accum::Replace);
            }
            return;
        }
    }
    // Fold the batch into K when the output is shared across it (weight gradients).
    if nb > 0 && os[..nb].iter().zip(batch).all(|(&s, &d)| s == 0 || d == 1) {
        let kk: Vec<usize> = batch.iter().copied().chain([k]).collect();
        let lk: Vec<usize> = ls[..nb].iter().copied().chain([ls[nb + 1]]).collect();
        let rk: Vec<usize> = rs[..nb].iter().copied().chain([rs[nb]]).collect();
        if let (Some(lcs), Some(rrs)) = (merged_stride(&kk, &lk), merged_stride(&kk, &rk)) {
            let kt = kk.iter().product();
            let a = MatRef { data: ld, offset: l.offset, rows: m, cols: kt, rs: ls[nb], cs: lcs };
            let b = MatRef { data: rd, offset: r.offset, rows: kt, cols: n, rs: rrs, cs: rs[nb + 1] };
            if out_layout.offset == 0 && os[nb] == n && os[nb + 1] == 1 && od.len() == m * n {
                gemm_dense(a, b, od, Accum::Replace);
            } else {
                gemm(a, b, od, out_layout.offset, os[nb], os[nb + 1], Accum::Replace);
            }
            return;
        }
    }
    let total: usize = batch.iter().product();
    let dense_out = accum == Accum::Replace && out_layout.is_contiguous() && out_layout.offset == 0;
    if nb == 0 && dense_out {
        let a = MatRef { data: ld, offset: l.offset, rows: m, cols: k, rs: ls[0], cs: ls[1] };
        let b = MatRef { data: rd, offset: r.offset, rows: k, cols: n, rs: rs[0], cs: rs[1] };
        gemm_dense(a, b, od, Accum::Replace);
        return;
    }
    if dense_out && m * n > 0 && total * m * k * n >= crate::cpu::par::GEMM_MIN_FLOPS && total > 1 {
        // One task per batch entry (fixed split), each writing its own output block.
        let unravel = |mut flat: usize, s: &[usize]| {
            let mut off = 0;
            for ax in (0..nb).rev() {
                off += (flat % batch[ax]) * s[ax];
                flat /= batch[ax];
            }
            off
        };
        crate::cpu::par::for_chunks_mut(od, m * n, 0, |bi, cc| {
            let a =
                MatRef { data: ld, offset: l.offset + unravel(bi, ls), rows: m, cols: k, rs: ls[nb], cs: ls[nb + 1] };
            let b =
                MatRef { data: rd, offset: r.offset + unravel(bi, rs), rows: k, cols: n, rs: rs[nb], cs: rs[nb + 1] };
            gemm(a, b, cc, 0, n, 1, Accum::Replace);
        });
        return;
    }
    let mut idx = vec![0usize; nb];
    for _ in 0..total {
        let off = |s: &[usize], base: usize| base + idx.iter().zip(s).map(|(i, s)| i * s).sum::<usize>();
        let a = MatRef { data: ld, offset: off(ls, l.offset), rows: m, cols: k, rs: ls[nb], cs: ls[nb + 1] };
        let b = MatRef { data: rd, offset: off(rs, r.offset), rows: k, cols: n, rs: rs[nb], cs: rs[nb + 1] };
        gemm(a, b, od, off(os, out_layout.offset), os[nb], os[nb + 1], accum);
        for ax in (0..nb).rev() {
            idx[ax] += 1;
            if idx[ax] < batch[ax] {
                break;
            }
            idx[ax] = 0;
        }
    }
}

/// `lhs · rhs` with the batch of the result reduced (summed) to `out_shape`'s batch.
fn matmul_into_shape(op: &'static str, lhs: &Tensor, rhs: &Tensor, out_batch: &[usize]) -> Result<(Storage, Shape)> {
    let (ls, rs) = (lhs.shape(), rhs.shape());
    let err = |detail: String| Error::MatMul { op, lhs: lhs.shape_obj().clone(), rhs: rhs.shape_obj().clone(), detail };
    if ls.len() < 2 || rs.len() < 2 {
        return Err(err("both operands need at least 2 axes (use reshape for vectors)".into()));
    }
    let (m, k) = (ls[ls.len() - 2], ls[ls.len() - 1]);
    let (k2, n) = (rs[rs.len() - 2], rs[rs.len() - 1]);
    if k != k2 {
        return Err(err(format!("inner dims differ ({k} != {k2})")));
    }
    let lb = Shape::from(&ls[..ls.len() - 2]);
    let rb = Shape::from(&rs[..rs.len() - 2]);
    let batch = broadcast_shape(op, &lb, &rb).map_err(|_| err(format!("batch dims {lb} and {rb} do not broadcast")))?;
    let full = |mat: [usize; 2]| Shape(batch.dims().iter().copied().chain(mat).collect());
    let l = lhs.layout.broadcast_to(op, &full([m, k]))?;
    let r = rhs.layout.broadcast_to(op, &full([k, n]))?;
    let out_shape = Shape(out_batch.iter().copied().chain([m, n]).collect());
    if Tensor::common_device(op, &[lhs, rhs])? == Device::Gpu {
        // The full batched product, then summed down to the output's batch.
        let full_t = Tensor::from_storage(on_gpu!(op, gemm::batched(lhs, &l, rhs, &r, batch.dims()))?, full([m, n]));
        let out = full_t.sum_to(&out_shape)?.contiguous();
        return Ok((Arc::unwrap_or_clone(out.storage.clone()), out_shape));
    }
    let out_layout = Layout::contiguous(out_shape.clone()).broadcast_to(op, &full([m, n]))?;
    // Outputs shared across a broadcast batch accumulate (need zeros); others are
    // overwritten by sgemm with beta = 0.
    let accumulates = out_layout.strides[..batch.rank()].iter().zip(batch.dims()).any(|(&s, &d)| s == 0 && d > 1);
    let mut out =
        if accumulates { crate::storage::zeroed(out_shape.numel()) } else { crate::storage::buffer(out_shape.numel()) };
    batched_gemm(lhs, &l, rhs, &r, batch.dims(), &mut out, &out_layout);
    Ok((Storage::Cpu(out), out_shape))
}

struct MatMulBackward {
    lhs: Option<Tensor>,
    rhs: Option<Tensor>,
    lhs_shape: Shape,
    rhs_shape: Shape,
}

impl Backward for MatMulBackward {
    fn name(&self) -> &'static str {
        "matmul"
    }
    fn backward(&self, g: &Tensor, needs: &[bool]) -> Result<Vec<Option<Tensor>>> {
        let batch_of = |s: &Shape| s.dims()[..s.rank() - 2].to_vec();
        let ga = if needs[0] {
            let rhs_t = self.rhs.as_ref().expect("rhs saved").t()?;
            let (d, s) = matmul_into_shape("matmul backward", g, &rhs_t, &batch_of(&self.lhs_shape))?;
            Some(Tensor::from_storage(d, s))
        } else {
            None
        };
        let gb = if needs[1] {
            let lhs_t = self.lhs.as_ref().expect("lhs saved").t()?;
            let (d, s) = matmul_into_shape("matmul backward", &lhs_t, g, &batch_of(&self.rhs_shape))?;
            Some(Tensor::from_storage(d, s))
        } else {
            None
        };
        // The gradient's batch has the operand's rank only when it was not broadcast
        // in from fewer axes; reshape handles the size-1 axes.
        Ok(vec![
            ga.map(|t| t.reshape(self.lhs_shape.dims())).transpose()?,
            gb.map(|t| t.reshape(self.rhs_shape.dims())).transpose()?,
        ])
    }
}

impl Tensor {
    /// Matrix product over the last two axes; leading (batch) axes broadcast.
    pub fn matmul(&self, rhs: &Tensor) -> Result<Tensor> {
        let _p = crate::profile::fwd("matmul");
        let (ls, rs) = (self.shape(), rhs.shape());
        let batch = if ls.len() >= 2 && rs.len() >= 2 {
            broadcast_shape("matmul", &Shape::from(&ls[..ls.len() - 2]), &Shape::from(&rs[..rs.len() - 2]))
                .map(|s| s.0)
                .unwrap_or_default()
        } else {
            vec![]
        };
        let (out, shape) = matmul_into_shape("matmul", self, rhs, &batch)?;
        let (need_l, need_r) = (self.requires_grad(), rhs.requires_grad());
        Ok(Tensor::from_storage_op(out, shape, &[self, rhs], || MatMulBackward {
            lhs: need_r.then(|| self.detach()),
            rhs: need_l.then(|| rhs.detach()),
            lhs_shape: self.shape_obj().clone(),
            rhs_shape: rhs.shape_obj().clone(),
        }))
    }
}
