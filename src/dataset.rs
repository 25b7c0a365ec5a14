//! Turns labelled feedback into cohort-weighted, leakage-free train/validation/test splits.
