//! One optimizer step's gradients: the rows of its micro-batches (each followed by the
//! corrupted copies of its outputs), the ranking pairs among them, and the objective's loss
//! terms (pointwise, pairwise, per-dimension) composed into one loss per micro-batch, whose
//! gradients add up to the step's.
//!
//! Every term is normalised over the whole optimizer batch (all `grad_accum` micro-batches), so
//! accumulating micro-batches gives the gradient of one large batch.

use candle_core::{D, DType, Device, Tensor, Var};

use super::config::{Objective, TrainConfig};
use super::error::Result;
use super::loss::{self, dimension_coefficients, dimension_loss, pairwise_loss, weighted_loss};
use super::setup::Setup;
use super::shards::{add_grads, backward_shards, forward_shards};
use crate::{Encoded, TrainableModel};

/// A ranking pair inside a micro-batch's rows: (better row, worse row, weight).
type Pair = (u32, u32, f64);

/// The loss terms an objective has (fixed for a run).
#[derive(Debug, Clone, Copy)]
pub(super) struct LossTerms {
    /// A pointwise term on the labels (BCE or MSE).
    pub pointwise: bool,
    /// A pairwise ranking term; batches are then group-aware.
    pub pairwise: bool,
    /// Ranking pairs drawn from labels (every objective but `self_supervised`).
    pub labelled_pairs: bool,
}

impl LossTerms {
    /// The terms of `objective`.
    pub(super) fn of(objective: Objective) -> Self {
        LossTerms {
            pointwise: objective.has_pointwise(),
            pairwise: objective.has_pairwise(),
            labelled_pairs: objective != Objective::SelfSupervised,
        }
    }
}

/// What one optimizer step computed.
pub(super) struct StepGradients {
    /// Per trainable parameter (in `TrainableModel::params` order), its gradient; `None` where
    /// no loss reached it.
    pub grads: Vec<Option<Tensor>>,
    /// The step's loss: the sum of its micro-batches' losses.
    pub loss: f64,
    /// Some term had weight in this step, so the optimizer should step (with the gradients
    /// above, possibly all `None`).
    pub update: bool,
}

/// The normalisers and switches of one optimizer step, over all its micro-batches.
struct StepTotals {
    /// Weight of the rows (the pointwise term's denominator).
    weight: f64,
    /// Weight of the ranking pairs (the pairwise term's denominator).
    pair_weight: f64,
    /// Per dimension, its coefficient in the mean over dimensions ([`dimension_coefficients`]).
    dim_coef: Vec<f64>,
    /// The pointwise term applies: the objective has it and the rows have weight.
    pointwise: bool,
    /// The pairwise term applies: the objective has it and the pairs have weight.
    pairs: bool,
    /// The dimension term applies: `dimension_weight > 0` and some row has a dimension label.
    dims: bool,
}

