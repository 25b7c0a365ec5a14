//! The weekly loop: ingest, dataset build, train, score, report and gate, chained from a TOML config.
