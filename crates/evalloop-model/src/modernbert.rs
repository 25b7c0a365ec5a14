//! ModernBERT's sequence classifier (`ModernBertForSequenceClassification`), following
//! candle-transformers' `modernbert.rs` and transformers' modeling code (rotary positions, GeGLU,
//! global and sliding-window attention alternating, pre-norm layers without biases), built from
//! the trainable layers of [`super::bert`]: a LayerNorm with a gradient, the fused attention
//! kernel (the sliding window as a mask row per query), real seeded dropout.
//!
//! Tensor names are Hugging Face's: `model.embeddings.{tok_embeddings,norm}`,
//! `model.layers.N.{attn_norm,attn.Wqkv,attn.Wo,mlp_norm,mlp.Wi,mlp.Wo}`, `model.final_norm`,
//! `head.{dense,norm}`, `classifier`. Shapes: `b` = batch, `s` = sequence length, `h` = hidden
//! size, `d` = head size.

use candle_core::{D, DType, IndexOp, Module, Result, Tensor};
use candle_nn::{Embedding, VarBuilder};

use super::bert::{Dropout, DropoutRng, LayerNorm, Linear, dense, extended_attention_mask, softmax_last_dim};
use super::config::{BertConfig, HiddenAct};
use super::ops;

/// A linear layer reading `weight` `(out, in)` and, when `bias`, `bias` `(out,)`.
fn linear(in_dim: usize, out_dim: usize, vb: VarBuilder, bias: bool) -> Result<Linear> {
    let weight = vb.get((out_dim, in_dim), "weight")?;
    let bias = if bias { Some(vb.get(out_dim, "bias")?) } else { None };
    Ok(Linear::new(weight, bias))
}

/// `act(xs)`, with the fused exact GELU (it has a backward pass) on contiguous f32 CPU tensors.
pub(crate) fn activate(xs: &Tensor, act: HiddenAct) -> Result<Tensor> {
    match act {
        HiddenAct::Gelu if ops::fused_ok(xs) => ops::gelu_erf(xs),
        HiddenAct::Gelu => xs.gelu_erf(),
        HiddenAct::GeluTanh => xs.gelu(),
        HiddenAct::Relu => xs.relu(),
    }
}

/// The additive value that masks a key out (as transformers uses: the dtype's minimum).
fn mask_min(dtype: DType) -> f64 {
    match dtype {
        DType::F64 => f64::MIN,
        DType::F16 => -65504.0,
        DType::BF16 => -3.3895313892515355e38,
        _ => f32::MIN as f64,
    }
}

/// Rotary positions for one base: the frequencies `1 / theta^(2i / d)`, `i < d / 2` (in f32,
/// as transformers computes them).
#[derive(Debug, Clone)]
struct Rotary {
    inv_freq: Vec<f32>,
}

impl Rotary {
    fn new(theta: f64, d: usize) -> Self {
        Rotary { inv_freq: (0..d / 2).map(|i| 1.0f32 / (theta as f32).powf((2 * i) as f32 / d as f32)).collect() }
    }

    /// `cos` and `sin` `(1, s, 1, d)` for positions `0..s`, each row `[a, a]` for the angles
    /// `a_i = position * inv_freq_i`, in `like`'s dtype and on its device.
    fn tables(&self, s: usize, like: &Tensor) -> Result<(Tensor, Tensor)> {
        let d = 2 * self.inv_freq.len();
        let (mut cos, mut sin) = (Vec::with_capacity(s * d), Vec::with_capacity(s * d));
        for p in 0..s {
            for _ in 0..2 {
                for f in &self.inv_freq {
                    let a = p as f32 * f;
                    cos.push(a.cos());
                    sin.push(a.sin());
                }
            }
        }
        let table = |v: Vec<f32>| -> Result<Tensor> {
            Tensor::from_vec(v, (1, s, 1, d), &candle_core::Device::Cpu)?
                .to_dtype(like.dtype())?
                .to_device(like.device())
        };
        Ok((table(cos)?, table(sin)?))
    }
}

