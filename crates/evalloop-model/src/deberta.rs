//! DeBERTa-v2 and v3's sequence classifier (`DebertaV2ForSequenceClassification`), following
//! transformers' modeling code: disentangled self-attention (content-to-content plus the
//! content-to-position and position-to-content terms over relative distances, log-bucketed in
//! v3), BERT's residual blocks, a context pooler; trainable, from the layers of [`super::bert`].
//!
//! Tensor names are Hugging Face's: `deberta.embeddings.*`,
//! `deberta.encoder.layer.N.attention.self.{query_proj,key_proj,value_proj,pos_key_proj,pos_query_proj}`,
//! `deberta.encoder.layer.N.{attention.output,intermediate,output}.*`,
//! `deberta.encoder.{rel_embeddings,LayerNorm}`, `pooler.dense`, `classifier`. Shapes: `b` =
//! batch, `s` = sequence length, `h` = hidden size, `d` = head size, `r` = 2 x the span.

use candle_core::{DType, IndexOp, Module, Result, Tensor};
use candle_nn::{Embedding, VarBuilder};

use super::bert::{
    BertResidualOutput, Dropout, DropoutRng, LayerNorm, Linear, dense, extended_attention_mask, linear,
    softmax_last_dim,
};
use super::config::{BertConfig, HiddenAct};
use super::modernbert::activate;
use super::weights::deberta_norm_rel;

/// transformers' `make_log_bucket_position` for one distance `r`, in f32 as it computes it:
/// distances under `buckets / 2` stay, longer ones are mapped to
/// `ceil(ln(|r| / mid) / ln((max_position - 1) / mid) * (mid - 1)) + mid` with their sign.
fn log_bucket(r: i64, buckets: usize, max_position: usize) -> i64 {
    let mid = (buckets / 2) as i64;
    let abs = if r < mid && r > -mid { mid - 1 } else { r.abs() };
    if abs <= mid {
        return r;
    }
    let num = (abs as f32 / mid as f32).ln();
    let den = (((max_position - 1) as f64 / mid as f64) as f32).ln();
    let log_pos = (num / den * (mid - 1) as f32).ceil() + mid as f32;
    (log_pos * r.signum() as f32) as i64
}

/// The relative-position inputs of one forward pass: the (normalised) relative embedding
/// `(r, h)` and, for each (query i, key j), the gather indices of the two terms `(s, s)`.
struct Relative {
    embeddings: Tensor,
    c2p: Tensor,
    p2c: Tensor,
}

/// Disentangled self-attention.
#[derive(Debug, Clone)]
struct Attention {
    query: Linear,
    key: Linear,
    value: Linear,
    /// `pos_key_proj` (c2p) and `pos_query_proj` (p2c) when `share_att_key` is off.
    pos_key: Option<Linear>,
    pos_query: Option<Linear>,
    c2p: bool,
    p2c: bool,
    num_heads: usize,
    head_size: usize,
    probs_dropout: Dropout,
    pos_dropout: Dropout,
}

impl Attention {
    fn load(vb: VarBuilder, cfg: &BertConfig, rng: &DropoutRng) -> Result<Self> {
        let h = cfg.hidden_size;
        let (c2p, p2c) = cfg.deberta_terms();
        let own = !cfg.deberta.share_att_key.unwrap_or(false);
        Ok(Attention {
            query: linear(h, h, vb.pp("query_proj"))?,
            key: linear(h, h, vb.pp("key_proj"))?,
            value: linear(h, h, vb.pp("value_proj"))?,
            pos_key: if own && c2p { Some(linear(h, h, vb.pp("pos_key_proj"))?) } else { None },
            pos_query: if own && p2c { Some(linear(h, h, vb.pp("pos_query_proj"))?) } else { None },
            c2p,
            p2c,
            num_heads: cfg.num_attention_heads,
            head_size: cfg.head_size(),
            probs_dropout: Dropout::new(cfg.attention_probs_dropout_prob, rng.clone()),
            pos_dropout: Dropout::new(cfg.hidden_dropout_prob, rng.clone()),
        })
    }

