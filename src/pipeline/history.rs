//! The report's time series: the base evaluator's agreement and the mean human score by ISO
//! week over the whole store (`evalloop trend`), with the promotions of earlier runs.

use crate::Result;
use crate::analysis::Scope;
use crate::config::Settings;
use crate::record::parse_date_arg;
use crate::report::{History, HistoryPoint, Promotion};
use crate::store::{Filter, Store};
use crate::trend::{self, Every, TrendOptions, window_of};

/// [`History`] of `evaluator` over every request in the store.
pub(super) fn history(store: &dyn Store, settings: &Settings, evaluator: &str) -> Result<History> {
    let scope = Scope {
        filter: Filter { evaluator: Some(evaluator.to_string()), ..Default::default() },
        policy: settings.policy.clone(),
    };
    let t = trend::trend(store, &scope, &TrendOptions { every: Every::Week, ..Default::default() })?;
    let points = t
        .series
        .into_iter()
        .flat_map(|s| s.windows)
        .map(|w| HistoryPoint {
            week: w.window,
            requests: w.requests,
            labelled: w.labelled,
            agreement: w.agreement,
            agreement_ci: w.agreement_ci,
            human_score: w.human_score.map(|h| h.estimate),
            human_score_ci: w.human_score.map(|h| [h.lower, h.upper]),
        })
        .collect();
    let promotions = store
        .runs()?
        .into_iter()
        .filter(|r| r.decision.as_deref() == Some("promoted"))
        .filter_map(|r| {
            let at = parse_date_arg(&r.started_at).ok()?;
            Some(Promotion { week: window_of(at.timestamp_micros(), Every::Week), run_id: r.id })
        })
        .rev()
        .collect();
    Ok(History { evaluator: evaluator.to_string(), points, promotions })
}
