//! `evalloop record`: one feedback event from the command line.

use serde_json::json;

use super::Outcome;
use crate::config::Settings;
use crate::record::{FeedbackEvent, FeedbackType};
use crate::store;
use crate::{Error, Result};

#[derive(Debug, clap::Args)]
pub struct RecordArgs {
    #[arg(long)]
    pub request_id: String,
    /// thumbs-up, thumbs-down, rating, comment, usage, edit or discard.
    #[arg(long = "type", value_parser = ["thumbs-up", "thumbs-down", "rating", "comment", "usage", "edit", "discard"])]
    pub feedback_type: String,
    /// 1-5 for rating, the text for comment, true/false for usage/edit/discard (default true).
    #[arg(long)]
    pub value: Option<String>,
    #[arg(long)]
    pub user: Option<String>,
    /// RFC 3339; default now.
    #[arg(long)]
    pub timestamp: Option<String>,
    /// For an edit: the text the user turned the output into.
    #[arg(long)]
    pub edited_output: Option<String>,
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
        "edited_output": a.edited_output,
    });
    let event = FeedbackEvent::from_json(row, true, chrono::Utc::now()).map_err(|e| {
        let msg = e.to_string().replace("field `edited_output`", "`--edited-output`");
        Error::Input(format!("record: {}", msg.replace("field `", "`--")))
    })?;
    let mut store = store::open(&settings.db)?;
    store.begin()?;
    let o = store.insert_feedback(std::slice::from_ref(&event))?;
    store.commit()?;
    let mut text = if o.stored == 1 {
        format!("recorded {} on {} (event {})", t.as_str(), event.request_id, event.event_id)
    } else {
        format!("already recorded: event {} on {}", event.event_id, event.request_id)
    };
    if o.orphaned == 1 {
        text.push_str(&format!("\nwarning: no log for request {} yet; kept as orphaned", event.request_id));
    }
    let mut js = event.to_json();
    js["stored"] = json!(o.stored == 1);
    js["orphaned"] = json!(o.orphaned == 1);
    Ok(Outcome::ok(text, js))
}