    /// `xs` `(b, s, h)`, `mask` `(b, 1, 1, s)` additive → `(b, s, h)`.
    fn forward_t(&self, xs: &Tensor, mask: &Tensor, relative: Option<&Relative>, train: bool) -> Result<Tensor> {
        let (b, s, h) = xs.dims3()?;
        let (heads, d) = (self.num_heads, self.head_size);
        let split = |t: Tensor| t.reshape((b, s, heads, d))?.transpose(1, 2)?.contiguous();
        let q = split(dense(&self.query, xs)?)?;
        let k = split(dense(&self.key, xs)?)?;
        let v = split(dense(&self.value, xs)?)?;
        let factor = 1 + usize::from(self.c2p) + usize::from(self.p2c);
        let scale = ((d * factor) as f32).sqrt() as f64;
        let mut scores = q.matmul(&(k.t()? / scale)?)?;
        if let Some(rel) = relative.filter(|_| self.c2p || self.p2c) {
            let emb = self.pos_dropout.forward_t(&rel.embeddings, train)?;
            let r = emb.dim(0)?;
            // (r, h) → (1, heads, r, d).
            let per_head = |t: Tensor| t.reshape((r, heads, d))?.transpose(0, 1)?.contiguous()?.unsqueeze(0);
            let expand = |idx: &Tensor| idx.unsqueeze(0)?.unsqueeze(0)?.broadcast_as((b, heads, s, s))?.contiguous();
            if self.c2p {
                let pos_key = per_head(dense(self.pos_key.as_ref().unwrap_or(&self.key), &emb)?)?;
                let c2p = q.broadcast_matmul(&pos_key.t()?)?.contiguous()?;
                scores = (scores + (c2p.gather(&expand(&rel.c2p)?, 3)? / scale)?)?;
            }
            if self.p2c {
                let pos_query = per_head(dense(self.pos_query.as_ref().unwrap_or(&self.query), &emb)?)?;
                let p2c = k.broadcast_matmul(&pos_query.t()?)?.contiguous()?;
                let p2c = p2c.gather(&expand(&rel.p2c)?, 3)?.transpose(2, 3)?;
                scores = (scores + (p2c / scale)?)?;
            }
        }
        let probs = softmax_last_dim(&scores.broadcast_add(mask)?.contiguous()?)?;
        let probs = self.probs_dropout.forward_t(&probs, train)?;
        probs.matmul(&v)?.transpose(1, 2)?.reshape((b, s, h))
    }
}

/// One layer: disentangled attention, then BERT's residual output, intermediate and output.
#[derive(Debug, Clone)]
struct Layer {
    attention: Attention,
    attention_output: BertResidualOutput,
    intermediate: Linear,
    act: HiddenAct,
    output: BertResidualOutput,
}

impl Layer {
    fn load(vb: VarBuilder, cfg: &BertConfig, rng: &DropoutRng) -> Result<Self> {
        let h = cfg.hidden_size;
        Ok(Layer {
            attention: Attention::load(vb.pp("attention").pp("self"), cfg, rng)?,
            attention_output: BertResidualOutput::load(vb.pp("attention").pp("output"), h, cfg, rng)?,
            intermediate: linear(h, cfg.intermediate_size, vb.pp("intermediate").pp("dense"))?,
            act: cfg.hidden_act,
            output: BertResidualOutput::load(vb.pp("output"), cfg.intermediate_size, cfg, rng)?,
        })
    }

    fn forward_t(&self, xs: &Tensor, mask: &Tensor, relative: Option<&Relative>, train: bool) -> Result<Tensor> {
        let attn = self.attention.forward_t(xs, mask, relative, train)?;
        let attn = self.attention_output.forward_t(&attn, xs, train)?;
        let inter = activate(&dense(&self.intermediate, &attn)?, self.act)?;
        self.output.forward_t(&inter, &attn, train)
    }
}

/// The DeBERTa-v2 encoder: embeddings, layers, the relative embedding.
#[derive(Debug, Clone)]
pub struct DebertaModel {
    word_embeddings: Embedding,
    position_embeddings: Option<Embedding>,
    token_type_embeddings: Option<Embedding>,
    emb_norm: LayerNorm,
    emb_dropout: Dropout,
    layers: Vec<Layer>,
    rel_embeddings: Option<Tensor>,
    rel_norm: Option<LayerNorm>,
    span: usize,
    buckets: usize,
    max_relative: usize,
}