/// `xs` `(b, s, heads, d)` rotated by `(cos, sin)` from [`Rotary::tables`]:
/// `xs * cos + rotate_half(xs) * sin`, with `rotate_half([x1, x2]) = [-x2, x1]`.
fn rotate(xs: &Tensor, (cos, sin): &(Tensor, Tensor)) -> Result<Tensor> {
    let d = xs.dim(3)?;
    let x1 = xs.narrow(3, 0, d / 2)?;
    let x2 = xs.narrow(3, d / 2, d / 2)?;
    let rotated = Tensor::cat(&[&x2.neg()?, &x1], 3)?;
    xs.broadcast_mul(cos)? + rotated.broadcast_mul(sin)?
}

/// What every layer of one batch shares: the padding mask `(b, 1, 1, s)` of global layers;
/// when a local layer's window is narrower than the sequence, the padding-and-window mask
/// `(b, 1, s, s)` of local layers; the rotary tables of global and local layers.
struct Masks {
    global: Tensor,
    local: Option<Tensor>,
    rope: [(Tensor, Tensor); 2],
}

/// Multi-head self-attention with rotary positions: `Wqkv`, then `Wo`, each without bias
/// unless `attention_bias`; a local layer's token sees keys at most `window` tokens away.
#[derive(Debug, Clone)]
struct Attention {
    wqkv: Linear,
    wo: Linear,
    /// `Some(w)` for a local (sliding-window) layer.
    window: Option<usize>,
    num_heads: usize,
    head_size: usize,
    probs_dropout: Dropout,
    out_dropout: Dropout,
}

impl Attention {
    /// `xs` `(b, s, h)` → `(b, s, h)`.
    fn forward_t(&self, xs: &Tensor, masks: &Masks, train: bool) -> Result<Tensor> {
        let (b, s, h) = xs.dims3()?;
        let (heads, d) = (self.num_heads, self.head_size);
        let qkv = dense(&self.wqkv, xs)?.reshape((b, s, 3, heads, d))?;
        let rope = &masks.rope[usize::from(self.window.is_some())];
        let q = rotate(&qkv.i((.., .., 0))?, rope)?;
        let k = rotate(&qkv.i((.., .., 1))?, rope)?;
        let v = qkv.i((.., .., 2))?;
        let scale = 1.0 / (d as f64).sqrt();
        // The window cuts only when two tokens can be more than `w` apart.
        let local_mask = match self.window {
            Some(w) if s > w + 1 => masks.local.as_ref(),
            _ => None,
        };
        let mask = local_mask.unwrap_or(&masks.global);
        let context = if ops::fused_ok(mask) && ops::fused_ok(xs) {
            // The fused kernel takes the window as a mask row per query.
            let flat = |t: Tensor| t.contiguous()?.reshape((b, s, h));
            let (q, k, v) = (flat(q)?, flat(k)?, flat(v)?);
            let keep = self.probs_dropout.keep_values(b * heads * s * s, train)?;
            ops::attention(&q, &k, &v, mask, heads, scale, keep)?
        } else {
            let split = |t: Tensor| t.transpose(1, 2)?.contiguous();
            let (q, k, v) = (split(q)?, split(k)?, split(v)?);
            let scores = (q.matmul(&k.t()?)? * scale)?;
            let scores = scores.broadcast_add(mask)?;
            let probs = self.probs_dropout.forward_t(&softmax_last_dim(&scores)?, train)?;
            probs.matmul(&v)?.transpose(1, 2)?.reshape((b, s, h))?
        };
        self.out_dropout.forward_t(&dense(&self.wo, &context)?, train)
    }
}

/// One pre-norm layer: `xs + attn(attn_norm(xs))`, then `+ Wo(drop(act(a) * g))` with
/// `[a, g] = Wi(mlp_norm(xs))`. Layer 0 has no `attn_norm` (the embeddings are normed).
#[derive(Debug, Clone)]
struct Layer {
    attn_norm: Option<LayerNorm>,
    attn: Attention,
    mlp_norm: LayerNorm,
    wi: Linear,
    wo: Linear,
    act: HiddenAct,
    mlp_dropout: Dropout,
    intermediate: usize,
}