/// The gradients and loss of the optimizer step over the micro-batches `micro` (indices into
/// `setup.train`); `train_corrupt` holds this epoch's corrupted copies and `shards` is the
/// data-parallel shard count. Micro-batches run in order, each drawing its dropout masks from
/// the model's stream.
#[allow(clippy::too_many_arguments)]
pub(super) fn step_gradients(
    tm: &TrainableModel,
    setup: &Setup,
    cfg: &TrainConfig,
    terms: LossTerms,
    micro: &[&[usize]],
    train_corrupt: &[Option<Encoded>],
    shards: usize,
    device: &Device,
) -> Result<StepGradients> {
    let (pairs, copies) = ranking_pairs(setup, cfg, terms, micro, train_corrupt);
    let totals = step_totals(setup, cfg, terms, micro, &pairs);
    let mut grads: Vec<Option<Tensor>> = vec![None; tm.params().len()];
    let mut step_loss = 0.0;
    for ((idx, batch_pairs), copies) in micro.iter().zip(&pairs).zip(&copies) {
        let has_dim_labels = totals.dims && idx.iter().any(|&i| setup.train[i].labels.iter().any(Option::is_some));
        if !terms.pointwise && batch_pairs.is_empty() && !has_dim_labels {
            // Nothing to learn from this micro-batch under a purely pairwise loss.
            continue;
        }
        // Rows: the micro-batch, then the corrupted copies (label 0, weight 0: ranked only).
        let rows = idx.len() + copies.len();
        let mut items: Vec<&Encoded> = idx.iter().map(|&i| &setup.train_enc[i]).collect();
        items.extend(copies.iter().filter_map(|&a| train_corrupt[idx[a]].as_ref()));
        let shard_outputs = forward_shards(tm, &setup.tokenizer, &items, shards, device)?;
        // One shard: the loss hangs off the model's outputs. Several: off a leaf holding
        // their values, whose gradient each shard then takes back through its own graph.
        let (outputs, joined) = match shard_outputs.as_slice() {
            [one] => (one.clone(), None),
            many => {
                let values = Tensor::cat(&many.iter().map(Tensor::detach).collect::<Vec<_>>(), 0)?;
                let leaf = Var::from_tensor(&values)?;
                (leaf.as_tensor().clone(), Some(leaf))
            }
        };
        let Some(loss) =
            micro_batch_loss(setup, cfg, terms, &totals, idx, batch_pairs, has_dim_labels, &outputs, rows, device)?
        else {
            continue;
        };
        step_loss += loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
        let g = loss.backward()?;
        match joined {
            None => add_grads(&mut grads, &g, tm.params())?,
            Some(leaf) => {
                if let Some(g_out) = g.get(leaf.as_tensor()) {
                    for g in backward_shards(&shard_outputs, g_out)? {
                        add_grads(&mut grads, &g, tm.params())?;
                    }
                }
            }
        }
    }
    Ok(StepGradients { grads, loss: step_loss, update: totals.pointwise || totals.pairs || totals.dims })
}

/// Each micro-batch's ranking pairs, indices into its rows: the labelled pairs
/// ([`loss::batch_pairs`], under a pairwise objective that uses labels), the preference pairs
/// (`preference_pairs`) with both outputs in it, the soft pairs of `distill`, then each output with a
/// corrupted copy ranked above that copy (weight: the row's weight, 1 for an unlabelled output,
/// times `corruption_pairs`). Also returns, per micro-batch, the positions of the rows that have
/// a copy: the copies sit after the micro-batch's rows, in the order of their originals.
fn ranking_pairs(
    setup: &Setup,
    cfg: &TrainConfig,
    terms: LossTerms,
    micro: &[&[usize]],
    train_corrupt: &[Option<Encoded>],
) -> (Vec<Vec<Pair>>, Vec<Vec<usize>>) {
    let mut pairs: Vec<Vec<Pair>> = if terms.pairwise && terms.labelled_pairs {
        micro.iter().map(|idx| loss::batch_pairs(&setup.train, idx, cfg.pair_min_diff, cfg.pair_scope)).collect()
    } else {
        vec![Vec::new(); micro.len()]
    };
    if !setup.preferences.is_empty() {
        // Preference pairs whose two outputs are both in the micro-batch (a group's outputs
        // share one unless the group is larger than a batch).
        for (p, idx) in pairs.iter_mut().zip(micro) {
            let pos: std::collections::HashMap<usize, u32> =
                idx.iter().enumerate().map(|(k, &i)| (i, k as u32)).collect();
            for (k, i) in idx.iter().enumerate() {
                for (rejected, w) in setup.preferences.get(i).into_iter().flatten() {
                    if let Some(&r) = pos.get(rejected) {
                        p.push((k as u32, r, *w));
                    }
                }
            }
        }
    }
    if setup.distill_scale > 0.0 {
        for (p, idx) in pairs.iter_mut().zip(micro) {
            p.extend(distill_pairs(setup, cfg, idx));
        }
    }
    let copies: Vec<Vec<usize>> =
        micro.iter().map(|idx| (0..idx.len()).filter(|&a| train_corrupt[idx[a]].is_some()).collect()).collect();
    for ((p, idx), c) in pairs.iter_mut().zip(micro).zip(&copies) {
        for (k, &a) in c.iter().enumerate() {
            // An unlabelled output's pair counts as a unit-weight example's.
            let base = if idx[a] < setup.labelled { setup.train[idx[a]].weight } else { 1.0 };
            let w = base * cfg.corruption_pairs;
            if w > 0.0 {
                p.push((a as u32, (idx.len() + k) as u32, w));
            }
        }
    }
    (pairs, copies)
}

