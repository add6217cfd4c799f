//! The layer ops' backward results: one flat `[∂x (when needed) | ∂weight | ∂bias]` tensor from
//! a single backward op, split into the three gradients candle's `bwd` returns.

use candle_core::{Result, Tensor};

/// Gradients of (x, weight, bias), in this order.
pub type Grads3 = (Option<Tensor>, Option<Tensor>, Option<Tensor>);

/// Splits `out` = `[∂x (x's size, only when `with_dx`) | ∂weight | ∂bias]`.
pub fn split(
    out: &Tensor,
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    with_dx: bool,
) -> Result<Grads3> {
    let n_dx = if with_dx { x.elem_count() } else { 0 };
    let n_dw = weight.elem_count();
    let dx = match with_dx {
        true => Some(out.narrow(0, 0, n_dx)?.reshape(x.shape())?),
        false => None,
    };
    let dw = out.narrow(0, n_dx, n_dw)?.reshape(weight.shape())?;
    let db = out
        .narrow(0, n_dx + n_dw, bias.elem_count())?
        .reshape(bias.shape())?;
    Ok((dx, Some(dw), Some(db)))
}
