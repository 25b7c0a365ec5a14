//! The pre/post report: report.json, report.md and a self-contained report.html with plots.
//!
//! [`ReportData`] is report.json's schema (field by field in `docs/report-schema.md`). The
//! pipeline fills it from the statistics and the training run and calls [`write_report`];
//! `evalloop report --from report.json --out DIR` re-renders the three files with [`render`].
//!
//! Any statistic can be undefined (too few samples, a constant column): it is `None` here,
//! `null` in JSON and `—` in the tables, never NaN. report.md and report.html are built from
//! the same tables; report.html carries its plots as inline SVG drawn with plotters, and no
//! script, stylesheet or font from anywhere else. All user text (cohort names, evaluator names,
//! the gate's reason) is escaped.

//!
//! By concern: `schema` holds report.json's types (re-exported here), `tables` the tables both
//! pages share and their cell formatting, `escape` the escaping of user text, `markdown` and
//! `html` the two pages, `charts` the plots of report.html, `history` its time-series plots. This file holds the file names and reads and writes the three files.

// report.json's schema is public API that other tools read: keep every item documented.
#![warn(missing_docs)]

mod ceiling;
mod charts;
mod escape;
mod history;
mod html;
mod markdown;
mod preferences;
mod schema;
mod tables;
#[cfg(test)]
mod tests;

use std::path::Path;

pub use ceiling::{CeilingFigures, HumanCeilingSection};
pub use charts::CHART_IDS;
pub use escape::{html_escape, md_escape};
pub use html::render_html;
pub use markdown::render_markdown;
pub use preferences::{PairwiseFigures, PreferenceSection};
pub use schema::*;

use crate::atomic::write_atomic;
use crate::{Error, Result};

/// The schema version this build writes into `meta.schema_version`; newer files are refused.
pub const SCHEMA_VERSION: u32 = 1;
/// The default cap on scatter points kept per side (pre, post) by [`Scatter::sample`].
pub const MAX_SCATTER_POINTS: usize = 2000;
/// The seed of the scatter subsample, fixed so that a report is reproducible.
pub const SCATTER_SEED: u64 = 0x5eed_2e90;
/// The file names [`write_report`] writes into its directory.
pub const JSON_FILE: &str = "report.json";
/// See [`JSON_FILE`].
pub const MD_FILE: &str = "report.md";
/// See [`JSON_FILE`].
pub const HTML_FILE: &str = "report.html";

/// Writes report.json, report.md and report.html into `dir` (created if missing). Each file is
/// written atomically ([`write_atomic`]: a temporary file in `dir`, renamed over the old one), so
/// a reader never sees a half-written report. report.json is checked to read back before
/// anything is written.
pub fn write_report(dir: &Path, data: &ReportData) -> Result<()> {
    let json = to_json(data)?;
    let md = render_markdown(data);
    let html = render_html(data)?;
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    write_atomic(&dir.join(JSON_FILE), json.as_bytes())?;
    write_atomic(&dir.join(MD_FILE), md.as_bytes())?;
    write_atomic(&dir.join(HTML_FILE), html.as_bytes())?;
    Ok(())
}

/// Re-renders a report: reads `from` (a report.json) and writes the three files into `out`.
/// Returns the data read.
pub fn render(from: &Path, out: &Path) -> Result<ReportData> {
    let data = read_report(from)?;
    write_report(out, &data)?;
    Ok(data)
}

/// Reads a report.json; errors name the file and the JSON position, or the schema version.
pub fn read_report(path: &Path) -> Result<ReportData> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let data: ReportData = serde_json::from_str(&text).map_err(|e| Error::Input(format!("{}: {e}", path.display())))?;
    if data.meta.schema_version > SCHEMA_VERSION {
        return Err(Error::Input(format!(
            "{}: report schema version {} is newer than this evalloop's ({SCHEMA_VERSION}); upgrade evalloop",
            path.display(),
            data.meta.schema_version
        )));
    }
    Ok(data)
}

/// report.json's text (pretty, with a final newline). serde_json writes a non-finite float as
/// `null`, which reads back as `None`; a non-finite value in a field that cannot be `None` would
/// not read back, so that is an error naming the field's position.
pub fn to_json(data: &ReportData) -> Result<String> {
    let mut text = serde_json::to_string_pretty(data)
        .map_err(|e| Error::Input(format!("report.json: cannot serialize the report: {e}")))?;
    serde_json::from_str::<ReportData>(&text).map_err(|e| {
        Error::Input(format!("report.json: a required number is not finite (it would be written as null): {e}"))
    })?;
    text.push('\n');
    Ok(text)
}