/// `distill`'s soft pairs among a micro-batch's rows `idx`: every two rows of one group (any two
/// under `pair_scope = "batch"`) that both carry an evaluator score, in both orders, weighted
/// `distill` x the probability that the first is better, `sigmoid((e_a - e_b) / scale)`.
fn distill_pairs(setup: &Setup, cfg: &TrainConfig, idx: &[usize]) -> Vec<Pair> {
    let mut out = Vec::new();
    for (a, &ia) in idx.iter().enumerate() {
        let ea = &setup.train[ia];
        let Some(sa) = ea.evaluator else { continue };
        if cfg.pair_scope == super::config::PairScope::Group && ea.group.is_none() {
            continue;
        }
        for (b, &ib) in idx.iter().enumerate().skip(a + 1) {
            let eb = &setup.train[ib];
            let Some(sb) = eb.evaluator else { continue };
            if cfg.pair_scope == super::config::PairScope::Group && eb.group != ea.group {
                continue;
            }
            let p = 1.0 / (1.0 + (-(sa - sb) / setup.distill_scale).exp());
            out.push((a as u32, b as u32, cfg.distill * p));
            out.push((b as u32, a as u32, cfg.distill * (1.0 - p)));
        }
    }
    out
}

/// The optimizer batch's normalisers and which terms apply (see [`StepTotals`]).
fn step_totals(
    setup: &Setup,
    cfg: &TrainConfig,
    terms: LossTerms,
    micro: &[&[usize]],
    pairs: &[Vec<Pair>],
) -> StepTotals {
    let weight: f64 = micro.iter().flat_map(|m| m.iter()).map(|&i| setup.train[i].weight).sum();
    let pair_weight: f64 = pairs.iter().flatten().map(|p| p.2).sum();
    // Per dimension, the weight of the optimizer batch's rows with a label on it.
    let mut dim_totals = vec![0.0; setup.dimensions.len()];
    for &i in micro.iter().flat_map(|m| m.iter()) {
        let e = &setup.train[i];
        for (t, l) in dim_totals.iter_mut().zip(&e.labels) {
            if l.is_some() {
                *t += e.weight;
            }
        }
    }
    StepTotals {
        weight,
        pair_weight,
        dim_coef: dimension_coefficients(&dim_totals),
        pointwise: terms.pointwise && weight > 0.0,
        pairs: terms.pairwise && pair_weight > 0.0,
        dims: cfg.dimension_weight > 0.0 && dim_totals.iter().any(|&t| t > 0.0),
    }
}

