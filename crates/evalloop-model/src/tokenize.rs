//! (prompt, output) pairs to token ids: the model's tokenizer.json, truncation at `max_length`
//! (longest-first, or output-first), padding to the longest sequence of each batch.
//!
//! [`Truncation`] says which text gives way when a pair is longer than `max_length` (special
//! tokens included): `longest_first` (the tokenizers crate's and transformers' default) cuts
//! one token at a time from the longer of the two; `output_first` keeps the whole output (up to
//! `max_length` minus the special tokens) and cuts the prompt to what is left, so long sources
//! do not push out what is judged. Training writes its choice into `training_config.json` and
//! the scorer reads it back, so both tokenize alike.

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};
use tokenizers::{PostProcessor, Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy};

/// Which side of a (prompt, output) pair is cut when it is too long (default `longest_first`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Truncation {
    /// Cut the longer of the two texts, a token at a time, from the right.
    #[default]
    LongestFirst,
    /// Keep the whole output (cut from the right only if it alone exceeds `max_length` minus
    /// the special tokens), then fill what is left with the start of the prompt.
    OutputFirst,
}

use super::ModelError;

/// One tokenized pair: `[CLS] prompt [SEP] output [SEP]` (as the tokenizer's post-processor
/// builds it), without padding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    /// Token ids.
    pub ids: Vec<u32>,
    /// Segment ids (0 for the prompt, 1 for the output).
    pub type_ids: Vec<u32>,
}

impl Encoded {
    /// Number of tokens.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// True when there are no tokens.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

/// A padded batch, every tensor `(b, s)` u32 with `s` the longest sequence in the batch.
#[derive(Debug, Clone)]
pub struct Batch {
    /// Token ids, padded with the pad id.
    pub input_ids: Tensor,
    /// Segment ids, padded with 0.
    pub token_type_ids: Tensor,
    /// 1 for tokens, 0 for padding.
    pub attention_mask: Tensor,
}

/// The model's tokenizer, set to truncate pairs at `max_length` tokens (special tokens
/// included), longest-first unless [`PairTokenizer::with_truncation`] says otherwise.
#[derive(Clone)]
pub struct PairTokenizer {
    tokenizer: Tokenizer,
    path: PathBuf,
    max_length: usize,
    pad_id: u32,
    truncation: Truncation,
}

impl std::fmt::Debug for PairTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PairTokenizer")
            .field("path", &self.path)
            .field("max_length", &self.max_length)
            .field("pad_id", &self.pad_id)
            .field("truncation", &self.truncation)
            .finish()
    }
}

impl PairTokenizer {
    /// Loads a tokenizer.json. Its own truncation and padding settings are replaced: longest-first
    /// truncation at `max_length`, no padding (batches are padded by [`PairTokenizer::collate`]).
    /// The pad id is the file's padding id, else the id of `[PAD]` (BERT, ModernBERT) or `<pad>`
    /// (RoBERTa, XLM-RoBERTa), else 0.
    pub fn from_file(path: &Path, max_length: usize) -> Result<Self, ModelError> {
        let err = |msg: String| ModelError::Tokenizer { path: path.to_path_buf(), msg };
        let mut tokenizer = Tokenizer::from_file(path).map_err(|e| err(e.to_string()))?;
        let pad_id = tokenizer
            .get_padding()
            .map(|p| p.pad_id)
            .or_else(|| tokenizer.token_to_id("[PAD]"))
            .or_else(|| tokenizer.token_to_id("<pad>"))
            .unwrap_or(0);
        if max_length < 4 {
            return Err(err(format!("max_length {max_length} is too short for a pair")));
        }
        tokenizer
            .with_truncation(Some(TruncationParams {
                direction: TruncationDirection::Right,
                max_length,
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
            }))
            .map_err(|e| err(e.to_string()))?;
        tokenizer.with_padding(None);
        Ok(PairTokenizer {
            tokenizer,
            path: path.to_path_buf(),
            max_length,
            pad_id,
            truncation: Truncation::LongestFirst,
        })
    }