impl Layer {
    fn load(vb: VarBuilder, cfg: &BertConfig, index: usize, rng: &DropoutRng) -> Result<Self> {
        let (h, i) = (cfg.hidden_size, cfg.intermediate_size);
        let m = &cfg.modernbert;
        let (eps, norm_bias) = (cfg.norm_eps(), m.norm_bias.unwrap_or(false));
        let attn_bias = m.attention_bias.unwrap_or(false);
        let mlp_bias = m.mlp_bias.unwrap_or(false);
        let global = cfg.is_global_layer(index);
        let attn_vb = vb.pp("attn");
        Ok(Layer {
            attn_norm: if index == 0 {
                None
            } else {
                Some(LayerNorm::load_maybe_bias(vb.pp("attn_norm"), h, eps, norm_bias)?)
            },
            attn: Attention {
                wqkv: linear(h, 3 * h, attn_vb.pp("Wqkv"), attn_bias)?,
                wo: linear(h, h, attn_vb.pp("Wo"), attn_bias)?,
                window: (!global).then(|| cfg.local_half_window()),
                num_heads: cfg.num_attention_heads,
                head_size: cfg.head_size(),
                probs_dropout: Dropout::new(cfg.attention_dropout_prob(), rng.clone()),
                out_dropout: Dropout::new(cfg.attention_dropout_prob(), rng.clone()),
            },
            mlp_norm: LayerNorm::load_maybe_bias(vb.pp("mlp_norm"), h, eps, norm_bias)?,
            wi: linear(h, 2 * i, vb.pp("mlp").pp("Wi"), mlp_bias)?,
            wo: linear(i, h, vb.pp("mlp").pp("Wo"), mlp_bias)?,
            act: m.hidden_activation.unwrap_or_default(),
            mlp_dropout: Dropout::new(cfg.hidden_dropout(), rng.clone()),
            intermediate: i,
        })
    }

    /// `xs` `(b, s, h)` → `(b, s, h)`.
    fn forward_t(&self, xs: &Tensor, masks: &Masks, train: bool) -> Result<Tensor> {
        let normed = match &self.attn_norm {
            Some(norm) => norm.forward(xs)?,
            None => xs.clone(),
        };
        let xs = (xs + self.attn.forward_t(&normed, masks, train)?)?;
        let wi = dense(&self.wi, &self.mlp_norm.forward(&xs)?)?;
        let input = wi.narrow(D::Minus1, 0, self.intermediate)?.contiguous()?;
        let gate = wi.narrow(D::Minus1, self.intermediate, self.intermediate)?;
        let inner = self.mlp_dropout.forward_t(&(activate(&input, self.act)? * gate)?, train)?;
        xs + dense(&self.wo, &inner)?
    }
}

/// The ModernBERT encoder: token embeddings, LayerNorm and dropout, the layers, a final norm.
#[derive(Debug, Clone)]
pub struct ModernBertModel {
    tok_embeddings: Embedding,
    emb_norm: LayerNorm,
    emb_dropout: Dropout,
    layers: Vec<Layer>,
    final_norm: LayerNorm,
    half_window: usize,
    /// Rotary positions of global and local layers.
    rotary: [Rotary; 2],
}

impl ModernBertModel {
    /// Reads `embeddings`, `layers.N` and `final_norm` under `vb`.
    pub fn load(vb: VarBuilder, cfg: &BertConfig, rng: &DropoutRng) -> Result<Self> {
        let h = cfg.hidden_size;
        let (eps, norm_bias) = (cfg.norm_eps(), cfg.modernbert.norm_bias.unwrap_or(false));
        let words = vb.pp("embeddings").pp("tok_embeddings").get((cfg.vocab_size, h), "weight")?;
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| Layer::load(vb.pp(format!("layers.{i}")), cfg, i, rng))
            .collect::<Result<Vec<_>>>()?;
        Ok(ModernBertModel {
            tok_embeddings: Embedding::new(words, h),
            emb_norm: LayerNorm::load_maybe_bias(vb.pp("embeddings").pp("norm"), h, eps, norm_bias)?,
            emb_dropout: Dropout::new(cfg.embedding_dropout_prob(), rng.clone()),
            layers,
            final_norm: LayerNorm::load_maybe_bias(vb.pp("final_norm"), h, eps, norm_bias)?,
            half_window: cfg.local_half_window(),
            rotary: [
                Rotary::new(cfg.rope_theta(true), cfg.head_size()),
                Rotary::new(cfg.rope_theta(false), cfg.head_size()),
            ],
        })
    }

    /// Token ids and attention mask (1 = token, 0 = padding), both `(b, s)` u32, → the last
    /// hidden state `(b, s, h)`.
    pub fn forward_t(&self, input_ids: &Tensor, attention_mask: &Tensor, train: bool) -> Result<Tensor> {
        let xs = self.emb_norm.forward(&self.tok_embeddings.forward(input_ids)?)?;
        let mut xs = self.emb_dropout.forward_t(&xs, train)?;
        let masks = self.masks(attention_mask, &xs)?;
        for layer in &self.layers {
            xs = layer.forward_t(&xs, &masks, train)?;
        }
        self.final_norm.forward(&xs)
    }

    /// The padding mask, the padding-and-window mask when some local layer's window cuts, and
    /// the rotary tables, for hidden states like `xs`.
    fn masks(&self, attention_mask: &Tensor, xs: &Tensor) -> Result<Masks> {
        let dtype = xs.dtype();
        let global = extended_attention_mask(attention_mask, dtype)?;
        let (b, s) = attention_mask.dims2()?;
        let rope = [self.rotary[0].tables(s, xs)?, self.rotary[1].tables(s, xs)?];
        let cuts = self.layers.iter().any(|l| l.attn.window.is_some()) && s > self.half_window + 1;
        if !cuts {
            return Ok(Masks { global, local: None, rope });
        }
        let am = attention_mask.to_device(&candle_core::Device::Cpu)?.to_vec2::<u32>()?;
        let (min, w) = (mask_min(dtype), self.half_window);
        let mut values = Vec::with_capacity(b * s * s);
        for row in &am {
            for i in 0..s {
                values.extend((0..s).map(|j| if row[j] != 0 && i.abs_diff(j) <= w { 0.0 } else { min }));
            }
        }
        let local = Tensor::from_vec(values, (b, 1, s, s), &candle_core::Device::Cpu)?
            .to_dtype(dtype)?
            .to_device(attention_mask.device())?;
        Ok(Masks { global, local: Some(local), rope })
    }
}

