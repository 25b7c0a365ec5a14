//! The layers of `BertForSequenceClassification` and of RoBERTa's and XLM-RoBERTa's sequence
//! classifiers (the same encoder, [`Family::Roberta`] in the config), in the style of candle's
//! `bert.rs`, but trainable: a LayerNorm built from differentiable ops, real dropout through
//! `forward_t(.., train)`, BERT's pooler and classifier or RoBERTa's two-layer head (as in
//! candle's `xlm_roberta.rs`).
//!
//! Every `load(vb, cfg)` reads its tensors under `vb` with Hugging Face's names; shapes in the
//! docs use `b` = batch, `s` = sequence length, `h` = hidden size.

use std::cell::RefCell;
use std::sync::{Arc, Mutex, OnceLock};

use candle_core::{D, DType, IndexOp, Module, Result, Tensor};
use candle_nn::{Embedding, VarBuilder};
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::config::{BertConfig, Family, HiddenAct};
use super::ops;

/// The position of a dropout random stream, saved in training checkpoints so that a resumed run
/// draws the same masks as an uninterrupted one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RngState {
    /// The seed the stream was created with.
    pub seed: u64,
    /// ChaCha word position, as a decimal string (it is a u128).
    pub word_pos: String,
}

/// Dropout multipliers drawn by one rayon task (see [`DropoutRng::keep_values`]).
const MASK_VALUES_PER_TASK: usize = 64 * 1024;

thread_local! {
    /// Set inside [`DropoutRng::with_stream`]: the stream this thread's dropout layers draw
    /// from instead of their model's shared one.
    static STREAM: RefCell<Option<ChaCha8Rng>> = const { RefCell::new(None) };
}

/// A seeded random stream shared by every dropout layer of a model. candle's own CPU random
/// tensors cannot be seeded, so masks are drawn here (ChaCha8) and copied to the device.
#[derive(Debug, Clone)]
pub struct DropoutRng {
    seed: u64,
    rng: Arc<Mutex<ChaCha8Rng>>,
}

impl DropoutRng {
    /// A new stream from `seed`.
    pub fn new(seed: u64) -> Self {
        DropoutRng { seed, rng: Arc::new(Mutex::new(ChaCha8Rng::seed_from_u64(seed))) }
    }

    /// The current position of the stream.
    pub fn state(&self) -> Result<RngState> {
        let rng = self.rng.lock().map_err(|_| candle_core::Error::msg("dropout rng poisoned"))?;
        Ok(RngState { seed: self.seed, word_pos: rng.get_word_pos().to_string() })
    }

    /// Moves the stream to a saved position (re-seeding it if the seed differs).
    pub fn restore(&mut self, state: &RngState) -> Result<()> {
        let pos: u128 = state
            .word_pos
            .parse()
            .map_err(|_| candle_core::Error::msg(format!("bad rng word_pos {}", state.word_pos)))?;
        let mut rng = self.rng.lock().map_err(|_| candle_core::Error::msg("dropout rng poisoned"))?;
        if state.seed != self.seed {
            *rng = ChaCha8Rng::seed_from_u64(state.seed);
            self.seed = state.seed;
        }
        rng.set_word_pos(pos);
        Ok(())
    }

    /// Runs `f` with every dropout layer on this thread drawing from ChaCha stream `stream` of
    /// this rng's seed, starting at word `word_pos`, instead of the shared stream (which does
    /// not move). Returns `f`'s result and the number of words drawn. For shards of a batch
    /// run side by side: each draws its masks from its own stream, so the masks depend on the
    /// shard, not on which thread ran it or when. Calls nest (rayon may run another shard's
    /// task on this thread while this one waits): the previous stream is restored on return.
    pub fn with_stream<R>(&self, stream: u64, word_pos: u128, f: impl FnOnce() -> R) -> (R, u128) {
        struct Restore(Option<ChaCha8Rng>);
        impl Drop for Restore {
            fn drop(&mut self) {
                let prev = self.0.take();
                STREAM.with(|c| *c.borrow_mut() = prev);
            }
        }
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        rng.set_stream(stream);
        rng.set_word_pos(word_pos);
        let restore = Restore(STREAM.with(|c| c.replace(Some(rng))));
        let out = f();
        let end = STREAM.with(|c| c.borrow().as_ref().map(|r| r.get_word_pos())).unwrap_or(word_pos);
        drop(restore);
        (out, end - word_pos)
    }

    /// Moves the shared stream on by `words` (after shards drew from their own streams).
    pub fn advance(&self, words: u128) -> Result<()> {
        let mut rng = self.rng.lock().map_err(|_| candle_core::Error::msg("dropout rng poisoned"))?;
        let pos = rng.get_word_pos();
        rng.set_word_pos(pos + words);
        Ok(())
    }

    /// The word position of the shared stream.
    pub fn word_pos(&self) -> Result<u128> {
        let rng = self.rng.lock().map_err(|_| candle_core::Error::msg("dropout rng poisoned"))?;
        Ok(rng.get_word_pos())
    }

