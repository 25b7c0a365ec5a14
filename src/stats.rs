//! Correlation, calibration and hypothesis-test statistics, checked against scipy.
