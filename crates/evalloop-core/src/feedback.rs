//! Feedback semantics: the human-score policy, and the per-request feedback summary.
//!
//! # The human-score policy
//! Each request's feedback is aggregated to one human score on the 1-5 scale: an explicit rating
//! counts as given, a thumbs-up as `thumbs_up` (5), a thumbs-down as `thumbs_down` (1), and the
//! score is the mean over all these events. Comments carry no score. Implicit signals count only
//! when the policy maps them (off by default; e.g. usage 4, edit 3, discard 2) and their value is
//! `true`. A request whose events map to nothing has no human score. "Good" means a human score
//! `>= good_min` (4), "bad" `<= bad_max` (2); in between is neutral.

use serde::{Deserialize, Serialize};

use crate::record::{FeedbackEvent, FeedbackType, FeedbackValue};

/// How feedback events become one human score per request. See the module docs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HumanPolicy {
    /// Score of a thumbs-up; default 5.
    pub thumbs_up: f64,
    /// Score of a thumbs-down; default 1.
    pub thumbs_down: f64,
    /// Score of `implicit_usage` (value true); default none (ignored).
    pub implicit_usage: Option<f64>,
    /// Score of `implicit_edit` (value true); default none (ignored).
    pub implicit_edit: Option<f64>,
    /// Score of `implicit_discard` (value true); default none (ignored).
    pub implicit_discard: Option<f64>,
    /// A human score at or above this is "good"; default 4.
    pub good_min: f64,
    /// A human score at or below this is "bad"; default 2.
    pub bad_max: f64,
}

impl Default for HumanPolicy {
    fn default() -> Self {
        HumanPolicy {
            thumbs_up: 5.0,
            thumbs_down: 1.0,
            implicit_usage: None,
            implicit_edit: None,
            implicit_discard: None,
            good_min: 4.0,
            bad_max: 2.0,
        }
    }
}

/// A human verdict on a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Good,
    Neutral,
    Bad,
}

impl HumanPolicy {
    /// Checks that the scores are on the 1-5 scale and the thresholds are ordered.
    pub fn validate(&self) -> Result<(), String> {
        let on_scale = |name: &str, x: f64| {
            if (1.0..=5.0).contains(&x) { Ok(()) } else { Err(format!("human policy: {name} = {x} is outside 1-5")) }
        };
        on_scale("thumbs_up", self.thumbs_up)?;
        on_scale("thumbs_down", self.thumbs_down)?;
        for (name, v) in [
            ("implicit_usage", self.implicit_usage),
            ("implicit_edit", self.implicit_edit),
            ("implicit_discard", self.implicit_discard),
        ] {
            if let Some(x) = v {
                on_scale(name, x)?;
            }
        }
        if self.bad_max >= self.good_min {
            return Err(format!("human policy: bad_max ({}) must be below good_min ({})", self.bad_max, self.good_min));
        }
        Ok(())
    }

    /// The score one event contributes, if any.
    pub fn event_score(&self, t: FeedbackType, v: &FeedbackValue) -> Option<f64> {
        match (t, v) {
            (FeedbackType::ThumbsUp, _) => Some(self.thumbs_up),
            (FeedbackType::ThumbsDown, _) => Some(self.thumbs_down),
            (FeedbackType::Rating, FeedbackValue::Rating(r)) => Some(f64::from(*r)),
            (FeedbackType::Usage, FeedbackValue::Bool(true)) => self.implicit_usage,
            (FeedbackType::Edit, FeedbackValue::Bool(true)) => self.implicit_edit,
            (FeedbackType::Discard, FeedbackValue::Bool(true)) => self.implicit_discard,
            _ => None,
        }
    }

    /// The mean score over events that carry one; `None` when none does.
    pub fn human_score<'a>(&self, events: impl IntoIterator<Item = &'a FeedbackEvent>) -> Option<f64> {
        let (mut sum, mut n) = (0.0, 0usize);
        for e in events {
            if let Some(s) = self.event_score(e.feedback_type, &e.value) {
                sum += s;
                n += 1;
            }
        }
        (n > 0).then(|| sum / n as f64)
    }

    /// Good, neutral or bad by the thresholds.
    pub fn verdict(&self, human_score: f64) -> Verdict {
        if human_score >= self.good_min {
            Verdict::Good
        } else if human_score <= self.bad_max {
            Verdict::Bad
        } else {
            Verdict::Neutral
        }
    }
}