    /// A mask shaped like `xs` whose entries are `0` with probability `p` and `1 / (1 - p)`
    /// otherwise, in `xs`'s dtype and on its device.
    fn mask_like(&self, xs: &Tensor, p: f64) -> Result<Tensor> {
        let values = self.keep_values(xs.elem_count(), p)?;
        Tensor::from_vec(values, xs.shape(), &candle_core::Device::Cpu)?.to_dtype(xs.dtype())?.to_device(xs.device())
    }

    /// `n` dropout multipliers: `0` with probability `p`, `1 / (1 - p)` otherwise. Value `i`
    /// comes from the stream's word `pos + i` (`pos` its position on entry) and the stream moves
    /// on by `n` words, exactly as `n` calls of `next_u32` would; the blocks of
    /// [`MASK_VALUES_PER_TASK`] values are drawn in parallel, each from a copy of the stream
    /// moved to its first word (ChaCha is seekable), so the masks do not depend on the threads.
    fn keep_values(&self, n: usize, p: f64) -> Result<Vec<f32>> {
        let threshold = (p * 4294967296.0) as u64;
        let keep = (1.0 / (1.0 - p)) as f32;
        let take = |rng: &mut ChaCha8Rng| {
            let start = rng.clone();
            let pos = rng.get_word_pos();
            rng.set_word_pos(pos + n as u128);
            start
        };
        let start = match STREAM.with(|c| c.borrow_mut().as_mut().map(take)) {
            Some(start) => start,
            None => take(&mut *self.rng.lock().map_err(|_| candle_core::Error::msg("dropout rng poisoned"))?),
        };
        let pos = start.get_word_pos();
        let mut values = vec![0f32; n];
        values.par_chunks_mut(MASK_VALUES_PER_TASK).enumerate().for_each(|(i, chunk)| {
            let mut rng = start.clone();
            rng.set_word_pos(pos + (i * MASK_VALUES_PER_TASK) as u128);
            for v in chunk {
                *v = if rng.next_u32() as u64 >= threshold { keep } else { 0.0 };
            }
        });
        Ok(values)
    }
}

/// Inverted dropout with probability `p`, active only when `train` is true.
#[derive(Debug, Clone)]
pub struct Dropout {
    p: f64,
    rng: DropoutRng,
}

impl Dropout {
    /// A dropout layer drawing from `rng`.
    pub fn new(p: f64, rng: DropoutRng) -> Self {
        Dropout { p, rng }
    }

    /// `xs` with entries zeroed with probability `p` and the rest scaled by `1 / (1 - p)` when
    /// training; `xs` unchanged otherwise.
    pub fn forward_t(&self, xs: &Tensor, train: bool) -> Result<Tensor> {
        if !train || self.p <= 0.0 {
            return Ok(xs.clone());
        }
        if ops::fused_ok(xs) {
            return ops::dropout(xs, self.rng.keep_values(xs.elem_count(), self.p)?);
        }
        xs.mul(&self.rng.mask_like(xs, self.p)?)
    }

    /// The multipliers [`Dropout::forward_t`] would apply to a tensor of `n` elements (drawn
    /// from the same stream, in the same order), or `None` when it would do nothing.
    pub fn keep_values(&self, n: usize, train: bool) -> Result<Option<Vec<f32>>> {
        if !train || self.p <= 0.0 {
            return Ok(None);
        }
        self.rng.keep_values(n, self.p).map(Some)
    }
}

/// LayerNorm over the last dimension from composed ops, so that its input, weight and bias all
/// get gradients (candle-nn's fused `ops::layer_norm` has no backward pass).
#[derive(Debug, Clone)]
pub struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f64,
}

impl LayerNorm {
    /// Reads `weight` and `bias`, both `(size,)`.
    pub fn load(vb: VarBuilder, size: usize, eps: f64) -> Result<Self> {
        Ok(LayerNorm { weight: vb.get(size, "weight")?, bias: vb.get(size, "bias")?, eps })
    }

    /// Reads `weight` `(size,)` and, when `bias`, `bias` `(size,)`; without one the bias is a
    /// constant zero (ModernBERT's `norm_bias = false`), which gets no gradient.
    pub fn load_maybe_bias(vb: VarBuilder, size: usize, eps: f64, bias: bool) -> Result<Self> {
        let weight = vb.get(size, "weight")?;
        let bias = if bias { vb.get(size, "bias")? } else { Tensor::zeros(size, weight.dtype(), weight.device())? };
        Ok(LayerNorm { weight, bias, eps })
    }

    /// An estimate of each output's magnitude, `3 |weight| + |bias|` (the normalised input is
    /// rarely beyond 3 standard deviations): the input range of the linear layers it feeds,
    /// for their int8 weights ([`Linear::set_input_range`]).
    pub fn output_range(&self) -> Result<Vec<f32>> {
        let (w, b) =
            (self.weight.to_dtype(DType::F32)?.to_vec1::<f32>()?, self.bias.to_dtype(DType::F32)?.to_vec1::<f32>()?);
        Ok(w.iter().zip(&b).map(|(w, b)| 3.0 * w.abs() + b.abs()).collect())
    }

