//! (prompt, output) pairs to token ids: the model's tokenizer.json, longest-first truncation
//! at `max_length`, padding to the longest sequence of each batch.

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use tokenizers::{Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy};

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

/// The model's tokenizer, set to truncate pairs longest-first at `max_length` tokens (special
/// tokens included).
#[derive(Clone)]
pub struct PairTokenizer {
    tokenizer: Tokenizer,
    path: PathBuf,
    max_length: usize,
    pad_id: u32,
}

impl std::fmt::Debug for PairTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PairTokenizer")
            .field("path", &self.path)
            .field("max_length", &self.max_length)
            .field("pad_id", &self.pad_id)
            .finish()
    }
}

impl PairTokenizer {
    /// Loads a tokenizer.json. Its own truncation and padding settings are replaced: longest-first
    /// truncation at `max_length`, no padding (batches are padded by [`PairTokenizer::collate`]).
    /// The pad id is the file's padding id, else the id of `[PAD]`, else 0.
    pub fn from_file(path: &Path, max_length: usize) -> Result<Self, ModelError> {
        let err = |msg: String| ModelError::Tokenizer { path: path.to_path_buf(), msg };
        let mut tokenizer = Tokenizer::from_file(path).map_err(|e| err(e.to_string()))?;
        let pad_id = tokenizer.get_padding().map(|p| p.pad_id).or_else(|| tokenizer.token_to_id("[PAD]")).unwrap_or(0);
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
        Ok(PairTokenizer { tokenizer, path: path.to_path_buf(), max_length, pad_id })
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
        let inputs: Vec<(&str, &str)> = pairs.iter().map(|(a, b)| (a.as_ref(), b.as_ref())).collect();
        let encodings = self
            .tokenizer
            .encode_batch(inputs, true)
            .map_err(|e| ModelError::Tokenizer { path: self.path.clone(), msg: e.to_string() })?;
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
    use crate::model::testutil;

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
}