impl DebertaModel {
    /// Reads `embeddings`, `encoder.layer.N`, `encoder.rel_embeddings` and `encoder.LayerNorm`
    /// under `vb`, each where the config has it.
    pub fn load(vb: VarBuilder, cfg: &BertConfig, rng: &DropoutRng) -> Result<Self> {
        let h = cfg.hidden_size;
        let e = vb.pp("embeddings");
        let emb =
            |n: usize, name: &str| -> Result<Embedding> { Ok(Embedding::new(e.pp(name).get((n, h), "weight")?, h)) };
        let relative = cfg.deberta.relative_attention.unwrap_or(false);
        let enc = vb.pp("encoder");
        Ok(DebertaModel {
            word_embeddings: emb(cfg.vocab_size, "word_embeddings")?,
            position_embeddings: if cfg.deberta.position_biased_input.unwrap_or(true) {
                Some(emb(cfg.max_position_embeddings, "position_embeddings")?)
            } else {
                None
            },
            token_type_embeddings: if cfg.type_vocab_size > 0 {
                Some(emb(cfg.type_vocab_size, "token_type_embeddings")?)
            } else {
                None
            },
            emb_norm: LayerNorm::load(e.pp("LayerNorm"), h, cfg.layer_norm_eps)?,
            emb_dropout: Dropout::new(cfg.hidden_dropout_prob, rng.clone()),
            layers: (0..cfg.num_hidden_layers)
                .map(|i| Layer::load(enc.pp(format!("layer.{i}")), cfg, rng))
                .collect::<Result<Vec<_>>>()?,
            rel_embeddings: if relative {
                Some(enc.pp("rel_embeddings").get((2 * cfg.deberta_span(), h), "weight")?)
            } else {
                None
            },
            rel_norm: if relative && deberta_norm_rel(cfg) {
                Some(LayerNorm::load(enc.pp("LayerNorm"), h, cfg.layer_norm_eps)?)
            } else {
                None
            },
            span: cfg.deberta_span(),
            buckets: cfg.deberta_buckets(),
            max_relative: cfg.deberta_max_relative(),
        })
    }

    /// Ids, type ids and attention mask, all `(b, s)` u32, → the last hidden state `(b, s, h)`.
    pub fn forward_t(
        &self,
        input_ids: &Tensor,
        token_type_ids: &Tensor,
        attention_mask: &Tensor,
        train: bool,
    ) -> Result<Tensor> {
        let (_b, s) = input_ids.dims2()?;
        let mut xs = self.word_embeddings.forward(input_ids)?;
        if let Some(p) = &self.position_embeddings {
            xs = xs.broadcast_add(&p.forward(&Tensor::arange(0u32, s as u32, input_ids.device())?)?)?;
        }
        if let Some(t) = &self.token_type_embeddings {
            xs = (xs + t.forward(token_type_ids)?)?;
        }
        let xs = self.emb_norm.forward(&xs)?;
        // Padding positions are zeroed, as transformers does.
        let keep = attention_mask.to_dtype(xs.dtype())?.unsqueeze(2)?;
        let mut xs = self.emb_dropout.forward_t(&xs.broadcast_mul(&keep)?, train)?;
        let mask = extended_attention_mask(attention_mask, xs.dtype())?;
        let relative = self.relative(s, xs.dtype(), input_ids.device())?;
        for layer in &self.layers {
            xs = layer.forward_t(&xs, &mask, relative.as_ref(), train)?;
        }
        Ok(xs)
    }

