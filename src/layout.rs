//! Strided layouts. `transpose`, `permute`, `narrow`, `broadcast_to` and `reshape` of
//! contiguous data only rewrite `{shape, strides, offset}`; no data moves.

use crate::error::{Error, Result};
use crate::shape::Shape;

/// How a tensor's elements sit in its storage: element `[i0, i1, ..]` is at
/// `offset + i0 * strides[0] + i1 * strides[1] + ..`. A stride of 0 repeats an element
/// (broadcasting).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    pub shape: Shape,
    pub strides: Vec<usize>,
    pub offset: usize,
}

impl Layout {
    /// A contiguous row-major layout starting at `offset`.
    pub fn contiguous_at(shape: Shape, offset: usize) -> Self {
        let strides = shape.contiguous_strides();
        Layout { shape, strides, offset }
    }
    pub fn contiguous(shape: Shape) -> Self {
        Self::contiguous_at(shape, 0)
    }
    pub fn dims(&self) -> &[usize] {
        self.shape.dims()
    }
    pub fn rank(&self) -> usize {
        self.shape.rank()
    }
    pub fn numel(&self) -> usize {
        self.shape.numel()
    }
    /// True when the elements are stored densely in row-major order (size-1 axes may
    /// have any stride).
    pub fn is_contiguous(&self) -> bool {
        let mut expected = 1;
        for (&d, &s) in self.dims().iter().zip(&self.strides).rev() {
            if d != 1 && s != expected {
                return false;
            }
            expected *= d;
        }
        true
    }
    /// The storage range `offset..offset + numel` when contiguous.
    pub fn contiguous_range(&self) -> Option<std::ops::Range<usize>> {
        self.is_contiguous().then(|| self.offset..self.offset + self.numel())
    }
    /// One past the largest storage index this layout touches (0 when empty).
    pub fn storage_extent(&self) -> usize {
        if self.numel() == 0 {
            return self.offset;
        }
        self.offset + self.dims().iter().zip(&self.strides).map(|(&d, &s)| (d - 1) * s).sum::<usize>() + 1
    }

    pub fn permute(&self, op: &'static str, axes: &[usize]) -> Result<Layout> {
        let r = self.rank();
        let mut seen = vec![false; r];
        if axes.len() != r {
            return Err(Error::InvalidArgument {
                op,
                message: format!(
                    "permutation {axes:?} has {} axes but the tensor {} has rank {r}",
                    axes.len(),
                    self.shape
                ),
            });
        }
        for &a in axes {
            if a >= r {
                return Err(Error::Axis { op, axis: a as isize, rank: r });
            }
            if seen[a] {
                return Err(Error::DuplicateAxis { op, axis: a, shape: self.shape.clone() });
            }
            seen[a] = true;
        }
        Ok(Layout {
            shape: Shape(axes.iter().map(|&a| self.dims()[a]).collect()),
            strides: axes.iter().map(|&a| self.strides[a]).collect(),
            offset: self.offset,
        })
    }

    pub fn transpose(&self, a: usize, b: usize) -> Layout {
        let mut l = self.clone();
        l.shape.0.swap(a, b);
        l.strides.swap(a, b);
        l
    }

    /// Elements `start..start + len` along `axis`.
    pub fn narrow(&self, op: &'static str, axis: usize, start: usize, len: usize) -> Result<Layout> {
        let size = self.dims()[axis];
        if start.checked_add(len).is_none_or(|e| e > size) {
            return Err(Error::Index { op, axis, index: start.saturating_add(len), size, shape: self.shape.clone() });
        }
        let mut l = self.clone();
        l.shape.0[axis] = len;
        if len > 0 {
            l.offset += start * self.strides[axis];
        }
        Ok(l)
    }

    /// Broadcast to `target` (NumPy rules: new leading axes, size-1 axes stretched).
    pub fn broadcast_to(&self, op: &'static str, target: &Shape) -> Result<Layout> {
        let r = target.rank();
        let err = |axis| Error::Broadcast {
            op,
            lhs: self.shape.clone(),
            rhs: target.clone(),
            axis,
            lhs_size: if axis + self.rank() >= r { self.dims()[axis + self.rank() - r] } else { 1 },
            rhs_size: target.dims()[axis],
        };
        if self.rank() > r {
            return Err(Error::InvalidArgument {
                op,
                message: format!("cannot broadcast {} to lower rank {}", self.shape, target),
            });
        }
        let lead = r - self.rank();
        let mut strides = vec![0; r];
        for i in 0..r {
            if i < lead {
                continue;
            }
            let (d, s) = (self.dims()[i - lead], self.strides[i - lead]);
            let t = target.dims()[i];
            strides[i] = if d == t {
                s
            } else if d == 1 {
                0
            } else {
                return Err(err(i));
            };
        }
        Ok(Layout { shape: target.clone(), strides, offset: self.offset })
    }

    /// A view with a new shape when the data is contiguous; `None` otherwise.
    pub fn reshape_view(&self, to: &Shape) -> Option<Layout> {
        self.is_contiguous().then(|| Layout::contiguous_at(to.clone(), self.offset))
    }

