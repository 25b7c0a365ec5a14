//! The analysis commands: correlate, calibration, disagreements, bias, impact and the CI gate.
