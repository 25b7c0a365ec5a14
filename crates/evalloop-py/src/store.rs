//! `Store`: a SQLite file or PostgreSQL database opened as the command line opens it, its
//! logs, feedback and human scores as Arrow tables, and the analysis commands over it.

use std::path::PathBuf;
use std::sync::Arc;

use arrow_array::{ArrayRef, BooleanArray, Float64Array, StringArray, TimestampMicrosecondArray, UInt64Array};
use evalloop_core::analysis::{self, Scope};
use evalloop_core::config::Settings;
use evalloop_core::feedback::HumanPolicy;
use evalloop_core::store::{Filter, ScoredQuery};
use pyo3::prelude::*;

use crate::arrow::ArrowStream;
use crate::{from_py, input_err, py_err, to_py};

/// The most bootstrap resamples an analysis takes (the command line's limit).
const MAX_BOOTSTRAP: usize = 100_000;

/// The most reliability bins of `calibration` (the command line's limit).
const MAX_BINS: usize = 10_000;

/// Request ids read per query when texts or feedback are fetched.
const CHUNK: usize = 4096;

/// An open store with the settings of its config file (the `[human]` policy, `[dataset]`, ...).
#[pyclass(module = "evalloop._evalloop", unsendable)]
pub struct Store {
    store: Box<dyn evalloop_core::store::Store>,
    settings: Settings,
}

/// A choice of a clap value enum, spelled as on the command line (`use-case`) or with `_` and
/// `-` swapped (`use_case`).
fn choice<T: clap::ValueEnum>(option: &str, v: &str) -> PyResult<T> {
    let spellings = [v.to_string(), v.replace('_', "-"), v.replace('-', "_")];
    spellings.iter().find_map(|s| T::from_str(s, true).ok()).ok_or_else(|| {
        let known: Vec<String> = T::value_variants()
            .iter()
            .filter_map(|x| x.to_possible_value())
            .map(|p| p.get_name().to_string())
            .collect();
        input_err(format!("{option}={v:?}: expected one of {}", known.join(", ")))
    })
}

fn check_bootstrap(n: usize) -> PyResult<()> {
    if n > MAX_BOOTSTRAP {
        return Err(input_err(format!("bootstrap={n}: at most {MAX_BOOTSTRAP} resamples")));
    }
    Ok(())
}

fn check_range(option: &str, v: f64, lo: f64, hi: f64) -> PyResult<()> {
    if !(v.is_finite() && (lo..=hi).contains(&v)) {
        return Err(input_err(format!("{option}={v}: expected a number within [{lo}, {hi}]")));
    }
    Ok(())
}

fn strings(v: Vec<Option<String>>) -> ArrayRef {
    Arc::new(StringArray::from(v))
}

fn floats(v: Vec<Option<f64>>) -> ArrayRef {
    Arc::new(Float64Array::from(v))
}

fn times(v: Vec<i64>) -> ArrayRef {
    Arc::new(TimestampMicrosecondArray::from(v).with_timezone("UTC"))
}

impl Store {
    /// The tables' window: [`Store::filter`] with the evaluator resolved (the store's only one
    /// unless named), as the analyses resolve it.
    fn table_filter(
        &self,
        since: Option<&str>,
        until: Option<&str>,
        evaluator: Option<String>,
        cohort: Option<String>,
    ) -> PyResult<Filter> {
        let filter = Self::filter(since, until, evaluator, cohort)?;
        analysis::resolve_evaluator(self.store.as_ref(), &filter).map_err(py_err)
    }

    /// The analyses' window: `since`/`until` (RFC 3339 or `YYYY-MM-DD`), evaluator, cohort.
    fn filter(
        since: Option<&str>,
        until: Option<&str>,
        evaluator: Option<String>,
        cohort: Option<String>,
    ) -> PyResult<Filter> {
        let date = |option: &str, v: Option<&str>| -> PyResult<Option<chrono::DateTime<chrono::Utc>>> {
            v.map(|s| {
                evalloop_core::record::parse_date_arg(s).map_err(|e| input_err(format!("{option}={s:?}: {}", e.reason)))
            })
            .transpose()
        };
        Ok(Filter {
            since: date("since", since)?,
            until: date("until", until)?,
            evaluator,
            cohort,
            metadata: Vec::new(),
        })
    }

    fn scope(&self, filter: Filter) -> Scope {
        Scope { filter, policy: self.settings.policy.clone() }
    }
}