    /// Write the elements of this view of `src` to `dst` (`numel` long) in row-major
    /// order. Rows whose elements are adjacent in `src` are copied whole (a permuted or
    /// narrowed activation is usually made of such rows), others element by element;
    /// large views in parallel over fixed chunks of rows.
    pub fn gather_into(&self, src: &[f32], dst: &mut [f32]) {
        assert_eq!(dst.len(), self.numel(), "gather_into: output length");
        if let Some(r) = self.contiguous_range() {
            dst.copy_from_slice(&src[r]);
            return;
        }
        let dims = self.dims();
        // Rank 0 is contiguous, so there is a last axis here.
        let n = dims[dims.len() - 1];
        if dst.is_empty() {
            return;
        }
        let rows_per_task = crate::cpu::par::rows_for(n, crate::cpu::par::ELEMWISE_CHUNK);
        crate::cpu::par::for_row_chunks_mut(dst, n, rows_per_task, crate::cpu::par::ELEMWISE_MIN, |r0, chunk| {
            let rows = r0..r0 + chunk.len() / n;
            let mut out = chunk.chunks_exact_mut(n);
            for_each_row_in(dims, &[&self.strides], &[self.offset], rows, |b, len, inner| {
                let o = out.next().expect("one output row per row");
                if inner[0] == 1 {
                    o.copy_from_slice(&src[b[0]..b[0] + len]);
                } else {
                    for (k, v) in o.iter_mut().enumerate() {
                        *v = src[b[0] + k * inner[0]];
                    }
                }
            });
        });
    }

    /// Call `f(out_index, storage_offset)` for every element in row-major order.
    #[inline]
    pub fn for_each_offset(&self, mut f: impl FnMut(usize, usize)) {
        if let Some(r) = self.contiguous_range() {
            for (i, o) in r.enumerate() {
                f(i, o);
            }
            return;
        }
        let mut i = 0;
        for_each_row(self.dims(), &[&self.strides], &[self.offset], |bases, n, inner| {
            let (b, s) = (bases[0], inner[0]);
            for k in 0..n {
                f(i, b + k * s);
                i += 1;
            }
        });
    }
}

/// Iterate the rows (the innermost axis) of `dims` for several operands at once.
/// For each row `f(bases, len, inner_strides)` gets every operand's storage offset of the
/// row's first element. Rank 0 counts as one row of length 1. Nothing is called when
/// the shape holds no element.
pub fn for_each_row<const N: usize>(
    dims: &[usize],
    strides: &[&[usize]; N],
    offsets: &[usize; N],
    f: impl FnMut(&[usize; N], usize, &[usize; N]),
) {
    let rows = if dims.is_empty() { 1 } else { dims[..dims.len() - 1].iter().product() };
    for_each_row_in(dims, strides, offsets, 0..rows, f);
}

/// [`for_each_row`] restricted to the rows `rows` (numbered in row-major order of the
/// outer axes), so that callers can split the rows into parallel chunks.
pub fn for_each_row_in<const N: usize>(
    dims: &[usize],
    strides: &[&[usize]; N],
    offsets: &[usize; N],
    rows: std::ops::Range<usize>,
    mut f: impl FnMut(&[usize; N], usize, &[usize; N]),
) {
    if dims.contains(&0) || rows.is_empty() {
        return;
    }
    let r = dims.len();
    if r == 0 {
        f(offsets, 1, &[0; N]);
        return;
    }
    let n = dims[r - 1];
    let inner: [usize; N] = std::array::from_fn(|k| strides[k][r - 1]);
    let outer = &dims[..r - 1];
    // Multi-index and bases of the first row.
    let mut idx = vec![0usize; outer.len()];
    let mut rem = rows.start;
    for ax in (0..outer.len()).rev() {
        idx[ax] = rem % outer[ax];
        rem /= outer[ax];
    }
    let mut bases: [usize; N] =
        std::array::from_fn(|k| offsets[k] + idx.iter().zip(strides[k].iter()).map(|(i, s)| i * s).sum::<usize>());
    for _ in rows {
        f(&bases, n, &inner);
        // odometer increment over the outer axes
        let mut ax = outer.len();
        while ax > 0 {
            ax -= 1;
            idx[ax] += 1;
            for k in 0..N {
                bases[k] += strides[k][ax];
            }
            if idx[ax] < outer[ax] {
                break;
            }
            for k in 0..N {
                bases[k] -= strides[k][ax] * outer[ax];
            }
            idx[ax] = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transpose_is_view_and_not_contiguous() {
        let l = Layout::contiguous(Shape::new([2, 3]));
        assert!(l.is_contiguous());
        let t = l.transpose(0, 1);
        assert_eq!(t.dims(), &[3, 2]);
        assert_eq!(t.strides, vec![1, 3]);
        assert!(!t.is_contiguous());
        let mut offs = vec![];
        t.for_each_offset(|_, o| offs.push(o));
        assert_eq!(offs, vec![0, 3, 1, 4, 2, 5]);
    }

    #[test]
    fn broadcast_and_narrow() {
        let l = Layout::contiguous(Shape::new([3, 1]));
        let b = l.broadcast_to("t", &Shape::new([2, 3, 4])).unwrap();
        assert_eq!(b.strides, vec![0, 1, 0]);
        let n = Layout::contiguous(Shape::new([4, 5])).narrow("t", 1, 2, 3).unwrap();
        assert_eq!((n.offset, n.dims().to_vec()), (2, vec![4, 3]));
        assert!(Layout::contiguous(Shape::new([4, 5])).narrow("t", 1, 4, 2).is_err());
        assert!(l.broadcast_to("t", &Shape::new([2, 4])).is_err());
    }
}