    /// `(x - mean) / sqrt(var + eps) * weight + bias` over the last dimension (biased variance,
    /// as PyTorch). When no gradient is being recorded (no input is a `Var` or derived from
    /// one, as in scoring) candle's fused kernel is used; when one is, on contiguous f32 CPU
    /// tensors, [`ops::layer_norm`] (fused, with a backward pass); otherwise composed ops.
    pub fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        self.forward_fused(xs, true)
    }

    fn forward_fused(&self, xs: &Tensor, fused: bool) -> Result<Tensor> {
        if fused
            && xs.dtype() == DType::F32
            && !xs.track_op()
            && !self.weight.track_op()
            && !self.bias.track_op()
            && xs.is_contiguous()
        {
            return candle_nn::ops::layer_norm(xs, &self.weight, &self.bias, self.eps as f32);
        }
        if fused && ops::fused_ok(xs) && ops::fused_ok(&self.weight) && ops::fused_ok(&self.bias) {
            return ops::layer_norm(xs, &self.weight, &self.bias, self.eps);
        }
        let mean = xs.mean_keepdim(D::Minus1)?;
        let centered = xs.broadcast_sub(&mean)?;
        let var = centered.sqr()?.mean_keepdim(D::Minus1)?;
        let inv_std = (var + self.eps)?.sqrt()?.recip()?;
        centered.broadcast_mul(&inv_std)?.broadcast_mul(&self.weight)?.broadcast_add(&self.bias)
    }
}

/// A linear layer `y = x W^T + b`: candle's `Linear`, and its int8 weights
/// ([`ops::Int8Weights`]), quantized on the first call of `dense` inside [`ops::int8`].
#[derive(Debug, Clone)]
pub struct Linear {
    inner: candle_nn::Linear,
    int8: Arc<OnceLock<Option<Arc<ops::Int8Weights>>>>,
    /// An estimate of each input's magnitude (from the LayerNorm that feeds the layer), which
    /// balances the quantization of inputs and weights ([`Linear::set_input_range`]).
    input_range: Arc<OnceLock<Vec<f32>>>,
}

impl Linear {
    /// The layer with `weight` `(out, in)` and an optional `bias` `(out,)`.
    pub fn new(weight: Tensor, bias: Option<Tensor>) -> Self {
        Self { inner: candle_nn::Linear::new(weight, bias), int8: Arc::default(), input_range: Arc::default() }
    }

    /// Sets the estimated magnitude of each input (`(in,)`, e.g. [`LayerNorm::output_range`]),
    /// used when the int8 weights are made: input `c` is divided by `s_c = sqrt(r_c / max_j
    /// |W[j][c]|)` and column `c` of the weight multiplied by it (SmoothQuant's balance, alpha
    /// 0.5), so that a few large inputs do not coarsen the steps of all the others. The f32 path
    /// does not change. A second call is ignored.
    pub fn set_input_range(&self, range: Vec<f32>) {
        let _ = self.input_range.set(range);
    }

    /// The weight `(out, in)`.
    pub fn weight(&self) -> &Tensor {
        self.inner.weight()
    }

    /// The bias `(out,)`, if the layer has one.
    pub fn bias(&self) -> Option<&Tensor> {
        self.inner.bias()
    }

    /// The int8 weights, quantized on first use; `None` for a layer that stays in f32: an output
    /// head (under [`INT8_MIN_DIM`] outputs or inputs) or weights not in CPU f32 memory.
    fn int8_weights(&self) -> Result<Option<&Arc<ops::Int8Weights>>> {
        if let Some(w) = self.int8.get() {
            return Ok(w.as_ref());
        }
        let w = self.weight();
        let (n, k) = w.dims2()?;
        let made = if n < INT8_MIN_DIM || k < INT8_MIN_DIM || !ops::fused_ok(w) {
            None
        } else {
            let bias = self.bias().map(|b| b.to_vec1::<f32>()).transpose()?;
            let weight = w.flatten_all()?.to_vec1::<f32>()?;
            let smooth = self.input_range.get().filter(|r| r.len() == k).map(|r| {
                (0..k)
                    .map(|c| {
                        let wmax = (0..n).fold(0f32, |m, j| m.max(weight[j * k + c].abs()));
                        if r[c] > 0.0 && wmax > 0.0 { (r[c] / wmax).sqrt() } else { 1.0 }
                    })
                    .collect::<Vec<f32>>()
            });
            Some(Arc::new(ops::Int8Weights::new(&weight, bias.as_deref(), n, k, smooth.as_deref())?))
        };
        Ok(self.int8.get_or_init(|| made).as_ref())
    }
}

impl Module for Linear {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        self.inner.forward(xs)
    }
}

/// Layers with fewer outputs or inputs than this (the classification heads) keep f32 weights
/// under [`ops::int8`].
pub const INT8_MIN_DIM: usize = 16;

/// A linear layer `y = x W^T + b` reading `weight` `(out, in)` and `bias` `(out,)`.
pub fn linear(in_dim: usize, out_dim: usize, vb: VarBuilder) -> Result<Linear> {
    let weight = vb.get((out_dim, in_dim), "weight")?;
    let bias = vb.get(out_dim, "bias")?;
    Ok(Linear::new(weight, Some(bias)))
}

