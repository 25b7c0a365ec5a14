//! Per-example weighted losses, written out because candle's losses take no weights.

use candle_core::{Result, Tensor};

use super::config::LabelKind;

/// Unweighted loss of each example, `(b,)` from logits and labels `(b,)`:
/// binary: BCE with logits `max(z, 0) - z y + ln(1 + exp(-|z|))` (stable for any z);
/// graded: squared error `(z - y)^2`.
pub fn per_example_loss(logits: &Tensor, labels: &Tensor, kind: LabelKind) -> Result<Tensor> {
    match kind {
        LabelKind::Binary => {
            let softplus = logits.abs()?.neg()?.exp()?.affine(1.0, 1.0)?.log()?;
            (logits.relu()? - logits.mul(labels)?)? + softplus
        }
        LabelKind::Graded => logits.sub(labels)?.sqr(),
    }
}

/// `sum_i w_i * loss_i / norm`, a scalar. With `norm` the total weight of the optimizer
/// batch, micro-batches of an accumulated step add up to the weighted mean over the whole
/// batch, and an example of weight 0 contributes nothing.
pub fn weighted_loss(logits: &Tensor, labels: &Tensor, weights: &Tensor, kind: LabelKind, norm: f64) -> Result<Tensor> {
    per_example_loss(logits, labels, kind)?.mul(weights)?.sum_all()? / norm
}
