//! `evalloop record`: one feedback event from the command line.

use serde_json::json;

use super::Outcome;
use crate::config::Settings;
use crate::record::{FeedbackEvent, FeedbackType};
use crate::store;
use crate::text::escape as esc;
use crate::{Error, Result};

#[derive(Debug, clap::Args)]
pub struct RecordArgs {
    #[arg(long)]
    pub request_id: String,
    /// thumbs-up, thumbs-down, rating, comment, usage, edit, discard or preference.
    #[arg(
        long = "type",
        value_parser = ["thumbs-up", "thumbs-down", "rating", "comment", "usage", "edit", "discard", "preference"]
    )]
    pub feedback_type: String,
    /// 1-5 for rating, the text for comment, true/false for usage/edit/discard (default true),
    /// a, b or tie for preference (a: the output of --request-id is better).
    #[arg(long)]
    pub value: Option<String>,
    /// Preference: the request whose output is B (another output of the same prompt group).
    #[arg(long, value_name = "ID")]
    pub other_request_id: Option<String>,
    /// Rating or preference: the human dimension judged (e.g. coherence); default overall.
    #[arg(long)]
    pub dimension: Option<String>,
    #[arg(long)]
    pub user: Option<String>,
    /// RFC 3339; default now.
    #[arg(long)]
    pub timestamp: Option<String>,
}

/// Records the event, validated as ingest validates a row.
pub fn run(settings: &Settings, a: RecordArgs) -> Result<Outcome> {
    let t = FeedbackType::from_cli(&a.feedback_type)
        .ok_or_else(|| Error::Input(format!("--type: unknown feedback type {:?}", a.feedback_type)))?;
    let row = json!({
        "request_id": a.request_id,
        "feedback_type": t.as_str(),
        "value": a.value,
        "user_id": a.user,
        "timestamp": a.timestamp,
        "other_request_id": a.other_request_id,
        "dimension": a.dimension,
    });
    let event = FeedbackEvent::from_json(row, true, chrono::Utc::now()).map_err(|e| {
        // Name the option, not the row field: `--other-request-id`.
        let option = format!("`--{}`", e.field.replace('_', "-"));
        Error::Input(format!("record: {}", e.to_string().replace(&format!("field `{}`", e.field), &option)))
    })?;
    let mut store = store::open(&settings.db)?;
    store.begin()?;
    let o = store.insert_feedback(std::slice::from_ref(&event))?;
    store.commit()?;
    let mut text = if o.stored == 1 {
        format!("recorded {} on {} (event {})", t.as_str(), esc(&event.request_id), esc(&event.event_id))
    } else {
        format!("already recorded: event {} on {}", esc(&event.event_id), esc(&event.request_id))
    };
    if o.orphaned == 1 {
        let ids = match &event.other_request_id {
            Some(b) => format!("request {} or {}", esc(&event.request_id), esc(b)),
            None => format!("request {}", esc(&event.request_id)),
        };
        text.push_str(&format!("\nwarning: no log for {ids} yet; kept as orphaned"));
    }
    let mut js = event.to_json();
    js["stored"] = json!(o.stored == 1);
    js["orphaned"] = json!(o.orphaned == 1);
    Ok(Outcome::ok(text, js))
}