/// `l` applied to `xs` (`(.., in)` → `(.., out)`): inside [`ops::int8`], [`ops::linear_int8`]
/// on contiguous f32 CPU tensors (no gradient); otherwise [`ops::linear`] (matrix product and
/// bias in one gemm, one graph node) on contiguous f32 CPU tensors, candle's `Linear` for any
/// other tensor.
pub(crate) fn dense(l: &Linear, xs: &Tensor) -> Result<Tensor> {
    if ops::int8_enabled()
        && ops::fused_ok(xs)
        && let Some(w) = l.int8_weights()?
    {
        return ops::linear_int8(xs, w);
    }
    if let Some(b) = l.bias()
        && ops::fused_ok(xs)
        && ops::fused_ok(l.weight())
        && ops::fused_ok(b)
    {
        return ops::linear(xs, l.weight(), b);
    }
    l.forward(xs)
}

/// Softmax over the last dimension from composed ops (candle-nn's `softmax_last_dim` has no
/// backward pass). The subtracted max is detached: softmax does not depend on it. Without
/// gradient recording the fused kernel is used.
pub(crate) fn softmax_last_dim(xs: &Tensor) -> Result<Tensor> {
    if xs.dtype() == DType::F32 && !xs.track_op() && xs.is_contiguous() {
        return candle_nn::ops::softmax_last_dim(xs);
    }
    let max = xs.max_keepdim(D::Minus1)?.detach();
    let exp = xs.broadcast_sub(&max)?.exp()?;
    let sum = exp.sum_keepdim(D::Minus1)?;
    exp.broadcast_div(&sum)
}

/// Word + position + token-type embeddings, then LayerNorm and dropout. RoBERTa numbers the
/// positions of real tokens from `pad_token_id + 1` (padding gets `pad_token_id`) and uses token
/// type 0 only.
#[derive(Debug, Clone)]
pub struct BertEmbeddings {
    word_embeddings: Embedding,
    position_embeddings: Embedding,
    token_type_embeddings: Embedding,
    layer_norm: LayerNorm,
    dropout: Dropout,
    /// RoBERTa's padding id, from which positions are counted; `None` for BERT.
    roberta_pad: Option<u32>,
}

impl BertEmbeddings {
    /// Reads `word_embeddings`, `position_embeddings`, `token_type_embeddings`, `LayerNorm`.
    pub fn load(vb: VarBuilder, cfg: &BertConfig, rng: &DropoutRng) -> Result<Self> {
        let h = cfg.hidden_size;
        let emb =
            |n: usize, name: &str| -> Result<Embedding> { Ok(Embedding::new(vb.pp(name).get((n, h), "weight")?, h)) };
        Ok(BertEmbeddings {
            word_embeddings: emb(cfg.vocab_size, "word_embeddings")?,
            position_embeddings: emb(cfg.max_position_embeddings, "position_embeddings")?,
            token_type_embeddings: emb(cfg.type_vocab_size, "token_type_embeddings")?,
            layer_norm: LayerNorm::load(vb.pp("LayerNorm"), h, cfg.layer_norm_eps)?,
            dropout: Dropout::new(cfg.hidden_dropout_prob, rng.clone()),
            roberta_pad: (cfg.family() == Family::Roberta).then_some(cfg.pad_token_id),
        })
    }

    /// `input_ids`, `token_type_ids`: `(b, s)` u32 → `(b, s, h)`. RoBERTa ignores
    /// `token_type_ids` (type 0 everywhere, as transformers does when the tokenizer gives none).
    pub fn forward_t(&self, input_ids: &Tensor, token_type_ids: &Tensor, train: bool) -> Result<Tensor> {
        let (b, s) = input_ids.dims2()?;
        let words = self.word_embeddings.forward(input_ids)?;
        let xs = match self.roberta_pad {
            None => {
                let types = self.token_type_embeddings.forward(token_type_ids)?;
                let positions = Tensor::arange(0u32, s as u32, input_ids.device())?;
                let positions = self.position_embeddings.forward(&positions)?;
                (words + types)?.broadcast_add(&positions)?
            }
            Some(pad) => {
                let ids = input_ids.to_device(&candle_core::Device::Cpu)?.to_vec2::<u32>()?;
                let positions = roberta_positions(&ids, pad);
                let positions = Tensor::from_vec(positions, (b, s), input_ids.device())?;
                let positions = self.position_embeddings.forward(&positions)?;
                let type0 = self.token_type_embeddings.embeddings().i(0)?;
                (words + positions)?.broadcast_add(&type0)?
            }
        };
        let xs = self.layer_norm.forward(&xs)?;
        self.dropout.forward_t(&xs, train)
    }
}

/// RoBERTa's position ids (transformers' `create_position_ids_from_input_ids`): the k-th
/// non-padding token of a row (1-based) gets `pad + k`, padding gets `pad`. Row-major `(b, s)`.
fn roberta_positions(ids: &[Vec<u32>], pad: u32) -> Vec<u32> {
    let mut out = Vec::with_capacity(ids.iter().map(Vec::len).sum());
    for row in ids {
        let mut k = 0;
        for &t in row {
            if t == pad {
                out.push(pad);
            } else {
                k += 1;
                out.push(pad + k);
            }
        }
    }
    out
}

/// Multi-head self-attention (query, key, value) with attention-probability dropout.
#[derive(Debug, Clone)]
pub struct BertSelfAttention {
    query: Linear,
    key: Linear,
    value: Linear,
    dropout: Dropout,
    num_heads: usize,
    head_size: usize,
}