#[pymethods]
impl Store {
    /// Opens a SQLite file (created if missing) or a `postgres://` URL, as `--db` does;
    /// `config` is a TOML config file, as `--config` is (its `[human]` policy applies).
    #[staticmethod]
    #[pyo3(signature = (path_or_url, config=None))]
    fn open(path_or_url: String, config: Option<PathBuf>) -> PyResult<Store> {
        let settings = Settings::resolve(config.as_deref(), Some(path_or_url)).map_err(py_err)?;
        let store = evalloop_core::store::open(&settings.db).map_err(py_err)?;
        Ok(Store { store, settings })
    }

    /// Where the store is (its file or URL without the password).
    #[getter]
    fn location(&self) -> String {
        self.store.location()
    }

    /// `sqlite` or `postgres`.
    #[getter]
    fn backend(&self) -> &'static str {
        self.store.backend()
    }

    /// The config file the store was opened with.
    #[getter]
    fn config(&self) -> Option<PathBuf> {
        self.settings.config_path.clone()
    }

    fn __repr__(&self) -> String {
        format!("Store({:?})", self.store.location())
    }

    /// `evalloop ingest logs|feedback|scores FILE --json`: validated, transactional ingest of a
    /// JSON Lines or CSV file; rejected rows go to `rejects` (default FILE.rejects.jsonl), or
    /// with `strict` the first one is an error naming its file, line and field.
    #[pyo3(signature = (what, file, *, strict=false, rejects=None, batch_size=10_000, format=None, group_key=None))]
    #[allow(clippy::too_many_arguments)]
    fn ingest<'py>(
        &mut self,
        py: Python<'py>,
        what: &str,
        file: String,
        strict: bool,
        rejects: Option<PathBuf>,
        batch_size: usize,
        format: Option<&str>,
        group_key: Option<String>,
    ) -> PyResult<Bound<'py, PyAny>> {
        use evalloop_core::ingest::{self, Format, IngestOptions, Kind};
        let kind = match what {
            "logs" => Kind::Logs,
            "feedback" => Kind::Feedback,
            "scores" => Kind::Scores,
            _ => return Err(input_err(format!("what={what:?}: expected logs, feedback or scores"))),
        };
        let format = match format {
            None => None,
            Some("jsonl") => Some(Format::Jsonl),
            Some("csv") => Some(Format::Csv),
            Some(f) => return Err(input_err(format!("format={f:?}: expected jsonl or csv"))),
        };
        let opts = IngestOptions {
            strict,
            batch_size,
            rejects,
            format,
            max_line_bytes: evalloop_core::lines::DEFAULT_MAX_LINE_BYTES,
            group_key,
        };
        let s = ingest::ingest(self.store.as_mut(), kind, &file, &opts).map_err(py_err)?;
        to_py(py, &s)
    }

    /// The evaluators with scores in the store.
    fn evaluators(&self) -> PyResult<Vec<String>> {
        self.store.evaluators().map_err(|e| py_err(e.into()))
    }

    /// Counts of logs, feedback by type, cohorts, evaluators and the time range
    /// (`evalloop stats --json`).
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let s = self.store.stats().map_err(|e| py_err(e.into()))?;
        to_py(py, &s)
    }

    /// The logged requests with the evaluator's score (the store's only evaluator unless
    /// `evaluator` names one), in the window, as an Arrow stream.
    #[pyo3(signature = (*, since=None, until=None, evaluator=None, cohort=None))]
    fn logs(
        &self,
        since: Option<&str>,
        until: Option<&str>,
        evaluator: Option<String>,
        cohort: Option<String>,
    ) -> PyResult<ArrowStream> {
        let filter = self.table_filter(since, until, evaluator, cohort)?;
        let rows = self.store.evaluated_requests(&filter).map_err(|e| py_err(e.into()))?;
        let ids: Vec<String> = rows.iter().map(|r| r.request_id.clone()).collect();
        let mut texts = std::collections::HashMap::with_capacity(ids.len());
        for chunk in ids.chunks(CHUNK) {
            texts.extend(self.store.request_texts(chunk).map_err(|e| py_err(e.into()))?);
        }
        let text = |id: &str, f: fn(&evalloop_core::store::RequestText) -> &String| texts.get(id).map(|t| f(t).clone());
        let evaluator = filter.evaluator.clone();
        ArrowStream::new(vec![
            ("request_id", false, strings(ids.iter().cloned().map(Some).collect())),
            ("timestamp", false, times(rows.iter().map(|r| r.timestamp_us).collect())),
            ("evaluator", false, strings(rows.iter().map(|_| evaluator.clone()).collect())),
            ("eval_score", false, floats(rows.iter().map(|r| Some(r.eval_score)).collect())),
            ("cohort", true, strings(rows.iter().map(|r| r.cohort.clone()).collect())),
            ("use_case", true, strings(rows.iter().map(|r| r.use_case.clone()).collect())),
            ("prompt_version", true, strings(rows.iter().map(|r| r.prompt_version.clone()).collect())),
            ("prompt", true, strings(ids.iter().map(|id| text(id, |t| &t.prompt)).collect())),
            ("output", true, strings(ids.iter().map(|id| text(id, |t| &t.output)).collect())),
            ("metadata", true, strings(ids.iter().map(|id| text(id, |t| &t.metadata)).collect())),
        ])
    }

    /// Every feedback event on the window's requests (those the evaluator scored), as an Arrow
    /// stream: `value` holds thumbs and implicit signals as 1/0 and ratings as 1-5, `text` the
    /// comments and preferences' choices.
    #[pyo3(signature = (*, since=None, until=None, evaluator=None, cohort=None))]
    fn feedback(
        &self,
        since: Option<&str>,
        until: Option<&str>,
        evaluator: Option<String>,
        cohort: Option<String>,
    ) -> PyResult<ArrowStream> {
        let filter = self.table_filter(since, until, evaluator, cohort)?;
        let ids = self.store.request_ids(&filter).map_err(|e| py_err(e.into()))?;
        let mut events = Vec::new();
        for id in &ids {
            events.extend(self.store.feedback_for(id).map_err(|e| py_err(e.into()))?);
        }
        use evalloop_core::record::FeedbackValue;
        let text_of = |v: &FeedbackValue| match v {
            FeedbackValue::Text(s) => Some(s.clone()),
            FeedbackValue::Choice(c) => Some(c.as_str().to_string()),
            FeedbackValue::Bool(_) | FeedbackValue::Rating(_) => None,
        };
        ArrowStream::new(vec![
            ("event_id", false, strings(events.iter().map(|e| Some(e.event_id.clone())).collect())),
            ("request_id", false, strings(events.iter().map(|e| Some(e.request_id.clone())).collect())),
            (
                "feedback_type",
                false,
                strings(events.iter().map(|e| Some(e.feedback_type.as_str().to_string())).collect()),
            ),
            ("value", true, floats(events.iter().map(|e| e.value.as_number()).collect())),
            ("text", true, strings(events.iter().map(|e| text_of(&e.value)).collect())),
            ("user_id", true, strings(events.iter().map(|e| e.user_id.clone()).collect())),
            ("timestamp", false, times(events.iter().map(|e| e.timestamp.timestamp_micros()).collect())),
            ("dimension", true, strings(events.iter().map(|e| e.dimension.clone()).collect())),
            ("other_request_id", true, strings(events.iter().map(|e| e.other_request_id.clone()).collect())),
            ("edited_output", true, strings(events.iter().map(|e| e.edited_output.clone()).collect())),
        ])
    }

    /// Every request with an evaluator score and a human score under `policy` (a dict of
    /// `[human]` keys; default the config's), in the window, as an Arrow stream.
    #[pyo3(signature = (*, policy=None, since=None, until=None, evaluator=None, cohort=None, group_key=None))]
    #[allow(clippy::too_many_arguments)]
    fn human_scores(
        &self,
        policy: Option<Bound<'_, PyAny>>,
        since: Option<&str>,
        until: Option<&str>,
        evaluator: Option<String>,
        cohort: Option<String>,
        group_key: Option<String>,
    ) -> PyResult<ArrowStream> {
        let policy: HumanPolicy = match policy {
            None => self.settings.policy.clone(),
            Some(p) => from_py("policy", &p)?,
        };
        policy.validate().map_err(|e| input_err(format!("policy: {e}")))?;
        let filter = self.table_filter(since, until, evaluator, cohort)?;
        let good_min = policy.good_min;
        let rows = self
            .store
            .scored_requests(&ScoredQuery { filter, policy, group_key, with_text: false, limit: None })
            .map_err(|e| py_err(e.into()))?;
        ArrowStream::new(vec![
            ("request_id", false, strings(rows.iter().map(|r| Some(r.request_id.clone())).collect())),
            ("timestamp", false, times(rows.iter().map(|r| r.timestamp_us).collect())),
            ("evaluator", false, strings(rows.iter().map(|r| Some(r.evaluator.clone())).collect())),
            ("eval_score", false, floats(rows.iter().map(|r| Some(r.eval_score)).collect())),
            ("human_score", false, floats(rows.iter().map(|r| Some(r.human_score)).collect())),
            ("n_scored_events", false, Arc::new(UInt64Array::from_iter_values(rows.iter().map(|r| r.n_scored_events)))),
            ("cohort", true, strings(rows.iter().map(|r| r.cohort.clone()).collect())),
            ("use_case", true, strings(rows.iter().map(|r| r.use_case.clone()).collect())),
            ("group", true, strings(rows.iter().map(|r| r.group.clone()).collect())),
            ("is_good", false, Arc::new(BooleanArray::from_iter(rows.iter().map(|r| Some(r.human_score >= good_min))))),
        ])
    }

    /// `evalloop correlate --json`: Pearson, Spearman, Kendall tau-b with p-values and CIs.
    #[pyo3(signature = (*, by=None, bootstrap=0, seed=7, group_key=None, since=None, until=None, evaluator=None, cohort=None))]
    #[allow(clippy::too_many_arguments)]
    fn correlate<'py>(
        &self,
        py: Python<'py>,
        by: Option<&str>,
        bootstrap: usize,
        seed: u64,
        group_key: Option<String>,
        since: Option<&str>,
        until: Option<&str>,
        evaluator: Option<String>,
        cohort: Option<String>,
    ) -> PyResult<Bound<'py, PyAny>> {
        check_bootstrap(bootstrap)?;
        let by = by.map(|b| choice::<analysis::GroupBy>("by", b)).transpose()?;
        let opts = analysis::CorrelateOptions { by, bootstrap, seed, group_key };
        let scope = self.scope(Self::filter(since, until, evaluator, cohort)?);
        let r = analysis::correlate(self.store.as_ref(), &scope, &opts).map_err(py_err)?;
        to_py(py, &r)
    }

    /// `evalloop calibration --json`: ECE, Brier, ROC AUC, threshold metrics, reliability table.
    #[pyo3(signature = (*, bins=10, threshold=0.7, since=None, until=None, evaluator=None, cohort=None))]
    #[allow(clippy::too_many_arguments)]
    fn calibration<'py>(
        &self,
        py: Python<'py>,
        bins: usize,
        threshold: f64,
        since: Option<&str>,
        until: Option<&str>,
        evaluator: Option<String>,
        cohort: Option<String>,
    ) -> PyResult<Bound<'py, PyAny>> {
        if bins == 0 || bins > MAX_BINS || !(0.0..=1.0).contains(&threshold) {
            return Err(input_err(format!("bins must be 1 to {MAX_BINS} and threshold within [0, 1]")));
        }
        let opts = analysis::CalibrationOptions { bins, threshold };
        let scope = self.scope(Self::filter(since, until, evaluator, cohort)?);
        let r = analysis::calibration(self.store.as_ref(), &scope, &opts).map_err(py_err)?;
        to_py(py, &r)
    }

    /// `evalloop disagreements --json`: requests where the evaluator and people disagree;
    /// `export` writes every one (with prompt and output) to a JSON Lines file.
    #[pyo3(signature = (*, threshold=0.7, limit=20, export=None, since=None, until=None, evaluator=None, cohort=None))]
    #[allow(clippy::too_many_arguments)]
    fn disagreements<'py>(
        &self,
        py: Python<'py>,
        threshold: f64,
        limit: usize,
        export: Option<PathBuf>,
        since: Option<&str>,
        until: Option<&str>,
        evaluator: Option<String>,
        cohort: Option<String>,
    ) -> PyResult<Bound<'py, PyAny>> {
        check_range("threshold", threshold, 0.0, 1.0)?;
        let scope = self.scope(Self::filter(since, until, evaluator, cohort)?);
        let r = analysis::disagreements(self.store.as_ref(), &scope, threshold, limit, export.as_deref())
            .map_err(py_err)?;
        to_py(py, &r)
    }

    /// `evalloop bias --json`: feedback rate per cohort, share positive, under-represented
    /// cohorts, and the labels that came from annotation queues.
    #[pyo3(signature = (*, low_factor=0.5, since=None, until=None, evaluator=None, cohort=None))]
    fn bias<'py>(
        &self,
        py: Python<'py>,
        low_factor: f64,
        since: Option<&str>,
        until: Option<&str>,
        evaluator: Option<String>,
        cohort: Option<String>,
    ) -> PyResult<Bound<'py, PyAny>> {
        check_range("low_factor", low_factor, 0.0, 1.0e6)?;
        let scope = self.scope(Self::filter(since, until, evaluator, cohort)?);
        let r = analysis::bias(self.store.as_ref(), &scope, low_factor).map_err(py_err)?;
        let from_queues = evalloop_core::queue::provenance(self.store.as_ref()).map_err(py_err)?;
        let mut json = serde_json::to_value(&r).map_err(|e| input_err(e.to_string()))?;
        json["from_queues"] = serde_json::to_value(&from_queues).map_err(|e| input_err(e.to_string()))?;
        to_py(py, &json)
    }

    /// `evalloop agreement --json`: Krippendorff's alpha, Cohen's kappa and percent agreement
    /// between people.
    #[pyo3(signature = (*, level="auto", bootstrap=1000, seed=7, dimension=None, by=None, since=None, until=None, evaluator=None, cohort=None))]
    #[allow(clippy::too_many_arguments)]
    fn agreement<'py>(
        &self,
        py: Python<'py>,
        level: &str,
        bootstrap: usize,
        seed: u64,
        dimension: Option<String>,
        by: Option<&str>,
        since: Option<&str>,
        until: Option<&str>,
        evaluator: Option<String>,
        cohort: Option<String>,
    ) -> PyResult<Bound<'py, PyAny>> {
        check_bootstrap(bootstrap)?;
        if let Some(d) = &dimension
            && !evalloop_core::record::is_dimension_name(d)
        {
            return Err(input_err(format!("dimension={d:?} is not a dimension name ([a-z0-9_]+)")));
        }
        let opts = analysis::RaterAgreementOptions {
            level: choice("level", level)?,
            bootstrap,
            seed,
            dimension,
            by: by.map(|b| choice("by", b)).transpose()?,
        };
        let scope = self.scope(Self::filter(since, until, evaluator, cohort)?);
        let r = analysis::rater_agreement(self.store.as_ref(), &scope, &opts).map_err(py_err)?;
        to_py(py, &r)
    }

    /// `evalloop estimate --json`: the mean human score or pass rate, classical and
    /// prediction-powered (PPI++), stratified by cohort.
    #[pyo3(signature = (*, metric="mean_human_score", by=None, level=0.95, normal_interval=false, since=None, until=None, evaluator=None, cohort=None))]
    #[allow(clippy::too_many_arguments)]
    fn estimate<'py>(
        &self,
        py: Python<'py>,
        metric: &str,
        by: Option<&str>,
        level: f64,
        normal_interval: bool,
        since: Option<&str>,
        until: Option<&str>,
        evaluator: Option<String>,
        cohort: Option<String>,
    ) -> PyResult<Bound<'py, PyAny>> {
        use evalloop_core::stats::ppi::IntervalKind;
        let opts = evalloop_core::estimate::EstimateOptions {
            metric: choice("metric", metric)?,
            by: by.map(|b| choice("by", b)).transpose()?,
            level,
            interval: if normal_interval { IntervalKind::Normal } else { IntervalKind::SmallSample },
        };
        let scope = self.scope(Self::filter(since, until, evaluator, cohort)?);
        let r = evalloop_core::estimate::estimate(self.store.as_ref(), &scope, &opts).map_err(py_err)?;
        to_py(py, &r)
    }

    /// `evalloop impact --json`: before/after on evaluator and human scores. Give exactly one
    /// of `before` and `after` (dates), `baseline_evaluator` and `candidate`, or `metadata`
    /// (`KEY=BEFORE:AFTER`).
    #[pyo3(signature = (*, before=None, after=None, baseline_evaluator=None, candidate=None, metadata=None, alpha=0.05, bootstrap=2000, seed=7, since=None, until=None, evaluator=None, cohort=None))]
    #[allow(clippy::too_many_arguments)]
    fn impact<'py>(
        &self,
        py: Python<'py>,
        before: Option<&str>,
        after: Option<&str>,
        baseline_evaluator: Option<&str>,
        candidate: Option<&str>,
        metadata: Option<&str>,
        alpha: f64,
        bootstrap: usize,
        seed: u64,
        since: Option<&str>,
        until: Option<&str>,
        evaluator: Option<String>,
        cohort: Option<String>,
    ) -> PyResult<Bound<'py, PyAny>> {
        check_bootstrap(bootstrap)?;
        let split = analysis::ImpactSplit::from_options(before, after, baseline_evaluator, candidate, metadata)
            .map_err(py_err)?;
        if !(0.0..1.0).contains(&alpha) || alpha == 0.0 {
            return Err(input_err(format!("alpha={alpha} must be in (0, 1)")));
        }
        let scope = self.scope(Self::filter(since, until, evaluator, cohort)?);
        let r = analysis::impact(self.store.as_ref(), &scope, &split, alpha, bootstrap, seed).map_err(py_err)?;
        to_py(py, &r)
    }
}

impl Store {
    /// The store and its settings, for `dataset.build`.
    pub(crate) fn parts(&self) -> (&dyn evalloop_core::store::Store, &Settings) {
        (self.store.as_ref(), &self.settings)
    }
}