    /// The id of `token` in the vocabulary, if it has one.
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.tokenizer.token_to_id(token)
    }

    /// Entries of the vocabulary, added tokens included.
    pub fn vocab_size(&self) -> usize {
        self.tokenizer.get_vocab_size(true)
    }

    /// The ids of the special tokens (`[CLS]`, `[SEP]`, `[PAD]`, `<s>`, ...), sorted.
    pub fn special_ids(&self) -> Vec<u32> {
        let mut ids: Vec<u32> =
            self.tokenizer.get_added_tokens_decoder().iter().filter(|(_, t)| t.special).map(|(id, _)| *id).collect();
        ids.push(self.pad_id);
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    /// Sets the truncation rule (see [`Truncation`]).
    pub fn with_truncation(mut self, truncation: Truncation) -> Result<Self, ModelError> {
        let params = match truncation {
            Truncation::LongestFirst => Some(TruncationParams {
                direction: TruncationDirection::Right,
                max_length: self.max_length,
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
            }),
            // Done by hand in `encode_pairs`; the tokenizer itself must not cut.
            Truncation::OutputFirst => None,
        };
        self.tokenizer
            .with_truncation(params)
            .map_err(|e| ModelError::Tokenizer { path: self.path.clone(), msg: e.to_string() })?;
        self.truncation = truncation;
        Ok(self)
    }

    /// The truncation rule.
    pub fn truncation(&self) -> Truncation {
        self.truncation
    }

    /// The truncation length in tokens.
    pub fn max_length(&self) -> usize {
        self.max_length
    }

    /// The padding token id.
    pub fn pad_id(&self) -> u32 {
        self.pad_id
    }

    /// Tokenizes pairs, in order (the tokenizers crate spreads the work over threads).
    pub fn encode_pairs<S: AsRef<str>>(&self, pairs: &[(S, S)]) -> Result<Vec<Encoded>, ModelError> {
        let err = |e: tokenizers::Error| ModelError::Tokenizer { path: self.path.clone(), msg: e.to_string() };
        let encodings = match self.truncation {
            Truncation::LongestFirst => {
                let inputs: Vec<(&str, &str)> = pairs.iter().map(|(a, b)| (a.as_ref(), b.as_ref())).collect();
                self.tokenizer.encode_batch(inputs, true).map_err(err)?
            }
            Truncation::OutputFirst => {
                let specials = self.tokenizer.get_post_processor().map_or(3, |p| p.added_tokens(true));
                let budget = self.max_length.saturating_sub(specials);
                let prompts: Vec<&str> = pairs.iter().map(|(a, _)| a.as_ref()).collect();
                let outputs: Vec<&str> = pairs.iter().map(|(_, b)| b.as_ref()).collect();
                let prompts = self.tokenizer.encode_batch(prompts, false).map_err(err)?;
                let outputs = self.tokenizer.encode_batch(outputs, false).map_err(err)?;
                let mut out = Vec::with_capacity(pairs.len());
                for (mut a, mut b) in prompts.into_iter().zip(outputs) {
                    let keep_b = b.len().min(budget);
                    b.truncate(keep_b, 0, TruncationDirection::Right);
                    a.truncate(budget - keep_b, 0, TruncationDirection::Right);
                    a.take_overflowing();
                    b.take_overflowing();
                    out.push(self.tokenizer.post_process(a, Some(b), true).map_err(err)?);
                }
                out
            }
        };
        Ok(encodings
            .into_iter()
            .map(|e| Encoded { ids: e.get_ids().to_vec(), type_ids: e.get_type_ids().to_vec() })
            .collect())
    }

    /// Pads encoded pairs to the longest of them and puts them on `device`.
    pub fn collate(&self, items: &[&Encoded], device: &Device) -> Result<Batch, ModelError> {
        let b = items.len();
        let s = items.iter().map(|e| e.len()).max().unwrap_or(0).max(1);
        let mut ids = vec![self.pad_id; b * s];
        let mut types = vec![0u32; b * s];
        let mut mask = vec![0u32; b * s];
        for (row, e) in items.iter().enumerate() {
            let at = row * s;
            ids[at..at + e.len()].copy_from_slice(&e.ids);
            types[at..at + e.len()].copy_from_slice(&e.type_ids);
            mask[at..at + e.len()].fill(1);
        }
        Ok(Batch {
            input_ids: Tensor::from_vec(ids, (b, s), device)?,
            token_type_ids: Tensor::from_vec(types, (b, s), device)?,
            attention_mask: Tensor::from_vec(mask, (b, s), device)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil;

    #[test]
    fn pairs_truncate_longest_first_and_pad_to_batch_longest() {
        let dir = tempfile::tempdir().unwrap();
        let path = testutil::write_tokenizer(dir.path());
        let tok = PairTokenizer::from_file(&path, 10).unwrap();
        let long = "good ".repeat(20);
        let enc = tok.encode_pairs(&[("bad answer", "good"), ("bad", long.as_str())]).unwrap();
        // [CLS] bad answer [SEP] good [SEP]
        assert_eq!(enc[0].len(), 6);
        assert_eq!(enc[0].type_ids, vec![0, 0, 0, 0, 1, 1]);
        assert_eq!(enc[0].ids[0], testutil::CLS);
        // The long output is cut, the short prompt kept: [CLS] bad [SEP] good*6 [SEP].
        assert_eq!(enc[1].len(), 10);
        assert_eq!(enc[1].type_ids.iter().filter(|t| **t == 0).count(), 3);
        let batch = tok.collate(&[&enc[0], &enc[1]], &Device::Cpu).unwrap();
        assert_eq!(batch.input_ids.dims(), &[2, 10]);
        let mask = batch.attention_mask.to_vec2::<u32>().unwrap();
        assert_eq!(mask[0].iter().sum::<u32>(), 6);
        assert_eq!(batch.input_ids.to_vec2::<u32>().unwrap()[0][6..], [testutil::PAD; 4]);
    }

    #[test]
    fn output_first_keeps_the_output_and_cuts_the_prompt() {
        let dir = tempfile::tempdir().unwrap();
        let path = testutil::write_tokenizer(dir.path());
        let tok = PairTokenizer::from_file(&path, 10).unwrap().with_truncation(Truncation::OutputFirst).unwrap();
        assert_eq!(tok.truncation(), Truncation::OutputFirst);
        let long_prompt = "what ".repeat(20);
        let long_output = "good ".repeat(20);
        let enc = tok
            .encode_pairs(&[
                (long_prompt.as_str(), "bad answer"),
                ("why", "good"),
                (long_prompt.as_str(), long_output.as_str()),
            ])
            .unwrap();
        // [CLS] what*5 [SEP] bad answer [SEP]: the output whole, the prompt fills the rest.
        assert_eq!(enc[0].len(), 10);
        assert_eq!(enc[0].type_ids, vec![0, 0, 0, 0, 0, 0, 0, 1, 1, 1]);
        let what = testutil::VOCAB.iter().position(|t| *t == "what").unwrap() as u32;
        assert_eq!(enc[0].ids[1..6], [what; 5]);
        assert_eq!(enc[0].ids[0], testutil::CLS);
        // Short pairs are untouched and equal to longest-first.
        let lf = PairTokenizer::from_file(&path, 10).unwrap();
        assert_eq!(enc[1], lf.encode_pairs(&[("why", "good")]).unwrap()[0]);
        // An output longer than the budget alone: no prompt token left, output cut to 7.
        assert_eq!(enc[2].len(), 10);
        assert_eq!(enc[2].type_ids, vec![0, 0, 1, 1, 1, 1, 1, 1, 1, 1]);
        // Longest-first agrees when only the prompt is long, but cuts a long output to make
        // room for the prompt.
        let lf0 = &lf.encode_pairs(&[(long_prompt.as_str(), "bad answer")]).unwrap()[0];
        assert_eq!(lf0, &enc[0]);
        let lf2 = &lf.encode_pairs(&[(long_prompt.as_str(), long_output.as_str())]).unwrap()[0];
        assert!(lf2.type_ids.iter().filter(|t| **t == 1).count() <= 5, "{lf2:?}");
    }
}
