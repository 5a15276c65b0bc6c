//! Elementwise ops: unary (with scalar variants), binary with NumPy broadcasting, and
//! comparisons. Forward kernels work on slices; backward rules sit beside them.

use crate::autograd::Backward;
use crate::cpu::{par, simd};
use crate::error::Result;
use crate::layout::for_each_row_in;
use crate::shape::{Shape, broadcast_shape};
use crate::tensor::Tensor;

/// What a unary op's backward needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Saves {
    Nothing,
    Input,
    Output,
}

/// Unary elementwise ops, with their parameters.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Unary {
    Neg,
    Exp,
    Log,
    Sqrt,
    Recip,
    Abs,
    Relu,
    /// GELU with the exact erf: `x/2 * (1 + erf(x/√2))`.
    GeluErf,
    /// GELU with the tanh approximation.
    GeluTanh,
    Silu,
    Sigmoid,
    Softplus,
    Tanh,
    Square,
    /// `x^p`.
    Powf(f32),
    /// `min(max(x, lo), hi)`; the gradient is 1 strictly inside, 0 outside.
    Clamp(f32, f32),
    AddScalar(f32),
    MulScalar(f32),
    DivScalar(f32),
    /// `c - x`.
    RsubScalar(f32),
}

const SQRT_2_OVER_PI: f32 = 0.797_884_6;
const FRAC_1_SQRT_2: f32 = std::f32::consts::FRAC_1_SQRT_2;
const FRAC_1_SQRT_2PI: f32 = 0.398_942_3;

/// erf with |error| < 1.2e-7 (Numerical Recipes `erfc` Chebyshev fit, evaluated in f64).
pub fn erf(x: f32) -> f32 {
    let z = (x as f64).abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let ans = t
        * (-z * z - 1.265_512_23
            + t * (1.000_023_68
                + t * (0.374_091_96
                    + t * (0.096_784_18
                        + t * (-0.186_288_06
                            + t * (0.278_868_07
                                + t * (-1.135_203_98
                                    + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77)))))))))
            .exp();
    let r = 1.0 - ans;
    (if x >= 0.0 { r } else { -r }) as f32
}

#[inline(always)]
fn sigmoid(x: f32) -> f32 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

/// Sigmoid on 8 lanes: `1 / (1 + e^-x)`; saturates to 0 (e^-x = inf) and 1.
#[inline(always)]
fn sigmoid8(x: wide::f32x8) -> wide::f32x8 {
    let one = wide::f32x8::ONE;
    one / (one + simd::exp8(-x))
}

#[inline(always)]
fn softplus(x: f32) -> f32 {
    // log(1 + e^x) without overflow: max(x, 0) + log1p(e^-|x|)
    x.max(0.0) + (-x.abs()).exp().ln_1p()
}

