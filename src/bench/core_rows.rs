//! Row-wise fused ops of `bench core`: softmax and layer_norm on (4096, 768) against a
//! copy of the same bytes (the least any out-of-place row op must move).

use super::{copy, paired_medians};
use crate::{Result, Rng, Tensor, init};
use std::hint::black_box;

pub fn row_ops(reps: usize, rng: &mut Rng) -> Result<Vec<(String, f64, f64)>> {
    let (r, d) = (4096, 768);
    let x = init::normal([r, d], 0.0, 1.0, rng);
    let w = Tensor::ones([d]);
    let b = Tensor::zeros([d]);
    let src = x.to_vec();
    let mut dst = vec![0.0f32; src.len()];
    type RowOp<'a> = Box<dyn Fn() -> Result<Tensor> + 'a>;
    let ops: Vec<(&str, RowOp)> = vec![
        ("softmax", Box::new(|| x.softmax(-1))),
        ("layer_norm", Box::new(|| x.layer_norm(Some(&w), Some(&b), 1e-5))),
    ];
    let mut out = Vec::new();
    for (name, f) in ops {
        f()?;
        let (t_op, t_copy) = paired_medians(
            reps,
            || {
                black_box(f().expect("checked above"));
            },
            || copy(&mut dst, &src),
        );
        out.push((name.to_string(), t_op, t_copy));
    }
    Ok(out)
}