/// One micro-batch's loss from its `outputs` `(rows, 1 + K)`: the pointwise term, plus the
/// pairwise term (times `pairwise_weight` when the objective also has a pointwise one), plus
/// the dimension term; `None` when no term applies to it.
#[allow(clippy::too_many_arguments)]
fn micro_batch_loss(
    setup: &Setup,
    cfg: &TrainConfig,
    terms: LossTerms,
    totals: &StepTotals,
    idx: &[usize],
    batch_pairs: &[Pair],
    has_dim_labels: bool,
    outputs: &Tensor,
    rows: usize,
    device: &Device,
) -> Result<Option<Tensor>> {
    let logits = outputs.narrow(D::Minus1, 0, 1)?.flatten_all()?;
    let mut loss: Option<Tensor> = None;
    if totals.pointwise {
        let mut labels: Vec<f32> = idx.iter().map(|&i| setup.train[i].label as f32).collect();
        let mut wts: Vec<f32> = idx.iter().map(|&i| setup.train[i].weight as f32).collect();
        labels.resize(rows, 0.0);
        wts.resize(rows, 0.0);
        let labels = Tensor::from_vec(labels, rows, device)?;
        let wts = Tensor::from_vec(wts, rows, device)?;
        loss = Some(weighted_loss(&logits, &labels, &wts, setup.kind, totals.weight)?);
    }
    if totals.pairs && !batch_pairs.is_empty() {
        let pair_loss = pair_term(&logits, batch_pairs, totals.pair_weight, device)?;
        // Under "graded+pairwise" the pair term is scaled even in a step without
        // labelled rows (only unlabelled outputs and their copies).
        let pair_loss = if terms.pointwise { (pair_loss * cfg.pairwise_weight)? } else { pair_loss };
        loss = Some(match loss {
            None => pair_loss,
            Some(l) => (l + pair_loss)?,
        });
    }
    if has_dim_labels {
        let dim_loss = dimension_term(setup, cfg, &totals.dim_coef, idx, outputs, rows, device)?;
        loss = Some(match loss {
            None => dim_loss,
            Some(l) => (l + dim_loss)?,
        });
    }
    Ok(loss)
}

/// The pairwise ranking loss of `pairs` on `logits`, normalised by the optimizer batch's
/// `pair_weight`.
fn pair_term(logits: &Tensor, pairs: &[Pair], pair_weight: f64, device: &Device) -> Result<Tensor> {
    let better: Vec<u32> = pairs.iter().map(|p| p.0).collect();
    let worse: Vec<u32> = pairs.iter().map(|p| p.1).collect();
    let pw: Vec<f32> = pairs.iter().map(|p| p.2 as f32).collect();
    let np = pairs.len();
    Ok(pairwise_loss(
        logits,
        &Tensor::from_vec(better, np, device)?,
        &Tensor::from_vec(worse, np, device)?,
        &Tensor::from_vec(pw, np, device)?,
        pair_weight,
    )?)
}

/// The dimension loss of outputs 1..K of the micro-batch's `rows` rows: `idx`, then their
/// corrupted copies, which have no dimension label; `dimension_weight` x `dim_coef` per
/// dimension.
fn dimension_term(
    setup: &Setup,
    cfg: &TrainConfig,
    dim_coef: &[f64],
    idx: &[usize],
    outputs: &Tensor,
    rows: usize,
    device: &Device,
) -> Result<Tensor> {
    let n_dims = setup.dimensions.len();
    let b = rows;
    let mut y = Vec::with_capacity(b * n_dims);
    let mut mw = Vec::with_capacity(b * n_dims);
    for &i in idx {
        let e = &setup.train[i];
        for l in &e.labels {
            y.push(l.unwrap_or(0.0) as f32);
            mw.push(if l.is_some() { e.weight as f32 } else { 0.0 });
        }
    }
    y.resize(b * n_dims, 0.0);
    mw.resize(b * n_dims, 0.0);
    let coef: Vec<f32> = dim_coef.iter().map(|&c| (c * cfg.dimension_weight) as f32).collect();
    let dims_out = outputs.narrow(D::Minus1, 1, n_dims)?;
    let dtype = dims_out.dtype();
    let t =
        |v: Vec<f32>, shape: &[usize]| -> Result<Tensor> { Ok(Tensor::from_vec(v, shape, device)?.to_dtype(dtype)?) };
    Ok(dimension_loss(&dims_out, &t(y, &[b, n_dims])?, &t(mw, &[b, n_dims])?, &t(coef, &[n_dims])?)?)
}
