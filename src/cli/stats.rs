//! `evalloop stats`: what the store holds.

use super::Outcome;
use crate::Result;
use crate::config::Settings;
use crate::store;
use crate::text::escape as esc;

/// Counts of logs, feedback by type, cohorts, evaluators and the time range.
pub fn run(settings: &Settings) -> Result<Outcome> {
    let store = store::open(&settings.db)?;
    let s = store.stats()?;
    Ok(Outcome::ok(stats_text(&s), serde_json::to_value(&s).unwrap_or_default()))
}

fn stats_text(s: &crate::store::StoreStats) -> String {
    let mut t = format!(
        "store {} ({}, schema v{})\nlogs {}\nfeedback events {} ({} orphaned)\n",
        esc(&s.location),
        s.backend,
        s.schema_version,
        s.logs,
        s.feedback_events,
        s.orphaned_feedback
    );
    if s.dimension_ratings > 0 {
        t.push_str(&format!("dimension ratings {} (not part of the human score)\n", s.dimension_ratings));
    }
    if s.preferences > 0 {
        t.push_str(&format!("preferences {} (between two outputs; not part of the human score)\n", s.preferences));
    }
    for (k, n) in &s.feedback_by_type {
        t.push_str(&format!("  {:<24} {n}\n", esc(k)));
    }
    t.push_str("cohorts:\n");
    for (c, n) in &s.cohorts {
        t.push_str(&format!("  {:<24} {n}\n", esc(c.as_deref().unwrap_or("(none)"))));
    }
    t.push_str("evaluators:\n");
    for (e, n) in &s.evaluators {
        t.push_str(&format!("  {:<24} {n}\n", esc(e)));
    }
    t.push_str(&format!(
        "time range {} .. {}",
        s.first_timestamp.as_deref().unwrap_or("-"),
        s.last_timestamp.as_deref().unwrap_or("-")
    ));
    t
}
