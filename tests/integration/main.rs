//! The integration tests, one module per area, linked into one test binary (one link and one
//! binary of about 180 MB instead of one per file: the build takes less time and a fraction of
//! the disk). Run one area with a filter on its module path, for example
//! `cargo test --release --test integration ppi_coverage:: -- --nocapture`.

mod serve_support;

mod agreement_cli;
mod agreement_reference;
mod analysis_cli;
mod browser_support;
mod ceiling_gate;
mod cli_support;
mod dataset_simulate;
mod estimate_cli;
mod export_cli;
mod fuzz_ingest;
mod hardening;
mod ingest_cli;
mod ingest_props;
mod pg_probes;
mod ppi_coverage;
mod ppi_reference;
mod preferences_cli;
mod queue_groups;
mod queue_pairs;
mod queue_store;
mod queue_support;
mod report_browser;
mod review_browser;
mod run_cli;
mod score_workers;
mod serve_browser;
mod serve_fault;
mod serve_postgres;
mod serve_sqlite;
mod simulate_raters;
mod stats_reference;
mod store_backends;
mod trend_cli;