impl BertSelfAttention {
    /// Reads `query`, `key`, `value`.
    pub fn load(vb: VarBuilder, cfg: &BertConfig, rng: &DropoutRng) -> Result<Self> {
        let h = cfg.hidden_size;
        Ok(BertSelfAttention {
            query: linear(h, h, vb.pp("query"))?,
            key: linear(h, h, vb.pp("key"))?,
            value: linear(h, h, vb.pp("value"))?,
            dropout: Dropout::new(cfg.attention_probs_dropout_prob, rng.clone()),
            num_heads: cfg.num_attention_heads,
            head_size: cfg.head_size(),
        })
    }

    fn split_heads(&self, xs: &Tensor) -> Result<Tensor> {
        let (b, s, _) = xs.dims3()?;
        xs.reshape((b, s, self.num_heads, self.head_size))?.transpose(1, 2)?.contiguous()
    }

    /// `xs` `(b, s, h)`, `mask` `(b, 1, 1, s)` additive → `(b, s, h)`.
    /// On contiguous f32 CPU tensors the whole attention after the three linear layers is one
    /// [`ops::attention`] node; otherwise candle's matmuls with [`ops::scaled_masked_softmax_dropout`]
    /// or composed ops. All paths draw the same dropout mask from the stream.
    pub fn forward_t(&self, xs: &Tensor, mask: &Tensor, train: bool) -> Result<Tensor> {
        self.forward_impl(xs, mask, train, true)
    }

    fn forward_impl(&self, xs: &Tensor, mask: &Tensor, train: bool, fused: bool) -> Result<Tensor> {
        let (b, s, h) = xs.dims3()?;
        let (q, k, v) = (dense(&self.query, xs)?, dense(&self.key, xs)?, dense(&self.value, xs)?);
        let scale = 1.0 / (self.head_size as f64).sqrt();
        if fused && [&q, &k, &v, mask].into_iter().all(ops::fused_ok) {
            let keep = self.dropout.keep_values(b * self.num_heads * s * s, train)?;
            return ops::attention(&q, &k, &v, mask, self.num_heads, scale, keep);
        }
        let (q, k, v) = (self.split_heads(&q)?, self.split_heads(&k)?, self.split_heads(&v)?);
        let scores = q.matmul(&k.t()?)?;
        let probs = if ops::fused_ok(&scores) && ops::fused_ok(mask) {
            // Softmax and dropout in one pass; the mask is drawn as forward_t would draw it.
            let keep = self.dropout.keep_values(scores.elem_count(), train)?;
            ops::scaled_masked_softmax_dropout(&scores, mask, scale, keep)?
        } else {
            let probs = softmax_last_dim(&(scores * scale)?.broadcast_add(mask)?)?;
            self.dropout.forward_t(&probs, train)?
        };
        probs.matmul(&v)?.transpose(1, 2)?.reshape((b, s, h))
    }
}

/// A dense layer, dropout, then LayerNorm of the sum with the residual (`attention.output` and
/// `output` in Hugging Face's names).
#[derive(Debug, Clone)]
pub struct BertResidualOutput {
    dense: Linear,
    layer_norm: LayerNorm,
    dropout: Dropout,
}

impl BertResidualOutput {
    /// Reads `dense` (`in_dim` → hidden) and `LayerNorm`.
    pub fn load(vb: VarBuilder, in_dim: usize, cfg: &BertConfig, rng: &DropoutRng) -> Result<Self> {
        Ok(BertResidualOutput {
            dense: linear(in_dim, cfg.hidden_size, vb.pp("dense"))?,
            layer_norm: LayerNorm::load(vb.pp("LayerNorm"), cfg.hidden_size, cfg.layer_norm_eps)?,
            dropout: Dropout::new(cfg.hidden_dropout_prob, rng.clone()),
        })
    }

    /// `xs` `(b, s, in_dim)`, `residual` `(b, s, h)` → `(b, s, h)`.
    pub fn forward_t(&self, xs: &Tensor, residual: &Tensor, train: bool) -> Result<Tensor> {
        let xs = dense(&self.dense, xs)?;
        if !train && !xs.track_op() && ops::fused_ok(&xs) && ops::fused_ok(residual) {
            // Inference: the dense output is fresh and untracked, so the sum goes into it.
            ops::add_inplace(&xs, residual)?;
            return self.layer_norm.forward(&xs);
        }
        if ops::fused_ok(&xs) && ops::fused_ok(residual) {
            // Dropout and the residual sum in one node; the mask is drawn as forward_t draws it.
            let keep = self.dropout.keep_values(xs.elem_count(), train)?;
            return self.layer_norm.forward(&ops::dropout_add(&xs, residual, keep)?);
        }
        let xs = self.dropout.forward_t(&xs, train)?;
        self.layer_norm.forward(&(xs + residual)?)
    }
}

/// One encoder layer: self-attention block then feed-forward block.
#[derive(Debug, Clone)]
pub struct BertLayer {
    attention: BertSelfAttention,
    attention_output: BertResidualOutput,
    intermediate: Linear,
    act: HiddenAct,
    output: BertResidualOutput,
}

