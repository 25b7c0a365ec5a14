//! The sequence classifier of whichever encoder family config.json's `model_type` names: one
//! type for training, scoring and checkpoints to hold.

use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;

use super::bert::{BertForSequenceClassification, DropoutRng};
use super::config::{BertConfig, Family};
use super::deberta::DebertaForSequenceClassification;
use super::modernbert::ModernBertForSequenceClassification;

/// A sequence classifier: BERT / RoBERTa / XLM-RoBERTa ([`BertForSequenceClassification`]) or
/// ModernBERT ([`ModernBertForSequenceClassification`]) or DeBERTa-v2/v3
/// ([`DebertaForSequenceClassification`]).
#[derive(Debug, Clone)]
pub enum SequenceClassifier {
    /// BERT and the RoBERTa family (one encoder, two heads).
    Bert(BertForSequenceClassification),
    /// ModernBERT.
    ModernBert(ModernBertForSequenceClassification),
    /// DeBERTa-v2 and v3.
    Deberta(DebertaForSequenceClassification),
}

impl SequenceClassifier {
    /// Reads the classifier of `cfg.family()` under `vb` (Hugging Face's names); dropout masks
    /// are drawn from `rng`.
    pub fn load(vb: VarBuilder, cfg: &BertConfig, rng: &DropoutRng) -> Result<Self> {
        Ok(match cfg.family() {
            Family::Bert | Family::Roberta => {
                SequenceClassifier::Bert(BertForSequenceClassification::load(vb, cfg, rng)?)
            }
            Family::ModernBert => {
                SequenceClassifier::ModernBert(ModernBertForSequenceClassification::load(vb, cfg, rng)?)
            }
            Family::Deberta => SequenceClassifier::Deberta(DebertaForSequenceClassification::load(vb, cfg, rng)?),
        })
    }

    /// Logits `(b, num_labels)` for ids, type ids and attention mask, all `(b, s)` u32; dropout
    /// is on when `train`. Type ids are read by BERT only.
    pub fn forward_t(
        &self,
        input_ids: &Tensor,
        token_type_ids: &Tensor,
        attention_mask: &Tensor,
        train: bool,
    ) -> Result<Tensor> {
        match self {
            SequenceClassifier::Bert(m) => m.forward_t(input_ids, token_type_ids, attention_mask, train),
            SequenceClassifier::ModernBert(m) => m.forward_t(input_ids, attention_mask, train),
            SequenceClassifier::Deberta(m) => m.forward_t(input_ids, token_type_ids, attention_mask, train),
        }
    }

    /// Number of outputs.
    pub fn num_labels(&self) -> usize {
        match self {
            SequenceClassifier::Bert(m) => m.num_labels(),
            SequenceClassifier::ModernBert(m) => m.num_labels(),
            SequenceClassifier::Deberta(m) => m.num_labels(),
        }
    }
}