impl Unary {
    pub fn name(&self) -> &'static str {
        match self {
            Unary::Neg => "neg",
            Unary::Exp => "exp",
            Unary::Log => "log",
            Unary::Sqrt => "sqrt",
            Unary::Recip => "recip",
            Unary::Abs => "abs",
            Unary::Relu => "relu",
            Unary::GeluErf => "gelu",
            Unary::GeluTanh => "gelu_tanh",
            Unary::Silu => "silu",
            Unary::Sigmoid => "sigmoid",
            Unary::Softplus => "softplus",
            Unary::Tanh => "tanh",
            Unary::Square => "square",
            Unary::Powf(_) => "powf",
            Unary::Clamp(..) => "clamp",
            Unary::AddScalar(_) => "add_scalar",
            Unary::MulScalar(_) => "mul_scalar",
            Unary::DivScalar(_) => "div_scalar",
            Unary::RsubScalar(_) => "rsub_scalar",
        }
    }

    pub fn saves(&self) -> Saves {
        match self {
            Unary::Neg | Unary::AddScalar(_) | Unary::MulScalar(_) | Unary::DivScalar(_) | Unary::RsubScalar(_) => {
                Saves::Nothing
            }
            Unary::Exp | Unary::Sqrt | Unary::Recip | Unary::Sigmoid | Unary::Tanh => Saves::Output,
            _ => Saves::Input,
        }
    }

    /// Forward over a slice. The match sits outside the loop so each arm is its own
    /// tight loop; transcendental arms use `wide::f32x8` (8 lanes, scalar tail).
    pub fn forward_slice(&self, x: &[f32], out: &mut [f32]) {
        use wide::f32x8;
        debug_assert_eq!(x.len(), out.len());
        #[inline(always)]
        fn map(x: &[f32], out: &mut [f32], f: impl Fn(f32) -> f32) {
            for (o, &v) in out.iter_mut().zip(x) {
                *o = f(v);
            }
        }
        let zero = f32x8::ZERO;
        let one = f32x8::ONE;
        match *self {
            Unary::Neg => map(x, out, |v| -v),
            Unary::Exp => simd::map1(x, out, simd::exp8, f32::exp),
            Unary::Log => simd::map1(x, out, |v| v.ln(), f32::ln),
            Unary::Sqrt => map(x, out, f32::sqrt),
            Unary::Recip => map(x, out, |v| 1.0 / v),
            Unary::Abs => map(x, out, f32::abs),
            Unary::Relu => map(x, out, |v| if v > 0.0 { v } else { 0.0 }),
            Unary::GeluErf => simd::map1(
                x,
                out,
                |v| f32x8::splat(0.5) * v * (one + simd::erf8(v * f32x8::splat(FRAC_1_SQRT_2))),
                |v| 0.5 * v * (1.0 + erf(v * FRAC_1_SQRT_2)),
            ),
            Unary::GeluTanh => simd::map1(
                x,
                out,
                |v| {
                    let u = f32x8::splat(SQRT_2_OVER_PI) * (v + f32x8::splat(0.044715) * v * v * v);
                    f32x8::splat(0.5) * v * (one + u.tanh())
                },
                |v| 0.5 * v * (1.0 + (SQRT_2_OVER_PI * (v + 0.044715 * v * v * v)).tanh()),
            ),
            Unary::Silu => simd::map1(x, out, |v| v * sigmoid8(v), |v| v * sigmoid(v)),
            Unary::Sigmoid => simd::map1(x, out, sigmoid8, sigmoid),
            Unary::Softplus => simd::map1(x, out, |v| v.max(zero) + simd::exp8(-v.abs()).ln_1p(), softplus),
            Unary::Tanh => simd::map1(x, out, |v| v.tanh(), f32::tanh),
            Unary::Square => map(x, out, |v| v * v),
            Unary::Powf(p) => map(x, out, |v| v.powf(p)),
            Unary::Clamp(lo, hi) => map(x, out, |v| v.max(lo).min(hi)),
            Unary::AddScalar(c) => map(x, out, |v| v + c),
            Unary::MulScalar(c) => map(x, out, |v| v * c),
            Unary::DivScalar(c) => map(x, out, |v| v / c),
            Unary::RsubScalar(c) => map(x, out, |v| c - v),
        }
    }

    /// `out = grad * f'(x)`, where `saved` is the input or output as [`Unary::saves`] says
    /// (ignored for `Saves::Nothing`).
    pub fn backward_slice(&self, saved: &[f32], grad: &[f32], out: &mut [f32]) {
        use wide::f32x8;
        #[inline(always)]
        fn map(s: &[f32], g: &[f32], out: &mut [f32], df: impl Fn(f32) -> f32) {
            for ((o, &sv), &gv) in out.iter_mut().zip(s).zip(g) {
                *o = gv * df(sv);
            }
        }
        #[inline(always)]
        fn scale(g: &[f32], out: &mut [f32], c: f32) {
            for (o, &gv) in out.iter_mut().zip(g) {
                *o = gv * c;
            }
        }
        match *self {
            Unary::Neg | Unary::RsubScalar(_) => scale(grad, out, -1.0),
            Unary::AddScalar(_) => out.copy_from_slice(grad),
            Unary::MulScalar(c) => scale(grad, out, c),
            Unary::DivScalar(c) => {
                for (o, &gv) in out.iter_mut().zip(grad) {
                    *o = gv / c;
                }
            }
            Unary::Exp => map(saved, grad, out, |y| y),
            Unary::Log => map(saved, grad, out, |x| 1.0 / x),
            Unary::Sqrt => map(saved, grad, out, |y| 0.5 / y),
            Unary::Recip => map(saved, grad, out, |y| -y * y),
            Unary::Abs => map(saved, grad, out, |x| {
                if x > 0.0 {
                    1.0
                } else if x < 0.0 {
                    -1.0
                } else {
                    0.0
                }
            }),
            Unary::Relu => map(saved, grad, out, |x| if x > 0.0 { 1.0 } else { 0.0 }),
            Unary::GeluErf => simd::map2(
                saved,
                grad,
                out,
                |x, g| {
                    let half = f32x8::splat(0.5);
                    let cdf = half * (f32x8::ONE + simd::erf8(x * f32x8::splat(FRAC_1_SQRT_2)));
                    let pdf = f32x8::splat(FRAC_1_SQRT_2PI) * simd::exp8(-(half * x * x));
                    g * x.mul_add(pdf, cdf)
                },
                |x, g| g * (0.5 * (1.0 + erf(x * FRAC_1_SQRT_2)) + x * FRAC_1_SQRT_2PI * (-0.5 * x * x).exp()),
            ),
            Unary::GeluTanh => map(saved, grad, out, |x| {
                let u = SQRT_2_OVER_PI * (x + 0.044715 * x * x * x);
                let t = u.tanh();
                let du = SQRT_2_OVER_PI * (1.0 + 3.0 * 0.044715 * x * x);
                0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * du
            }),
            Unary::Silu => simd::map2(
                saved,
                grad,
                out,
                |x, g| {
                    let s = sigmoid8(x);
                    g * s * x.mul_add(f32x8::ONE - s, f32x8::ONE)
                },
                |x, g| {
                    let s = sigmoid(x);
                    g * s * (1.0 + x * (1.0 - s))
                },
            ),
            Unary::Sigmoid => map(saved, grad, out, |y| y * (1.0 - y)),
            Unary::Softplus => map(saved, grad, out, sigmoid),
            Unary::Tanh => map(saved, grad, out, |y| 1.0 - y * y),
            Unary::Square => map(saved, grad, out, |x| 2.0 * x),
            Unary::Powf(p) => map(saved, grad, out, |x| p * x.powf(p - 1.0)),
            Unary::Clamp(lo, hi) => map(saved, grad, out, |x| if x > lo && x < hi { 1.0 } else { 0.0 }),
        }
    }
}

