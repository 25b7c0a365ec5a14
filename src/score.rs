//! Batch inference with a trained evaluator, to JSONL or back into the store.
