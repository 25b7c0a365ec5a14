//! `evalloop impact`: before/after comparison of a change.

use super::{FilterArgs, Outcome, render, scope, to_json};
use crate::analysis;
use crate::config::Settings;
use crate::record::parse_date_arg;
use crate::store;
use crate::{Error, Result};

#[derive(Debug, clap::Args)]
pub struct ImpactArgs {
    #[command(flatten)]
    pub filter: FilterArgs,
    /// Baseline: requests before this date (with --after).
    #[arg(long, requires = "after")]
    pub before: Option<String>,
    /// Treatment: requests at or after this date (with --before).
    #[arg(long, requires = "before")]
    pub after: Option<String>,
    /// Compare two evaluators on the same requests (with --candidate).
    #[arg(long, requires = "candidate")]
    pub baseline_evaluator: Option<String>,
    #[arg(long, requires = "baseline_evaluator")]
    pub candidate: Option<String>,
    /// KEY=BEFORE:AFTER, e.g. prompt_version=v3:v4.
    #[arg(long)]
    pub metadata: Option<String>,
    /// Significance level.
    #[arg(long, default_value_t = 0.05)]
    pub alpha: f64,
    /// Bootstrap resamples for the interval of the difference.
    #[arg(long, default_value_t = 2000)]
    pub bootstrap: usize,
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
}

/// Compares the two sides the flags name.
pub fn run(settings: &Settings, a: ImpactArgs) -> Result<Outcome> {
    super::check_bootstrap(a.bootstrap)?;
    let date = |flag: &str, v: &str| parse_date_arg(v).map_err(|e| Error::Input(format!("--{flag}: {}", e.reason)));
    let split = match (&a.before, &a.after, &a.baseline_evaluator, &a.candidate, &a.metadata) {
        (Some(b), Some(f), None, None, None) => {
            let (before, after) = (date("before", b)?, date("after", f)?);
            // Baseline is before --before, treatment at or after --after: a request between an
            // earlier --after and --before would count on both sides.
            if after < before {
                return Err(Error::Input(format!(
                    "--after {f} is earlier than --before {b}: the windows would overlap; give --after at or \
                     after --before"
                )));
            }
            analysis::ImpactSplit::Dates { before, after }
        }
        (None, None, Some(b), Some(c), None) => {
            analysis::ImpactSplit::Evaluators { baseline: b.clone(), candidate: c.clone() }
        }
        (None, None, None, None, Some(m)) => {
            let bad =
                || Error::Input(format!("--metadata {m:?}: expected KEY=BEFORE:AFTER, e.g. prompt_version=v3:v4"));
            let (key, vals) = m.split_once('=').ok_or_else(bad)?;
            let (before, after) = vals.split_once(':').ok_or_else(bad)?;
            if key.is_empty() || before.is_empty() || after.is_empty() {
                return Err(bad());
            }
            analysis::ImpactSplit::Metadata { key: key.into(), before: before.into(), after: after.into() }
        }
        _ => {
            return Err(Error::Input(
                "impact: give exactly one of --before/--after, --baseline-evaluator/--candidate, or --metadata".into(),
            ));
        }
    };
    if !(0.0..1.0).contains(&a.alpha) || a.alpha == 0.0 {
        return Err(Error::Input(format!("--alpha {} must be in (0, 1)", a.alpha)));
    }
    let store = store::open(&settings.db)?;
    let r = analysis::impact(store.as_ref(), &scope(settings, &a.filter)?, &split, a.alpha, a.bootstrap, a.seed)?;
    Ok(Outcome::ok(render::impact(&r), to_json(&r)))
}