struct UnaryBackward {
    op: Unary,
    saved: Option<Tensor>,
}

impl Backward for UnaryBackward {
    fn name(&self) -> &'static str {
        self.op.name()
    }
    fn backward(&self, grad: &Tensor, _needs: &[bool]) -> Result<Vec<Option<Tensor>>> {
        #[cfg(feature = "gpu")]
        if grad.device() == crate::Device::Gpu {
            return Ok(vec![Some(crate::gpu::elementwise::unary_backward(self.op, self.saved.as_ref(), grad)?)]);
        }
        let g = grad.contiguous_data();
        let mut out = crate::storage::buffer(g.len());
        let saved = self.saved.as_ref().map(|s| s.contiguous_data());
        let ch = par::ELEMWISE_CHUNK;
        par::for_chunks_mut(&mut out, ch, par::ELEMWISE_MIN, |i, o| {
            let r = i * ch..i * ch + o.len();
            match &saved {
                Some(s) => self.op.backward_slice(&s[r.clone()], &g[r], o),
                None => self.op.backward_slice(&[], &g[r], o),
            }
        });
        Ok(vec![Some(Tensor::from_parts(out, grad.shape_obj().clone()))])
    }
}

impl Tensor {
    /// Apply a unary op (the named methods below are shorthands).
    pub fn unary(&self, op: Unary) -> Tensor {
        let _p = crate::profile::fwd(op.name());
        #[cfg(feature = "gpu")]
        if self.device() == crate::Device::Gpu {
            // Infallible signature: a GPU error here (out of memory, lost device) panics
            // with the typed error's message.
            let out = crate::gpu::elementwise::unary(op, self).unwrap_or_else(|e| panic!("{e}"));
            let mut y = Tensor::from_storage(out, self.shape_obj().clone());
            let saved = match op.saves() {
                Saves::Nothing => None,
                Saves::Input => Some(self.detach()),
                Saves::Output => Some(y.detach()),
            };
            y.node = Tensor::record(y.shape_obj(), &[self], || UnaryBackward { op, saved });
            return y;
        }
        let x = self.contiguous_data();
        let mut out = crate::storage::buffer(x.len());
        let ch = par::ELEMWISE_CHUNK;
        par::for_chunks_mut(&mut out, ch, par::ELEMWISE_MIN, |i, o| op.forward_slice(&x[i * ch..i * ch + o.len()], o));
        drop(x);
        let shape = self.shape_obj().clone();
        let keep_out = op.saves() == Saves::Output;
        let out_copy = (keep_out && self.requires_grad() && crate::autograd::is_grad_enabled())
            .then(|| Tensor::from_parts(out.clone(), shape.clone()));
        Tensor::from_op(out, shape, &[self], || UnaryBackward {
            op,
            saved: match op.saves() {
                Saves::Nothing => None,
                Saves::Input => Some(self.detach()),
                Saves::Output => out_copy,
            },
        })
    }
    pub fn neg(&self) -> Tensor {
        self.unary(Unary::Neg)
    }
    pub fn exp(&self) -> Tensor {
        self.unary(Unary::Exp)
    }
    pub fn log(&self) -> Tensor {
        self.unary(Unary::Log)
    }
    pub fn sqrt(&self) -> Tensor {
        self.unary(Unary::Sqrt)
    }
    pub fn recip(&self) -> Tensor {
        self.unary(Unary::Recip)
    }
    pub fn abs(&self) -> Tensor {
        self.unary(Unary::Abs)
    }
    pub fn relu(&self) -> Tensor {
        self.unary(Unary::Relu)
    }
    /// GELU, exact (erf) form.
    pub fn gelu(&self) -> Tensor {
        self.unary(Unary::GeluErf)
    }
    /// GELU, tanh approximation.
    pub fn gelu_tanh(&self) -> Tensor {
        self.unary(Unary::GeluTanh)
    }
    pub fn silu(&self) -> Tensor {
        self.unary(Unary::Silu)
    }
    pub fn sigmoid(&self) -> Tensor {
        self.unary(Unary::Sigmoid)
    }
    pub fn softplus(&self) -> Tensor {
        self.unary(Unary::Softplus)
    }
    pub fn tanh(&self) -> Tensor {
        self.unary(Unary::Tanh)
    }
    pub fn square(&self) -> Tensor {
        self.unary(Unary::Square)
    }
    pub fn powf(&self, p: f32) -> Tensor {
        self.unary(Unary::Powf(p))
    }
    /// Clamp to `[lo, hi]`; fails when `lo > hi` or either is NaN.
    pub fn clamp(&self, lo: f32, hi: f32) -> Result<Tensor> {
        if lo.is_nan() || hi.is_nan() || lo > hi {
            return Err(crate::Error::InvalidArgument {
                op: "clamp",
                message: format!("need lo <= hi, got lo = {lo}, hi = {hi}"),
            });
        }
        Ok(self.unary(Unary::Clamp(lo, hi)))
    }
    pub fn add_scalar(&self, c: f32) -> Tensor {
        self.unary(Unary::AddScalar(c))
    }
    pub fn sub_scalar(&self, c: f32) -> Tensor {
        self.unary(Unary::AddScalar(-c))
    }
    pub fn mul_scalar(&self, c: f32) -> Tensor {
        self.unary(Unary::MulScalar(c))
    }
    pub fn div_scalar(&self, c: f32) -> Tensor {
        self.unary(Unary::DivScalar(c))
    }
    /// `c - self`.
    pub fn rsub_scalar(&self, c: f32) -> Tensor {
        self.unary(Unary::RsubScalar(c))
    }
}

