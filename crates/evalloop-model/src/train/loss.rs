//! Per-example weighted losses, written out because candle's losses take no weights, and the
//! weighted pairwise ranking loss.
//!
//! The pairwise loss is the logistic (RankNet) loss: for a pair (i, j) of outputs of the same
//! group whose labels differ by at least `pair_min_diff`, with i the better one,
//! `softplus(-(s_i - s_j)) = ln(1 + exp(-(s_i - s_j)))`, weighted by `w_i * w_j` (the product of
//! the two example weights). Logistic rather than margin (hinge): it is smooth, never stops
//! pulling a pair apart entirely (so ties in score are broken), and is scale-free in the label
//! difference. Pairs are only formed inside a micro-batch, which is why pairwise objectives
//! batch whole groups together ([`super::data::epoch_batches`]).

use candle_core::{Result, Tensor};

use super::config::{LabelKind, PairScope};
use super::data::Example;

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

/// The multi-task dimension term, a scalar: `sum_{i,k} mw_ik (z_ik - y_ik)^2 * coef_k` from
/// outputs `z` `(b, K)`, labels `y` `(b, K)` (anything where the label is missing), `mw` `(b, K)`
/// the example weight where row i has a label on dimension k and 0 elsewhere, and `coef` `(K,)`.
/// With `coef_k = 1 / (K * sum_i mw_ik)` over the optimizer batch (0 for a dimension without
/// labels in it), this is the mean over dimensions of each one's masked weighted MSE, and
/// accumulated micro-batches add up to it.
pub fn dimension_loss(outputs: &Tensor, labels: &Tensor, masked_weights: &Tensor, coef: &Tensor) -> Result<Tensor> {
    outputs.sub(labels)?.sqr()?.mul(masked_weights)?.broadcast_mul(&coef.unsqueeze(0)?)?.sum_all()
}

/// `coef_k` of [`dimension_loss`] for the per-dimension label weight totals of an optimizer
/// batch: `1 / (K * total_k)`, 0 where `total_k` is 0.
pub fn dimension_coefficients(totals: &[f64]) -> Vec<f64> {
    let k = totals.len() as f64;
    totals.iter().map(|&t| if t > 0.0 { 1.0 / (k * t) } else { 0.0 }).collect()
}

/// Pairs of positions in a micro-batch `idx` (indices into `examples`) for the pairwise loss:
/// `(better, worse, w_better * w_worse)` for every two examples whose labels differ by at least
/// `min_diff` (and by more than 0), and under [`PairScope::Group`] are of the same group (rows
/// without a group then pair with nothing). Pairs of weight 0 are left out.
pub fn batch_pairs(examples: &[Example], idx: &[usize], min_diff: f64, scope: PairScope) -> Vec<(u32, u32, f64)> {
    let mut pairs = Vec::new();
    for a in 0..idx.len() {
        let ea = &examples[idx[a]];
        if scope == PairScope::Group && ea.group.is_none() {
            continue;
        }
        for (b, &ib) in idx.iter().enumerate().skip(a + 1) {
            let eb = &examples[ib];
            if scope == PairScope::Group && eb.group != ea.group {
                continue;
            }
            let diff = ea.label - eb.label;
            if diff.abs() < min_diff || diff == 0.0 {
                continue;
            }
            let w = ea.weight * eb.weight;
            if w <= 0.0 {
                continue;
            }
            let (hi, lo) = if diff > 0.0 { (a, b) } else { (b, a) };
            pairs.push((hi as u32, lo as u32, w));
        }
    }
    pairs
}

/// Weighted logistic pairwise loss, a scalar: `sum_p w_p * softplus(-(s[better_p] -
/// s[worse_p])) / norm`, from scores `(b,)`, position tensors `better`, `worse` `(p,)` u32 and
/// pair weights `(p,)` of the scores' dtype. With `norm` the total pair weight of the optimizer
/// batch, accumulated micro-batches add up to the weighted mean over all its pairs.
pub fn pairwise_loss(
    scores: &Tensor,
    better: &Tensor,
    worse: &Tensor,
    pair_weights: &Tensor,
    norm: f64,
) -> Result<Tensor> {
    let d = scores.index_select(better, 0)?.sub(&scores.index_select(worse, 0)?)?;
    // softplus(-d) = max(-d, 0) + ln(1 + exp(-|d|)), stable for any d.
    let softplus = (d.neg()?.relu()? + d.abs()?.neg()?.exp()?.affine(1.0, 1.0)?.log()?)?;
    softplus.mul(pair_weights)?.sum_all()? / norm
}
