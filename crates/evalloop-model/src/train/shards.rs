//! Data parallelism on the CPU: a micro-batch's forward pass cut into shards that run side by
//! side on the rayon pool, each with its own dropout stream, and their backward passes.

use candle_core::backprop::GradStore;
use candle_core::{Device, Tensor};
use rayon::prelude::*;

use super::error::Result;
use crate::{Encoded, PairTokenizer, TrainableModel, ops, weights};

/// The training forward pass of the encoded rows `items` of a micro-batch, cut into up to
/// `shards` contiguous shards: with one, a plain forward pass on the model's dropout stream; with
/// several, the shards run side by side on the rayon pool, shard `s` drawing its dropout masks
/// from stream `s` of the model's seed at the shared stream's position, which then moves on by
/// the most any shard drew (so masks, and results, depend on the shard count, not on threads or
/// timing). When every thread has a shard, each shard's linear layers run their gemm on its own
/// thread ([`ops::serial`]). Returns each shard's outputs `(rows, num_labels)`, with its graph.
pub(super) fn forward_shards(
    tm: &TrainableModel,
    tokenizer: &PairTokenizer,
    items: &[&Encoded],
    shards: usize,
    device: &Device,
) -> Result<Vec<Tensor>> {
    let forward = |rows: &[&Encoded]| -> Result<Tensor> {
        let batch = tokenizer.collate(rows, device)?;
        Ok(tm.model.forward_t(&batch.input_ids, &batch.token_type_ids, &batch.attention_mask, true)?)
    };
    let size = items.len().div_ceil(shards.clamp(1, items.len().max(1)));
    if size >= items.len() {
        return Ok(vec![forward(items)?]);
    }
    let rng = tm.rng();
    let start = rng.word_pos()?;
    let n_shards = items.len().div_ceil(size);
    let done: Vec<(Result<Tensor>, u128)> = items
        .par_chunks(size)
        .enumerate()
        .map(|(s, rows)| rng.with_stream(s as u64, start, || on_shard_thread(n_shards, || forward(rows))))
        .collect();
    rng.advance(done.iter().map(|d| d.1).max().unwrap_or(0))?;
    done.into_iter().map(|d| d.0).collect()
}

/// Runs one of `shards` shards' work: with the linear layers' gemm on this thread
/// ([`ops::serial`]) when every thread of the pool has a shard, else split over the pool.
fn on_shard_thread<R>(shards: usize, f: impl FnOnce() -> R) -> R {
    if shards >= rayon::current_num_threads() { ops::serial(f) } else { f() }
}

/// The parameter gradients of each shard of [`forward_shards`], given the loss gradient
/// `g_out` with respect to the shards' outputs stacked in order: shard `s`'s backward pass of
/// `sum(outputs_s * g_out[rows of s])`, side by side on the rayon pool.
pub(super) fn backward_shards(outputs: &[Tensor], g_out: &Tensor) -> Result<Vec<GradStore>> {
    let mut offsets = Vec::with_capacity(outputs.len());
    let mut at = 0;
    for o in outputs {
        offsets.push(at);
        at += o.dim(0)?;
    }
    outputs
        .par_iter()
        .zip(offsets)
        .map(|(o, off)| {
            on_shard_thread(outputs.len(), || -> Result<GradStore> {
                let g = g_out.narrow(0, off, o.dim(0)?)?;
                Ok((o * g)?.sum_all()?.backward()?)
            })
        })
        .collect()
}

/// Adds the gradients in `g` of the trainable parameters to their slots in `grads`.
pub(super) fn add_grads(grads: &mut [Option<Tensor>], g: &GradStore, params: &[weights::Param]) -> Result<()> {
    for (slot, p) in grads.iter_mut().zip(params) {
        if let Some(gp) = g.get(p.var.as_tensor()) {
            *slot = Some(match slot.take() {
                None => gp.clone(),
                Some(acc) => (acc + gp)?,
            });
        }
    }
    Ok(())
}