/// The feedback-loop article's `get_feedback_summary`, with `implicit_discard` reported too.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct FeedbackSummary {
    pub request_id: String,
    pub thumbs_up: u64,
    pub thumbs_down: u64,
    /// Mean of explicit ratings; `null` when there are none.
    pub avg_rating: Option<f64>,
    pub n_ratings: u64,
    pub comments: Vec<String>,
    /// `implicit_usage`, `implicit_edit`, `implicit_discard` -> the latest value seen.
    pub usage_indicators: std::collections::BTreeMap<String, bool>,
    /// The human score under the policy in force; `null` when no event carries one.
    pub human_score: Option<f64>,
    /// Whether the request's log has been ingested (feedback without a log is orphaned).
    pub log_present: bool,
}

impl FeedbackSummary {
    /// Aggregates a request's events (in time order) under a policy.
    pub fn from_events(request_id: &str, events: &[FeedbackEvent], policy: &HumanPolicy, log_present: bool) -> Self {
        let mut s = FeedbackSummary { request_id: request_id.to_string(), log_present, ..Default::default() };
        let mut ratings = Vec::new();
        for e in events {
            match (&e.feedback_type, &e.value) {
                (FeedbackType::ThumbsUp, _) => s.thumbs_up += 1,
                (FeedbackType::ThumbsDown, _) => s.thumbs_down += 1,
                (FeedbackType::Rating, FeedbackValue::Rating(r)) => ratings.push(f64::from(*r)),
                (FeedbackType::TextComment, FeedbackValue::Text(t)) => s.comments.push(t.clone()),
                (t, FeedbackValue::Bool(b)) if !t.is_explicit() => {
                    s.usage_indicators.insert(t.as_str().to_string(), *b);
                }
                _ => {}
            }
        }
        s.n_ratings = ratings.len() as u64;
        if !ratings.is_empty() {
            s.avg_rating = Some(ratings.iter().sum::<f64>() / ratings.len() as f64);
        }
        s.human_score = policy.human_score(events);
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;

    fn ev(t: FeedbackType, v: FeedbackValue) -> FeedbackEvent {
        FeedbackEvent {
            event_id: String::new(),
            request_id: "r".into(),
            feedback_type: t,
            value: v,
            user_id: None,
            timestamp: Utc::now(),
            dimension: None,
            other_request_id: None,
        }
    }

    #[test]
    fn thumbs_up_does_not_win_over_everything() {
        // The article's policy would call this 5; ours averages 5, 1 and 2.
        let events = [
            ev(FeedbackType::ThumbsUp, FeedbackValue::Bool(true)),
            ev(FeedbackType::ThumbsDown, FeedbackValue::Bool(true)),
            ev(FeedbackType::Rating, FeedbackValue::Rating(2)),
        ];
        let p = HumanPolicy::default();
        assert_eq!(p.human_score(&events), Some(8.0 / 3.0));
        assert_eq!(p.verdict(8.0 / 3.0), Verdict::Neutral);
    }

    #[test]
    fn implicit_signals_are_off_by_default_and_mappable() {
        let events = [ev(FeedbackType::Discard, FeedbackValue::Bool(true))];
        assert_eq!(HumanPolicy::default().human_score(&events), None);
        let p = HumanPolicy { implicit_discard: Some(2.0), ..Default::default() };
        assert_eq!(p.human_score(&events), Some(2.0));
        assert_eq!(p.verdict(2.0), Verdict::Bad);
    }

    #[test]
    fn summary_reports_discard() {
        let events = [
            ev(FeedbackType::Discard, FeedbackValue::Bool(true)),
            ev(FeedbackType::Rating, FeedbackValue::Rating(4)),
            ev(FeedbackType::TextComment, FeedbackValue::Text("meh".into())),
        ];
        let s = FeedbackSummary::from_events("r", &events, &HumanPolicy::default(), true);
        assert_eq!(s.usage_indicators.get("implicit_discard"), Some(&true));
        assert_eq!(s.avg_rating, Some(4.0));
        assert_eq!(s.comments, vec!["meh".to_string()]);
    }
}