// ----- binary ---------------------------------------------------------------------------

/// Binary elementwise ops with broadcasting. Comparisons return 1.0 / 0.0 and have no
/// gradient.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Binary {
    Add,
    Sub,
    Mul,
    Div,
    Maximum,
    Minimum,
    Eq,
    Lt,
    Le,
    Gt,
    Ge,
}

impl Binary {
    pub fn name(&self) -> &'static str {
        match self {
            Binary::Add => "add",
            Binary::Sub => "sub",
            Binary::Mul => "mul",
            Binary::Div => "div",
            Binary::Maximum => "maximum",
            Binary::Minimum => "minimum",
            Binary::Eq => "eq",
            Binary::Lt => "lt",
            Binary::Le => "le",
            Binary::Gt => "gt",
            Binary::Ge => "ge",
        }
    }
    fn differentiable(&self) -> bool {
        matches!(self, Binary::Add | Binary::Sub | Binary::Mul | Binary::Div | Binary::Maximum | Binary::Minimum)
    }
}

#[inline(always)]
fn b2f(b: bool) -> f32 {
    if b { 1.0 } else { 0.0 }
}

/// Compute `f(a, b)` over the broadcast shape `out_shape`, in row-major order.
fn binary_kernel(a: &Tensor, b: &Tensor, out_shape: &Shape, op: Binary) -> Result<Vec<f32>> {
    #[inline(always)]
    fn run(a: &Tensor, b: &Tensor, out_shape: &Shape, f: impl Fn(f32, f32) -> f32 + Sync) -> Result<Vec<f32>> {
        let n = out_shape.numel();
        let (sa, sb) = (a.storage.cpu(), b.storage.cpu());
        // Fast path: same shape, both contiguous.
        if a.shape() == b.shape()
            && let (Some(ra), Some(rb)) = (a.layout.contiguous_range(), b.layout.contiguous_range())
        {
            let (x, y) = (&sa[ra], &sb[rb]);
            let mut out = crate::storage::buffer(n);
            let ch = par::ELEMWISE_CHUNK;
            par::for_chunks_mut(&mut out, ch, par::ELEMWISE_MIN, |i, o| {
                let r = i * ch..i * ch + o.len();
                for ((o, &x), &y) in o.iter_mut().zip(&x[r.clone()]).zip(&y[r]) {
                    *o = f(x, y);
                }
            });
            return Ok(out);
        }
        let la = a.layout.broadcast_to("binary", out_shape)?;
        let lb = b.layout.broadcast_to("binary", out_shape)?;
        let mut out = crate::storage::buffer(n);
        let dims = out_shape.dims();
        let row_len = dims.last().copied().unwrap_or(1).max(1);
        // Whole output rows per task, a number fixed by the shape.
        let rows_per = par::rows_for(row_len, par::ELEMWISE_CHUNK);
        par::for_row_chunks_mut(&mut out, row_len, rows_per, par::ELEMWISE_MIN, |r0, chunk| {
            let rows = r0..r0 + chunk.len() / row_len;
            let mut o = 0;
            for_each_row_in(dims, &[&la.strides, &lb.strides], &[la.offset, lb.offset], rows, |base, len, inner| {
                let (oa, ob) = (base[0], base[1]);
                let dst = &mut chunk[o..o + len];
                o += len;
                match (inner[0], inner[1]) {
                    (1, 1) => {
                        for ((d, &x), &y) in dst.iter_mut().zip(&sa[oa..oa + len]).zip(&sb[ob..ob + len]) {
                            *d = f(x, y);
                        }
                    }
                    (1, 0) => {
                        let y = sb[ob];
                        for (d, &x) in dst.iter_mut().zip(&sa[oa..oa + len]) {
                            *d = f(x, y);
                        }
                    }
                    (0, 1) => {
                        let x = sa[oa];
                        for (d, &y) in dst.iter_mut().zip(&sb[ob..ob + len]) {
                            *d = f(x, y);
                        }
                    }
                    (ia, ib) => {
                        for (k, d) in dst.iter_mut().enumerate() {
                            *d = f(sa[oa + k * ia], sb[ob + k * ib]);
                        }
                    }
                }
            });
        });
        Ok(out)
    }
    match op {
        Binary::Add => run(a, b, out_shape, |x, y| x + y),
        Binary::Sub => run(a, b, out_shape, |x, y| x - y),
        Binary::Mul => run(a, b, out_shape, |x, y| x * y),
        Binary::Div => run(a, b, out_shape, |x, y| x / y),
        // NaN propagates from either side.
        Binary::Maximum => run(a, b, out_shape, |x, y| if x.is_nan() || x >= y { x } else { y }),
        Binary::Minimum => run(a, b, out_shape, |x, y| if x.is_nan() || x <= y { x } else { y }),
        Binary::Eq => run(a, b, out_shape, |x, y| b2f(x == y)),
        Binary::Lt => run(a, b, out_shape, |x, y| b2f(x < y)),
        Binary::Le => run(a, b, out_shape, |x, y| b2f(x <= y)),
        Binary::Gt => run(a, b, out_shape, |x, y| b2f(x > y)),
        Binary::Ge => run(a, b, out_shape, |x, y| b2f(x >= y)),
    }
}

