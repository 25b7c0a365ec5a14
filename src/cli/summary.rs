//! `evalloop summary REQUEST_ID`: the feedback on one request.

use super::Outcome;
use crate::config::Settings;
use crate::feedback::FeedbackSummary;
use crate::store;
use crate::{Error, Result};

#[derive(Debug, clap::Args)]
pub struct SummaryArgs {
    /// The request to summarise.
    pub request_id: String,
}

/// Summarises the request's feedback (an error when neither a log nor feedback exists).
pub fn run(settings: &Settings, a: SummaryArgs) -> Result<Outcome> {
    let request_id = a.request_id;
    let store = store::open(&settings.db)?;
    let events = store.feedback_for(&request_id)?;
    let present = store.log_exists(&request_id)?;
    if events.is_empty() && !present {
        return Err(Error::Input(format!("no log and no feedback for request {request_id:?}")));
    }
    let s = FeedbackSummary::from_events(&request_id, &events, &settings.policy, present);
    Ok(Outcome::ok(summary_text(&s, settings), serde_json::to_value(&s).unwrap_or_default()))
}

fn summary_text(s: &FeedbackSummary, settings: &Settings) -> String {
    let mut t = format!(
        "request {}{}\n  thumbs_up {}, thumbs_down {}\n  avg_rating {} ({} ratings)\n",
        crate::text::escape(&s.request_id),
        if s.log_present { "" } else { " (orphaned: no log yet)" },
        s.thumbs_up,
        s.thumbs_down,
        s.avg_rating.map_or("-".into(), |r| format!("{r:.2}")),
        s.n_ratings,
    );
    t.push_str(&format!("  comments ({}):\n", s.comments.len()));
    for c in &s.comments {
        t.push_str(&format!("    {c:?}\n"));
    }
    if !s.edited_outputs.is_empty() {
        t.push_str(&format!("  edited outputs ({}):\n", s.edited_outputs.len()));
        for e in &s.edited_outputs {
            t.push_str(&format!("    \"{}\"\n", crate::text::escape(e)));
        }
    }
    let ind: Vec<String> = s.usage_indicators.iter().map(|(k, v)| format!("{k}={v}")).collect();
    t.push_str(&format!("  usage_indicators: {}\n", if ind.is_empty() { "-".into() } else { ind.join(", ") }));
    match s.human_score {
        Some(h) => t.push_str(&format!(
            "  human score {h:.2} ({})",
            serde_json::to_value(settings.policy.verdict(h)).unwrap_or_default().as_str().unwrap_or("")
        )),
        None => t.push_str("  human score - (no scored feedback)"),
    }
    t
}
