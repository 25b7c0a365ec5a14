//! `evalloop run`: the weekly loop (see [`crate::pipeline`]).

use std::path::PathBuf;

use super::{Outcome, to_json};
use crate::Result;
use crate::config::Settings;

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The run directory (default: [run] out_dir/<run id>); an existing one is resumed.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// Runs or resumes the weekly loop and prints its outcome.
pub fn run(settings: &Settings, a: RunArgs) -> Result<Outcome> {
    let o = crate::pipeline::run(settings, a.out.as_deref())?;
    let mut text = format!("run {} in {}\n", o.run_id, o.run_dir.display());
    let f = |x: Option<f64>| x.map_or("undefined".into(), |v| format!("{v:.4}"));
    text.push_str(&format!("held-out spearman: base {}  retrained {}\n", f(o.pre_spearman), f(o.post_spearman)));
    for w in &o.warnings {
        text.push_str(&format!("warning: {w}\n"));
    }
    if let Some(r) = &o.gate_reason {
        text.push_str(&format!("gate: {r}\n"));
    }
    for (step, secs) in &o.timings {
        text.push_str(&format!("  {step:<10} {secs:8.1} s\n"));
    }
    if let Some(h) = &o.report_html {
        text.push_str(&format!("report: {}", h.display()));
    }
    Ok(Outcome { text: text.trim_end().to_string(), json: to_json(&o), code: o.exit_code })
}