struct BinaryBackward {
    op: Binary,
    lhs_shape: Shape,
    rhs_shape: Shape,
    /// Inputs kept only where the rule needs them.
    lhs: Option<Tensor>,
    rhs: Option<Tensor>,
}

impl Backward for BinaryBackward {
    fn name(&self) -> &'static str {
        self.op.name()
    }
    fn backward(&self, g: &Tensor, needs: &[bool]) -> Result<Vec<Option<Tensor>>> {
        let lhs = || self.lhs.as_ref().expect("binary backward: lhs saved");
        let rhs = || self.rhs.as_ref().expect("binary backward: rhs saved");
        let (ga, gb) = match self.op {
            Binary::Add => (needs[0].then(|| g.clone()), needs[1].then(|| g.clone())),
            Binary::Sub => (needs[0].then(|| g.clone()), needs[1].then(|| g.neg())),
            Binary::Mul => {
                (if needs[0] { Some(g.mul(rhs())?) } else { None }, if needs[1] { Some(g.mul(lhs())?) } else { None })
            }
            Binary::Div => (
                if needs[0] { Some(g.div(rhs())?) } else { None },
                // d(a/b)/db = -a / b^2
                if needs[1] { Some(g.mul(lhs())?.div(&rhs().square())?.neg()) } else { None },
            ),
            Binary::Maximum | Binary::Minimum => {
                // The gradient goes to the lhs where it was selected (ties go to the lhs).
                let cmp = if self.op == Binary::Maximum { Binary::Ge } else { Binary::Le };
                let mask = lhs().binary(rhs(), cmp)?;
                (
                    if needs[0] { Some(g.mul(&mask)?) } else { None },
                    if needs[1] { Some(g.mul(&mask.rsub_scalar(1.0))?) } else { None },
                )
            }
            _ => return Err(crate::Error::BackwardNotImplemented { op: self.op.name() }),
        };
        Ok(vec![ga.map(|t| t.sum_to(&self.lhs_shape)).transpose()?, gb.map(|t| t.sum_to(&self.rhs_shape)).transpose()?])
    }
}

