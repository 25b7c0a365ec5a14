//! What `evalloop train` does, until the CLI wires it: reads the `[train]` table of a TOML file
//! and trains. Also used to check resume after `kill -9` by hand (see docs/research/model-perf-notes.md).
//!
//! ```text
//! cargo run --release --example train_dir -- DATASET_DIR CONFIG.toml OUT_DIR [--resume]
//! ```

use std::path::Path;

use anyhow::{Context, Result, bail};
use evalloop::train::{TrainConfig, train};

fn main() -> Result<()> {
    tracing_subscriber::fmt().with_writer(std::io::stderr).init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 3 {
        bail!("usage: train_dir DATASET_DIR CONFIG.toml OUT_DIR [--resume]");
    }
    let text = std::fs::read_to_string(&args[1]).with_context(|| args[1].clone())?;
    let cfg = TrainConfig::from_toml_str(&text, &args[1])?;
    let resume = args.get(3).is_some_and(|a| a == "--resume");
    let summary = train(Path::new(&args[0]), &cfg, Path::new(&args[2]), resume)?;
    eprintln!("{}", serde_json::to_string_pretty(&summary)?);
    Ok(())
}