impl BertLayer {
    /// Reads `attention.self`, `attention.output`, `intermediate.dense`, `output`.
    pub fn load(vb: VarBuilder, cfg: &BertConfig, rng: &DropoutRng) -> Result<Self> {
        let h = cfg.hidden_size;
        Ok(BertLayer {
            attention: BertSelfAttention::load(vb.pp("attention").pp("self"), cfg, rng)?,
            attention_output: BertResidualOutput::load(vb.pp("attention").pp("output"), h, cfg, rng)?,
            intermediate: linear(h, cfg.intermediate_size, vb.pp("intermediate").pp("dense"))?,
            act: cfg.hidden_act,
            output: BertResidualOutput::load(vb.pp("output"), cfg.intermediate_size, cfg, rng)?,
        })
    }

    /// `xs` `(b, s, h)`, `mask` `(b, 1, 1, s)` → `(b, s, h)`.
    pub fn forward_t(&self, xs: &Tensor, mask: &Tensor, train: bool) -> Result<Tensor> {
        let attn = self.attention.forward_t(xs, mask, train)?;
        let attn = self.attention_output.forward_t(&attn, xs, train)?;
        let inter = dense(&self.intermediate, &attn)?;
        let inter = match self.act {
            // Inference: the dense output is fresh and untracked, so GELU overwrites it.
            HiddenAct::Gelu if !inter.track_op() && ops::fused_ok(&inter) => {
                ops::gelu_erf_inplace(&inter)?;
                inter
            }
            HiddenAct::Gelu if ops::fused_ok(&inter) => ops::gelu_erf(&inter)?,
            HiddenAct::Gelu => inter.gelu_erf()?,
            HiddenAct::GeluTanh => inter.gelu()?,
            HiddenAct::Relu => inter.relu()?,
        };
        self.output.forward_t(&inter, &attn, train)
    }
}

/// The BERT (or RoBERTa) encoder, embeddings and layers.
#[derive(Debug, Clone)]
pub struct BertModel {
    embeddings: BertEmbeddings,
    layers: Vec<BertLayer>,
}

impl BertModel {
    /// Reads `embeddings` and `encoder.layer.N` under `vb`.
    pub fn load(vb: VarBuilder, cfg: &BertConfig, rng: &DropoutRng) -> Result<Self> {
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| BertLayer::load(vb.pp(format!("encoder.layer.{i}")), cfg, rng))
            .collect::<Result<Vec<_>>>()?;
        let embeddings = BertEmbeddings::load(vb.pp("embeddings"), cfg, rng)?;
        // Each layer's query, key and value read the previous LayerNorm's output, its
        // intermediate layer the attention block's; their ranges guide the int8 weights.
        let mut range = embeddings.layer_norm.output_range()?;
        for layer in &layers {
            for l in [&layer.attention.query, &layer.attention.key, &layer.attention.value] {
                l.set_input_range(range.clone());
            }
            layer.intermediate.set_input_range(layer.attention_output.layer_norm.output_range()?);
            range = layer.output.layer_norm.output_range()?;
        }
        Ok(BertModel { embeddings, layers })
    }

    /// Token ids, token type ids and attention mask (1 = token, 0 = padding), all `(b, s)`,
    /// → the last hidden state `(b, s, h)`.
    pub fn forward_t(
        &self,
        input_ids: &Tensor,
        token_type_ids: &Tensor,
        attention_mask: &Tensor,
        train: bool,
    ) -> Result<Tensor> {
        let mut xs = self.embeddings.forward_t(input_ids, token_type_ids, train)?;
        let mask = extended_attention_mask(attention_mask, xs.dtype())?;
        for layer in &self.layers {
            xs = layer.forward_t(&xs, &mask, train)?;
        }
        Ok(xs)
    }
}

/// `(b, s)` 1/0 mask → `(b, 1, 1, s)` additive mask: 0 for tokens, the dtype's minimum for
/// padding (as transformers does).
pub(crate) fn extended_attention_mask(mask: &Tensor, dtype: DType) -> Result<Tensor> {
    let (b, s) = mask.dims2()?;
    let min = match dtype {
        DType::F64 => f64::MIN,
        DType::F16 => -65504.0,
        DType::BF16 => -3.3895313892515355e38,
        _ => f32::MIN as f64,
    };
    // (1 - m) * min = m * (-min) + min; exact for m in {0, 1}.
    mask.to_dtype(dtype)?.affine(-min, min)?.reshape((b, 1, 1, s))
}

/// The head on the first token's hidden state.
#[derive(Debug, Clone)]
enum Head {
    /// BERT: the pooler (dense + tanh), dropout, `classifier`.
    Pooler { pooler: Linear, classifier: Linear },
    /// RoBERTa's `RobertaClassificationHead`: dropout, `classifier.dense`, tanh, dropout,
    /// `classifier.out_proj`.
    Roberta { dense: Linear, out_proj: Linear },
}

/// `BertForSequenceClassification` (BERT, its pooler, dropout and a linear classifier) or
/// `RobertaForSequenceClassification` / `XLMRobertaForSequenceClassification` (the same encoder
/// under `roberta.`, and RoBERTa's head), as `cfg.family()` says.
#[derive(Debug, Clone)]
pub struct BertForSequenceClassification {
    bert: BertModel,
    dropout: Dropout,
    head: Head,
    num_labels: usize,
}

