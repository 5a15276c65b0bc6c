//! Elementwise kernels: unary ops (forward and backward), binary ops with broadcasting,
//! and the strided copy behind `contiguous`. Every operand is read through its strides,
//! so views (transposes, broadcasts, narrows) are never copied first.

use super::{Kernel, buf, context, grid, strided_header};
use crate::error::Result;
use crate::layout::Layout;
use crate::ops::elementwise::{Binary, Unary};
use crate::shape::Shape;
use crate::storage::Storage;
use crate::tensor::Tensor;

const UNARY: Kernel = Kernel {
    name: "unary",
    src: shader!("unary_fns.wgsl", "unary.wgsl"),
    entry: "unary_forward",
    inputs: 1,
    outputs: 1,
};
const UNARY_BWD: Kernel = Kernel {
    name: "unary_backward",
    src: shader!("unary_fns.wgsl", "unary_backward.wgsl"),
    entry: "unary_backward",
    inputs: 2,
    outputs: 1,
};
const BINARY: Kernel = Kernel { name: "binary", src: shader!("binary.wgsl"), entry: "binary", inputs: 2, outputs: 1 };

/// Op code of the copy in the unary kernel.
const COPY: u32 = 20;

/// The kernel's op code and two f32 parameters of a unary op.
fn unary_code(op: Unary) -> [u32; 3] {
    let (code, c0, c1) = match op {
        Unary::Neg => (0, 0.0, 0.0),
        Unary::Exp => (1, 0.0, 0.0),
        Unary::Log => (2, 0.0, 0.0),
        Unary::Sqrt => (3, 0.0, 0.0),
        Unary::Recip => (4, 0.0, 0.0),
        Unary::Abs => (5, 0.0, 0.0),
        Unary::Relu => (6, 0.0, 0.0),
        Unary::GeluErf => (7, 0.0, 0.0),
        Unary::GeluTanh => (8, 0.0, 0.0),
        Unary::Silu => (9, 0.0, 0.0),
        Unary::Sigmoid => (10, 0.0, 0.0),
        Unary::Softplus => (11, 0.0, 0.0),
        Unary::Tanh => (12, 0.0, 0.0),
        Unary::Square => (13, 0.0, 0.0),
        Unary::Powf(p) => (14, p, 0.0),
        Unary::Clamp(lo, hi) => (15, lo, hi),
        Unary::AddScalar(c) => (16, c, 0.0),
        Unary::MulScalar(c) => (17, c, 0.0),
        Unary::DivScalar(c) => (18, c, 0.0),
        Unary::RsubScalar(c) => (19, c, 0.0),
    };
    [code, f32::to_bits(c0), f32::to_bits(c1)]
}

fn binary_code(op: Binary) -> u32 {
    match op {
        Binary::Add => 0,
        Binary::Sub => 1,
        Binary::Mul => 2,
        Binary::Div => 3,
        Binary::Maximum => 4,
        Binary::Minimum => 5,
        Binary::Eq => 6,
        Binary::Lt => 7,
        Binary::Le => 8,
        Binary::Gt => 9,
        Binary::Ge => 10,
    }
}

fn run_unary(op: &'static str, code: [u32; 3], x: &Tensor) -> Result<Storage> {
    let ctx = context()?;
    let n = x.numel();
    let mut p = strided_header(op, x.shape(), &[&x.layout])?;
    p.extend(code);
    let out = super::alloc(n)?;
    ctx.launch(op, &UNARY, &p, &[buf(x).raw()], &[out.raw()], grid(n, super::WG))?;
    Ok(Storage::Gpu(out))
}

/// A dense row-major copy of any view.
pub fn copy(x: &Tensor) -> Result<Storage> {
    run_unary("contiguous", [COPY, 0, 0], x)
}

/// `op(x)` elementwise.
pub fn unary(op: Unary, x: &Tensor) -> Result<Storage> {
    run_unary(op.name(), unary_code(op), x)
}

/// `g * f'(saved)` for the backward of `op` (`saved` as `Unary::saves` says; `None`
/// for ops that save nothing).
pub fn unary_backward(op: Unary, saved: Option<&Tensor>, g: &Tensor) -> Result<Tensor> {
    let ctx = context()?;
    let n = g.numel();
    let s = saved.unwrap_or(g);
    let mut p = strided_header(op.name(), g.shape(), &[&s.layout, &g.layout])?;
    p.extend(unary_code(op));
    let out = super::alloc(n)?;
    ctx.launch(op.name(), &UNARY_BWD, &p, &[buf(s).raw(), buf(g).raw()], &[out.raw()], grid(n, super::WG))?;
    Ok(Tensor::from_storage(Storage::Gpu(out), g.shape_obj().clone()))
}

/// `op(a, b)` over the broadcast shape `shape`.
pub fn binary(op: Binary, a: &Tensor, b: &Tensor, shape: &Shape) -> Result<Storage> {
    let ctx = context()?;
    let la: Layout = a.layout.broadcast_to(op.name(), shape)?;
    let lb: Layout = b.layout.broadcast_to(op.name(), shape)?;
    let n = shape.numel();
    let mut p = strided_header(op.name(), shape.dims(), &[&la, &lb])?;
    p.push(binary_code(op));
    let out = super::alloc(n)?;
    ctx.launch(op.name(), &BINARY, &p, &[buf(a).raw(), buf(b).raw()], &[out.raw()], grid(n, super::WG))?;
    Ok(Storage::Gpu(out))
}
