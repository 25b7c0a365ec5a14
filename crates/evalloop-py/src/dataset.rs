//! `dataset.build`: `evalloop dataset build` with the weighting named, or given as a Python
//! function of the labelled rows (an Arrow table) that returns one weight per row.

use std::cell::RefCell;
use std::path::PathBuf;
use std::sync::Arc;

use arrow_array::{BooleanArray, Float64Array, StringArray, UInt64Array};
use evalloop_core::config::Settings;
use evalloop_core::dataset::{CustomWeighting, DatasetConfig, Scheme, WeightInput};
use evalloop_core::store::Filter;
use pyo3::prelude::*;

use crate::arrow::ArrowStream;
use crate::store::Store;
use crate::{from_py, input_err, py_err, to_py};

/// The rows a weighting function receives.
fn weight_table(rows: &[WeightInput]) -> PyResult<ArrowStream> {
    let s = |f: fn(&WeightInput) -> &str| Arc::new(StringArray::from_iter_values(rows.iter().map(f)));
    let x = |f: fn(&WeightInput) -> f64| Arc::new(Float64Array::from_iter_values(rows.iter().map(f)));
    let n = |f: fn(&WeightInput) -> u64| Arc::new(UInt64Array::from_iter_values(rows.iter().map(f)));
    ArrowStream::new(vec![
        ("request_id", false, s(|r| &r.request_id)),
        ("cohort", false, s(|r| &r.cohort)),
        ("group", false, s(|r| &r.group)),
        ("class", false, s(|r| r.class)),
        ("label", false, x(|r| r.label)),
        ("human_score", false, x(|r| r.human_score)),
        ("eval_score", false, x(|r| r.eval_score)),
        ("is_disagreement", false, Arc::new(BooleanArray::from_iter(rows.iter().map(|r| Some(r.is_disagreement))))),
        ("cohort_requests", false, n(|r| r.cohort_requests)),
        ("cohort_counted", false, n(|r| r.cohort_counted)),
        ("cohort_rate", false, x(|r| r.cohort_rate)),
        ("scheme_weight", false, x(|r| r.scheme_weight)),
    ])
}

/// Builds the dataset into `out` and returns its card (`evalloop dataset build --json`).
///
/// The `[dataset]` section comes from `section` (a dict), else from the TOML file `config`
/// (whose `[human]` policy then applies too), else from the store's config. `schemes`
/// replaces its `weighting`; `weighting`, a function called with the labelled rows (an
/// `ArrowStream`) that returns a list of floats, replaces the schemes' weights.
#[pyfunction]
#[pyo3(signature = (store, out, *, config=None, section=None, schemes=None, weighting=None, weighting_name=None))]
#[allow(clippy::too_many_arguments)]
pub fn build_dataset<'py>(
    py: Python<'py>,
    store: PyRef<'py, Store>,
    out: PathBuf,
    config: Option<PathBuf>,
    section: Option<Bound<'py, PyAny>>,
    schemes: Option<Vec<String>>,
    weighting: Option<Bound<'py, PyAny>>,
    weighting_name: Option<String>,
) -> PyResult<Bound<'py, PyAny>> {
    let (db, store_settings) = store.parts();
    let file_settings;
    let settings: &Settings = match &config {
        Some(path) => {
            file_settings = Settings::resolve(Some(path), Some(store_settings.db.clone())).map_err(py_err)?;
            &file_settings
        }
        None => store_settings,
    };
    let mut cfg: DatasetConfig = match &section {
        Some(s) => from_py("config", s)?,
        None => settings.section("dataset", &settings.config.dataset).map_err(py_err)?,
    };
    if let Some(names) = schemes {
        cfg.weighting = names
            .iter()
            .map(|n| {
                serde_json::from_value::<Scheme>(serde_json::Value::String(n.clone()))
                    .map_err(|e| input_err(format!("weighting={n:?}: {e}")))
            })
            .collect::<PyResult<Vec<Scheme>>>()?;
    }
    // An exception raised by the function, kept to be raised as it is (with its traceback).
    let raised: RefCell<Option<PyErr>> = RefCell::new(None);
    let name = weighting_name.unwrap_or_else(|| "custom".to_string());
    let mut call = |rows: &[WeightInput]| -> evalloop_core::Result<Vec<f64>> {
        let Some(f) = &weighting else { return Ok(Vec::new()) };
        let result = weight_table(rows).and_then(|t| f.call1((t,))).and_then(|w| w.extract::<Vec<f64>>());
        result.map_err(|e| {
            let msg = format!("weighting {name}: {e}");
            *raised.borrow_mut() = Some(e);
            evalloop_core::Error::Input(msg)
        })
    };
    let mut custom = CustomWeighting { name: name.clone(), weights: &mut call };
    let built = evalloop_core::dataset::build_with(
        db,
        &Filter::default(),
        &settings.policy,
        &cfg,
        &out,
        weighting.is_some().then_some(&mut custom),
    );
    match built {
        Ok(b) => to_py(py, &b.card),
        Err(e) => Err(raised.borrow_mut().take().unwrap_or_else(|| py_err(e))),
    }
}
