//! `evalloop runs list|show`: the weekly loop's recorded runs.

use clap::Subcommand;

use super::{Outcome, to_json};
use crate::config::Settings;
use crate::store;
use crate::{Error, Result};

#[derive(Debug, Subcommand)]
pub enum RunsWhat {
    /// Every run, newest first.
    List,
    /// One run in full.
    Show {
        /// The run id.
        id: String,
    },
}

/// Lists the runs or shows one.
pub fn run(settings: &Settings, what: RunsWhat) -> Result<Outcome> {
    let store = store::open(&settings.db)?;
    match what {
        RunsWhat::List => {
            let runs = store.runs()?;
            let mut text = format!("{:<28} {:<22} {:<10} {:<14} run dir\n", "id", "started", "status", "decision");
            for r in &runs {
                text.push_str(&format!(
                    "{:<28} {:<22} {:<10} {:<14} {}\n",
                    r.id,
                    r.started_at.get(..19).unwrap_or(&r.started_at),
                    r.status,
                    r.decision.as_deref().unwrap_or("-"),
                    r.run_dir
                ));
            }
            if runs.is_empty() {
                text = "no runs recorded yet".into();
            }
            Ok(Outcome::ok(text.trim_end().to_string(), to_json(&runs)))
        }
        RunsWhat::Show { id } => {
            let r = store.run(&id)?.ok_or_else(|| Error::Input(format!("no run with id {id:?}")))?;
            let text = serde_json::to_string_pretty(&r).unwrap_or_default();
            Ok(Outcome::ok(text, to_json(&r)))
        }
    }
}
