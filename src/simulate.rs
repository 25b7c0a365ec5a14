//! Builds realistic logs and biased feedback from human-judgement files, with known ground truth.
