//! evalloop's BERT encoder against candle-transformers' `models::bert::BertModel`, an
//! independent implementation on the same candle ops: the last hidden state of both on the same
//! weights and batch agrees within 1e-4 (padding positions excluded: their values are
//! arbitrary in both). On the small random BERT of tests/fixtures/encoders/bert (always) and on
//! the real all-MiniLM-L6-v2 when `EVALLOOP_TEST_MODEL_DIR` names it (as scripts/test.sh does).
//!
//! candle-transformers is a dev-dependency only: evalloop's encoder has its own LayerNorm with a
//! gradient, fused kernels and int8 layers, so the library itself never calls it.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert as reference;
use evalloop_model::bert::BertModel;
use evalloop_model::{BertConfig, DropoutRng, PairTokenizer};

const PAIRS: [(&str, &str); 3] = [
    ("The council approved the budget on Tuesday.", "Budget approved."),
    (
        "A storm closed the airport for two days and stranded hundreds of travellers.",
        "The airport reopened after a two-day storm; hundreds of travellers had been stranded there.",
    ),
    ("", "A reply without a prompt."),
];

/// Largest absolute difference of the two `(b, s, h)` hidden states over real tokens.
fn max_diff_on_tokens(ours: &Tensor, theirs: &Tensor, mask: &Tensor) -> f32 {
    assert_eq!(ours.dims(), theirs.dims());
    let ours = ours.to_vec3::<f32>().unwrap();
    let theirs = theirs.to_vec3::<f32>().unwrap();
    let mask = mask.to_dtype(DType::U32).unwrap().to_vec2::<u32>().unwrap();
    let mut worst = 0f32;
    for (b, row) in mask.iter().enumerate() {
        for (s, &m) in row.iter().enumerate() {
            if m == 1 {
                for (a, c) in ours[b][s].iter().zip(&theirs[b][s]) {
                    worst = worst.max((a - c).abs());
                }
            }
        }
    }
    worst
}

/// Runs both encoders on `PAIRS` with the checkpoint in `dir`; returns the largest difference.
fn compare(dir: &Path) -> f32 {
    let dev = Device::Cpu;
    let cfg = BertConfig::from_file(&dir.join("config.json")).unwrap();
    let ref_cfg: reference::Config = serde_json::from_slice(&std::fs::read(dir.join("config.json")).unwrap()).unwrap();
    let tensors = candle_core::safetensors::load(dir.join("model.safetensors"), &dev).unwrap();
    // A sequence classifier keeps its encoder under `bert.`; a base checkpoint at the root.
    let prefixed = tensors.keys().any(|k| k.starts_with("bert."));
    let vb = VarBuilder::from_tensors(tensors, DType::F32, &dev);
    let encoder_vb = if prefixed { vb.pp("bert") } else { vb.clone() };

    let tok = PairTokenizer::from_file(&dir.join("tokenizer.json"), cfg.max_sequence_length()).unwrap();
    let pairs: Vec<(String, String)> = PAIRS.iter().map(|(p, o)| (p.to_string(), o.to_string())).collect();
    let enc = tok.encode_pairs(&pairs).unwrap();
    let batch = tok.collate(&enc.iter().collect::<Vec<_>>(), &dev).unwrap();
    // Padding is exercised: the pairs differ in length.
    let lens: Vec<usize> = enc.iter().map(|e| e.ids.len()).collect();
    assert!(lens.iter().min() < lens.iter().max(), "{lens:?}");

    let ours = BertModel::load(encoder_vb.clone(), &cfg, &DropoutRng::new(0)).unwrap();
    let ours = ours.forward_t(&batch.input_ids, &batch.token_type_ids, &batch.attention_mask, false).unwrap();
    let theirs = reference::BertModel::load(encoder_vb, &ref_cfg).unwrap();
    let theirs = theirs.forward(&batch.input_ids, &batch.token_type_ids, Some(&batch.attention_mask)).unwrap();
    let d = max_diff_on_tokens(&ours, &theirs, &batch.attention_mask);
    eprintln!("{}: largest difference {d:.2e}", dir.display());
    d
}

#[test]
fn the_random_bert_fixture_matches_candle_transformers() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/encoders/bert");
    let d = compare(&dir);
    assert!(d < 1e-4, "largest difference {d}");
}

#[test]
fn the_real_minilm_matches_candle_transformers() {
    let Some(dir) = std::env::var_os("EVALLOOP_TEST_MODEL_DIR").map(PathBuf::from) else {
        eprintln!("SKIPPED: EVALLOOP_TEST_MODEL_DIR is not set (scripts/test.sh sets it)");
        return;
    };
    let d = compare(&dir);
    assert!(d < 1e-4, "largest difference {d}");
}
