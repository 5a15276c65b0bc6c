//! `wide::f32x8` helpers: map a slice 8 lanes at a time with a scalar tail.

use wide::f32x8;

/// `out[i] = f8(x[i..i+8])` over full chunks, `f1` on the tail.
#[inline(always)]
pub fn map1(x: &[f32], out: &mut [f32], f8: impl Fn(f32x8) -> f32x8, f1: impl Fn(f32) -> f32) {
    debug_assert_eq!(x.len(), out.len());
    let (xc, xt) = x.as_chunks::<8>();
    let (oc, ot) = out.as_chunks_mut::<8>();
    for (o, v) in oc.iter_mut().zip(xc) {
        *o = f8(f32x8::new(*v)).to_array();
    }
    for (o, &v) in ot.iter_mut().zip(xt) {
        *o = f1(v);
    }
}

/// `out[i] = f8(x[i], y[i])` over full chunks, `f1` on the tail.
#[inline(always)]
pub fn map2(x: &[f32], y: &[f32], out: &mut [f32], f8: impl Fn(f32x8, f32x8) -> f32x8, f1: impl Fn(f32, f32) -> f32) {
    debug_assert!(x.len() == out.len() && y.len() == out.len());
    let (xc, xt) = x.as_chunks::<8>();
    let (yc, yt) = y.as_chunks::<8>();
    let (oc, ot) = out.as_chunks_mut::<8>();
    for ((o, a), b) in oc.iter_mut().zip(xc).zip(yc) {
        *o = f8(f32x8::new(*a), f32x8::new(*b)).to_array();
    }
    for ((o, &a), &b) in ot.iter_mut().zip(xt).zip(yt) {
        *o = f1(a, b);
    }
}

/// Sum with eight lanes (fixed association order, so deterministic).
#[inline]
pub fn sum(x: &[f32]) -> f32 {
    let (xc, xt) = x.as_chunks::<8>();
    let mut acc = f32x8::ZERO;
    for c in xc {
        acc += f32x8::new(*c);
    }
    acc.reduce_add() + xt.iter().sum::<f32>()
}

/// Maximum (NaN-ignoring within lanes; callers that need NaN propagation check first).
#[inline]
pub fn max(x: &[f32]) -> f32 {
    let (xc, xt) = x.as_chunks::<8>();
    let mut acc = f32x8::splat(f32::NEG_INFINITY);
    for c in xc {
        acc = acc.max(f32x8::new(*c));
    }
    acc.to_array().into_iter().chain(xt.iter().copied()).fold(f32::NEG_INFINITY, f32::max)
}