impl BertForSequenceClassification {
    /// Reads the encoder under `bert.` / `roberta.` (or at the root, for checkpoints without
    /// the prefix) and the head: `bert.pooler.dense` and `classifier` `(num_labels, h)` for
    /// BERT, `classifier.dense` `(h, h)` and `classifier.out_proj` `(num_labels, h)` for
    /// RoBERTa. Dropout masks are drawn from `rng`.
    pub fn load(vb: VarBuilder, cfg: &BertConfig, rng: &DropoutRng) -> Result<Self> {
        let prefix = cfg.family().prefix();
        let bert_vb = if vb.contains_tensor(&format!("{prefix}.embeddings.word_embeddings.weight")) {
            vb.pp(prefix)
        } else {
            vb.clone()
        };
        let (h, num_labels) = (cfg.hidden_size, cfg.num_labels());
        let head = match cfg.family() {
            Family::Roberta => Head::Roberta {
                dense: linear(h, h, vb.pp("classifier").pp("dense"))?,
                out_proj: linear(h, num_labels, vb.pp("classifier").pp("out_proj"))?,
            },
            _ => Head::Pooler {
                pooler: linear(h, h, bert_vb.pp("pooler").pp("dense"))?,
                classifier: linear(h, num_labels, vb.pp("classifier"))?,
            },
        };
        Ok(BertForSequenceClassification {
            bert: BertModel::load(bert_vb, cfg, rng)?,
            dropout: Dropout::new(cfg.classifier_dropout_prob(), rng.clone()),
            head,
            num_labels,
        })
    }

    /// Logits `(b, num_labels)` for ids, type ids and attention mask, all `(b, s)`; dropout is
    /// on when `train`.
    pub fn forward_t(
        &self,
        input_ids: &Tensor,
        token_type_ids: &Tensor,
        attention_mask: &Tensor,
        train: bool,
    ) -> Result<Tensor> {
        let hidden = self.bert.forward_t(input_ids, token_type_ids, attention_mask, train)?;
        let first = hidden.i((.., 0))?;
        match &self.head {
            Head::Pooler { pooler, classifier } => {
                let pooled = dense(pooler, &first)?.tanh()?;
                let pooled = self.dropout.forward_t(&pooled, train)?;
                dense(classifier, &pooled)
            }
            Head::Roberta { dense: d, out_proj } => {
                let xs = self.dropout.forward_t(&first, train)?;
                let xs = dense(d, &xs)?.tanh()?;
                let xs = self.dropout.forward_t(&xs, train)?;
                dense(out_proj, &xs)
            }
        }
    }

    /// The encoder's last hidden state `(b, s, h)` (what the head reads its first token of).
    pub fn hidden_states(
        &self,
        input_ids: &Tensor,
        token_type_ids: &Tensor,
        attention_mask: &Tensor,
        train: bool,
    ) -> Result<Tensor> {
        self.bert.forward_t(input_ids, token_type_ids, attention_mask, train)
    }

