//! Fine-tunes the BERT evaluator on a dataset directory: weighted losses, AdamW, checkpoints, resume.
