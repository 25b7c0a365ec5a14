//! `evalloop report`: re-render a run's report from its report.json.

use std::path::PathBuf;

use serde_json::json;

use super::Outcome;
use crate::Result;
use crate::report;

#[derive(Debug, clap::Args)]
pub struct ReportArgs {
    /// The report.json to render (as written by `evalloop run`).
    #[arg(long)]
    pub from: PathBuf,
    /// The directory to write report.json, report.md and report.html into (default: the
    /// directory of --from).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// Renders report.md and report.html (and report.json) from `--from`.
pub fn run(a: ReportArgs) -> Result<Outcome> {
    let out = a.out.unwrap_or_else(|| match a.from.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    });
    let data = report::render(&a.from, &out)?;
    let files: Vec<PathBuf> =
        [report::JSON_FILE, report::MD_FILE, report::HTML_FILE].iter().map(|f| out.join(f)).collect();
    let text = format!(
        "wrote {} (run {})",
        files.iter().map(|f| f.display().to_string()).collect::<Vec<_>>().join(", "),
        data.meta.run_id
    );
    let js = json!({ "out": out, "files": files, "run_id": data.meta.run_id });
    Ok(Outcome::ok(text, js))
}