    /// Number of outputs.
    pub fn num_labels(&self) -> usize {
        self.num_labels
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn layer_norm_matches_candle_fused_and_has_gradients() {
        let dev = Device::Cpu;
        let xs = Tensor::new(&[[1f32, 2., 4.], [-3., 0.5, 9.]], &dev).unwrap();
        let w = candle_core::Var::new(&[1.5f32, -0.5, 2.0], &dev).unwrap();
        let b = candle_core::Var::new(&[0.1f32, 0.2, 0.3], &dev).unwrap();
        let ln = LayerNorm { weight: w.as_tensor().clone(), bias: b.as_tensor().clone(), eps: 1e-5 };
        let ours = ln.forward(&xs).unwrap();
        let fused = candle_nn::ops::layer_norm(&xs, &w, &b, 1e-5).unwrap();
        let diff = (ours.clone() - fused).unwrap().abs().unwrap().max_all().unwrap();
        assert!(diff.to_scalar::<f32>().unwrap() < 1e-5);
        let grads = ours.sqr().unwrap().sum_all().unwrap().backward().unwrap();
        for v in [&w, &b] {
            let g = grads.get(v).expect("gradient");
            assert!(g.abs().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap() > 0.0);
        }
    }

    #[test]
    fn fused_inference_path_matches_the_composed_ops() {
        let dev = Device::Cpu;
        let xs = Tensor::randn(0f32, 3., (2, 5, 16), &dev).unwrap();
        let w = Tensor::randn(1f32, 0.2, 16, &dev).unwrap();
        let b = Tensor::randn(0f32, 0.2, 16, &dev).unwrap();
        let ln = LayerNorm { weight: w.clone(), bias: b.clone(), eps: 1e-12 };
        let fused = ln.forward(&xs).unwrap();
        let wv = candle_core::Var::from_tensor(&w).unwrap();
        let ln_v = LayerNorm { weight: wv.as_tensor().clone(), bias: b, eps: 1e-12 };
        let composed = ln_v.forward(&xs).unwrap();
        let d = (fused - composed).unwrap().abs().unwrap().max_all().unwrap();
        assert!(d.to_scalar::<f32>().unwrap() < 1e-5);
        let xv = candle_core::Var::from_tensor(&xs).unwrap();
        let sm_fused = softmax_last_dim(&xs).unwrap();
        let sm_composed = softmax_last_dim(xv.as_tensor()).unwrap();
        let d = (sm_fused - sm_composed).unwrap().abs().unwrap().max_all().unwrap();
        assert!(d.to_scalar::<f32>().unwrap() < 1e-6);
    }

    #[test]
    fn fused_attention_matches_the_unfused_path_with_dropout_and_padding() {
        let dev = Device::Cpu;
        let (b, s, h, heads) = (3, 9, 12, 3);
        let vars: Vec<candle_core::Var> = (0..3)
            .flat_map(|_| {
                [
                    candle_core::Var::randn(0f32, 0.4, (h, h), &dev).unwrap(),
                    candle_core::Var::randn(0f32, 0.1, h, &dev).unwrap(),
                ]
            })
            .collect();
        let lin = |i: usize| Linear::new(vars[2 * i].as_tensor().clone(), Some(vars[2 * i + 1].as_tensor().clone()));
        // A fresh stream for each run, so that both paths draw the same masks.
        let layer = || BertSelfAttention {
            query: lin(0),
            key: lin(1),
            value: lin(2),
            dropout: Dropout::new(0.2, DropoutRng::new(11)),
            num_heads: heads,
            head_size: h / heads,
        };
        let xs = candle_core::Var::randn(0f32, 1.0, (b, s, h), &dev).unwrap();
        // The second and third sequences are padded (2 and 5 tokens).
        let am: Vec<u32> = (0..b * s).map(|i| u32::from(i % s < [s, s - 2, s - 5][i / s])).collect();
        let mask = extended_attention_mask(&Tensor::from_vec(am, (b, s), &dev).unwrap(), DType::F32).unwrap();
        let probe = Tensor::randn(0f32, 1.0, (b, s, h), &dev).unwrap();
        let max_diff = |a: &Tensor, b: &Tensor| -> f32 {
            (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap()
        };
        for train in [true, false] {
            let fused = layer().forward_impl(&xs, &mask, train, true).unwrap();
            let plain = layer().forward_impl(&xs, &mask, train, false).unwrap();
            assert_eq!(fused.dims(), &[b, s, h]);
            assert!(max_diff(&fused, &plain) < 1e-5, "train {train}: {}", max_diff(&fused, &plain));
            let gf = (fused * &probe).unwrap().sum_all().unwrap().backward().unwrap();
            let gp = (plain * &probe).unwrap().sum_all().unwrap().backward().unwrap();
            for v in vars.iter().chain([&xs]) {
                let (a, c) = (gf.get(v.as_tensor()).expect("gradient"), gp.get(v.as_tensor()).expect("gradient"));
                assert!(max_diff(a, c) < 1e-4, "train {train}: {}", max_diff(a, c));
            }
        }
    }

    #[test]
    fn parallel_mask_drawing_equals_sequential_next_u32() {
        // More than two tasks' worth, not a multiple of a task or of a ChaCha block.
        let n = 2 * MASK_VALUES_PER_TASK + 1001;
        let p = 0.1;
        let rng = DropoutRng::new(5);
        let first = rng.keep_values(7, p).unwrap();
        let values = rng.keep_values(n, p).unwrap();
        let after = rng.state().unwrap();
        let mut seq = ChaCha8Rng::seed_from_u64(5);
        let threshold = (p * 4294967296.0) as u64;
        let mut draw = |k: usize| -> Vec<f32> {
            (0..k).map(|_| if seq.next_u32() as u64 >= threshold { (1.0 / (1.0 - p)) as f32 } else { 0.0 }).collect()
        };
        assert_eq!(first, draw(7));
        assert_eq!(values, draw(n));
        assert_eq!(after.word_pos, seq.get_word_pos().to_string());
    }

    #[test]
    fn dropout_is_seeded_scaled_and_off_in_eval() {
        let dev = Device::Cpu;
        let xs = Tensor::ones((64, 64), DType::F32, &dev).unwrap();
        let d = Dropout::new(0.25, DropoutRng::new(3));
        let eval = d.forward_t(&xs, false).unwrap();
        assert_eq!(eval.sum_all().unwrap().to_scalar::<f32>().unwrap(), 4096.0);
        let a = d.forward_t(&xs, true).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let zeros = a.iter().filter(|v| **v == 0.0).count() as f64 / a.len() as f64;
        assert!((zeros - 0.25).abs() < 0.03, "{zeros}");
        assert!(a.iter().all(|v| *v == 0.0 || (*v - 4.0 / 3.0).abs() < 1e-6));
        // Same seed, same masks; restoring a saved position replays the stream.
        let d2 = Dropout::new(0.25, DropoutRng::new(3));
        let b = d2.forward_t(&xs, true).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(a, b);
        let state = d2.rng.state().unwrap();
        let c = d2.forward_t(&xs, true).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let mut rng3 = DropoutRng::new(99);
        rng3.restore(&state).unwrap();
        let d3 = Dropout::new(0.25, rng3);
        let c3 = d3.forward_t(&xs, true).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(c, c3);
    }
}