impl Tensor {
    /// Apply a binary op with NumPy broadcasting (the named methods are shorthands).
    pub fn binary(&self, rhs: &Tensor, op: Binary) -> Result<Tensor> {
        let _p = crate::profile::fwd(op.name());
        let shape = broadcast_shape(op.name(), self.shape_obj(), rhs.shape_obj())?;
        let out = match Tensor::common_device(op.name(), &[self, rhs])? {
            crate::Device::Cpu => crate::storage::Storage::Cpu(binary_kernel(self, rhs, &shape, op)?),
            crate::Device::Gpu => on_gpu!(op.name(), elementwise::binary(op, self, rhs, &shape))?,
        };
        if !op.differentiable() {
            return Ok(Tensor::from_storage(out, shape));
        }
        let (need_l, need_r) = (self.requires_grad(), rhs.requires_grad());
        Ok(Tensor::from_storage_op(out, shape, &[self, rhs], || {
            let (keep_l, keep_r) = match op {
                Binary::Mul => (need_r, need_l),
                Binary::Div => (need_r, true),
                Binary::Maximum | Binary::Minimum => (true, true),
                _ => (false, false),
            };
            BinaryBackward {
                op,
                lhs_shape: self.shape_obj().clone(),
                rhs_shape: rhs.shape_obj().clone(),
                lhs: keep_l.then(|| self.detach()),
                rhs: keep_r.then(|| rhs.detach()),
            }
        }))
    }
    pub fn add(&self, rhs: &Tensor) -> Result<Tensor> {
        self.binary(rhs, Binary::Add)
    }
    pub fn sub(&self, rhs: &Tensor) -> Result<Tensor> {
        self.binary(rhs, Binary::Sub)
    }
    pub fn mul(&self, rhs: &Tensor) -> Result<Tensor> {
        self.binary(rhs, Binary::Mul)
    }
    pub fn div(&self, rhs: &Tensor) -> Result<Tensor> {
        self.binary(rhs, Binary::Div)
    }
    pub fn maximum(&self, rhs: &Tensor) -> Result<Tensor> {
        self.binary(rhs, Binary::Maximum)
    }
    pub fn minimum(&self, rhs: &Tensor) -> Result<Tensor> {
        self.binary(rhs, Binary::Minimum)
    }
    /// 1.0 where equal, else 0.0 (no gradient); likewise `lt`, `le`, `gt`, `ge`.
    pub fn eq_mask(&self, rhs: &Tensor) -> Result<Tensor> {
        self.binary(rhs, Binary::Eq)
    }
    pub fn lt(&self, rhs: &Tensor) -> Result<Tensor> {
        self.binary(rhs, Binary::Lt)
    }
    pub fn le(&self, rhs: &Tensor) -> Result<Tensor> {
        self.binary(rhs, Binary::Le)
    }
    pub fn gt(&self, rhs: &Tensor) -> Result<Tensor> {
        self.binary(rhs, Binary::Gt)
    }
    pub fn ge(&self, rhs: &Tensor) -> Result<Tensor> {
        self.binary(rhs, Binary::Ge)
    }
}

macro_rules! operator_sugar {
    ($trait:ident, $method:ident, $op:ident) => {
        /// Operator sugar; panics with the same message the `Result` method returns.
        impl std::ops::$trait<&Tensor> for &Tensor {
            type Output = Tensor;
            #[track_caller]
            fn $method(self, rhs: &Tensor) -> Tensor {
                self.binary(rhs, Binary::$op).unwrap_or_else(|e| panic!("{e}"))
            }
        }
        impl std::ops::$trait<Tensor> for Tensor {
            type Output = Tensor;
            #[track_caller]
            fn $method(self, rhs: Tensor) -> Tensor {
                self.binary(&rhs, Binary::$op).unwrap_or_else(|e| panic!("{e}"))
            }
        }
    };
}
operator_sugar!(Add, add, Add);
operator_sugar!(Sub, sub, Sub);
operator_sugar!(Mul, mul, Mul);
operator_sugar!(Div, div, Div);

impl std::ops::Neg for &Tensor {
    type Output = Tensor;
    fn neg(self) -> Tensor {
        Tensor::neg(self)
    }
}