/// `ModernBertForSequenceClassification`: the encoder, pooling (`cls` or `mean` over the
/// tokens), the prediction head (`head.dense`, activation, `head.norm`), dropout and
/// `classifier`.
#[derive(Debug, Clone)]
pub struct ModernBertForSequenceClassification {
    model: ModernBertModel,
    head_dense: Linear,
    head_act: HiddenAct,
    head_norm: LayerNorm,
    dropout: Dropout,
    classifier: Linear,
    mean_pooling: bool,
    num_labels: usize,
}

impl ModernBertForSequenceClassification {
    /// Reads the encoder under `model.`, the head under `head.` and `classifier.weight`
    /// `(num_labels, h)`, `classifier.bias` `(num_labels,)`.
    pub fn load(vb: VarBuilder, cfg: &BertConfig, rng: &DropoutRng) -> Result<Self> {
        let h = cfg.hidden_size;
        let m = &cfg.modernbert;
        let head = vb.pp("head");
        Ok(ModernBertForSequenceClassification {
            model: ModernBertModel::load(vb.pp("model"), cfg, rng)?,
            head_dense: linear(h, h, head.pp("dense"), m.classifier_bias.unwrap_or(false))?,
            head_act: m.classifier_activation.unwrap_or_default(),
            head_norm: LayerNorm::load_maybe_bias(head.pp("norm"), h, cfg.norm_eps(), m.norm_bias.unwrap_or(false))?,
            dropout: Dropout::new(cfg.classifier_dropout_prob(), rng.clone()),
            classifier: linear(h, cfg.num_labels(), vb.pp("classifier"), true)?,
            mean_pooling: m.classifier_pooling.as_deref() == Some("mean"),
            num_labels: cfg.num_labels(),
        })
    }

    /// Logits `(b, num_labels)` for ids and attention mask, both `(b, s)`; dropout is on when
    /// `train`.
    pub fn forward_t(&self, input_ids: &Tensor, attention_mask: &Tensor, train: bool) -> Result<Tensor> {
        let hidden = self.model.forward_t(input_ids, attention_mask, train)?;
        let pooled = if self.mean_pooling {
            let mask = attention_mask.to_dtype(hidden.dtype())?.unsqueeze(2)?;
            hidden.broadcast_mul(&mask)?.sum(1)?.broadcast_div(&mask.sum(1)?)?
        } else {
            hidden.i((.., 0))?
        };
        let xs = activate(&dense(&self.head_dense, &pooled)?, self.head_act)?;
        let xs = self.dropout.forward_t(&self.head_norm.forward(&xs)?, train)?;
        dense(&self.classifier, &xs)
    }

    /// Number of outputs.
    pub fn num_labels(&self) -> usize {
        self.num_labels
    }
}