    /// The relative embedding (normalised when the config says so) and the gather indices
    /// for `s` tokens: for query i and key j, `c2p[i][j] = clamp(rel(i - j) + span)` and
    /// `p2c[i][j] = clamp(-rel(i - j) + span)` within `[0, 2 span)`, `rel` log-bucketed when
    /// `position_buckets` is set.
    fn relative(&self, s: usize, dtype: DType, device: &candle_core::Device) -> Result<Option<Relative>> {
        let Some(emb) = &self.rel_embeddings else { return Ok(None) };
        let embeddings = match &self.rel_norm {
            Some(norm) => norm.forward(emb)?,
            None => emb.clone(),
        }
        .to_dtype(dtype)?;
        let span = self.span as i64;
        let clamp = |v: i64| v.clamp(0, 2 * span - 1) as u32;
        let (mut c2p, mut p2c) = (Vec::with_capacity(s * s), Vec::with_capacity(s * s));
        for i in 0..s as i64 {
            for j in 0..s as i64 {
                let rel = if self.buckets > 0 { log_bucket(i - j, self.buckets, self.max_relative) } else { i - j };
                c2p.push(clamp(rel + span));
                p2c.push(clamp(-rel + span));
            }
        }
        Ok(Some(Relative {
            embeddings,
            c2p: Tensor::from_vec(c2p, (s, s), device)?,
            p2c: Tensor::from_vec(p2c, (s, s), device)?,
        }))
    }
}

/// `DebertaV2ForSequenceClassification`: the encoder, the context pooler (dropout, `pooler.dense`,
/// activation on the first token), dropout and `classifier`.
#[derive(Debug, Clone)]
pub struct DebertaForSequenceClassification {
    deberta: DebertaModel,
    pooler_dropout: Dropout,
    pooler: Linear,
    pooler_act: HiddenAct,
    dropout: Dropout,
    classifier: Linear,
    num_labels: usize,
}

impl DebertaForSequenceClassification {
    /// Reads the encoder under `deberta.`, `pooler.dense` `(h, h)` and `classifier`
    /// `(num_labels, h)`.
    pub fn load(vb: VarBuilder, cfg: &BertConfig, rng: &DropoutRng) -> Result<Self> {
        let h = cfg.hidden_size;
        Ok(DebertaForSequenceClassification {
            deberta: DebertaModel::load(vb.pp("deberta"), cfg, rng)?,
            pooler_dropout: Dropout::new(cfg.deberta.pooler_dropout.unwrap_or(0.0), rng.clone()),
            pooler: linear(h, h, vb.pp("pooler").pp("dense"))?,
            pooler_act: cfg.deberta.pooler_hidden_act.unwrap_or_default(),
            dropout: Dropout::new(cfg.classifier_dropout_prob(), rng.clone()),
            classifier: linear(h, cfg.num_labels(), vb.pp("classifier"))?,
            num_labels: cfg.num_labels(),
        })
    }

    /// Logits `(b, num_labels)` for ids, type ids and attention mask, all `(b, s)`.
    pub fn forward_t(
        &self,
        input_ids: &Tensor,
        token_type_ids: &Tensor,
        attention_mask: &Tensor,
        train: bool,
    ) -> Result<Tensor> {
        let hidden = self.deberta.forward_t(input_ids, token_type_ids, attention_mask, train)?;
        let first = self.pooler_dropout.forward_t(&hidden.i((.., 0))?, train)?;
        let pooled = activate(&dense(&self.pooler, &first)?, self.pooler_act)?;
        dense(&self.classifier, &self.dropout.forward_t(&pooled, train)?)
    }

    /// Number of outputs.
    pub fn num_labels(&self) -> usize {
        self.num_labels
    }
}

#[cfg(test)]
mod tests {
    use super::log_bucket;

    /// Values of transformers' `make_log_bucket_position` with DeBERTa-v3's settings (256
    /// buckets, 512 positions), from transformers 5.23.0:
    /// `make_log_bucket_position(torch.tensor([0, 5, -127, 128, 129, 200, -300, 511, -511, 1000]), 256, 512)`.
    #[test]
    fn log_buckets_match_transformers() {
        let cases = [
            (0, 0),
            (5, 5),
            (-127, -127),
            (128, 128),
            (129, 129),
            (200, 169),
            (-300, -207),
            (511, 255),
            (-511, -255),
            (1000, 317),
        ];
        for (r, want) in cases {
            assert_eq!(log_bucket(r, 256, 512), want, "r = {r}");
        }
    }
}
