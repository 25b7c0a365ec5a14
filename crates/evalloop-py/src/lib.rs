//! The Python module `evalloop._evalloop`: stores, analyses, datasets and scoring of
//! evalloop-core and evalloop-model, with errors as `EvalloopError` and tables as Arrow.
//!
//! Each function calls the same library function as the command of the same name, and turns
//! the same serde value into Python objects (through JSON text, so every figure is the one
//! `evalloop <command> --json` prints). The Python package (`python/evalloop/`) wraps this
//! module: it turns the Arrow streams into pyarrow tables and the scores into numpy arrays.

mod arrow;
mod dataset;
mod scorer;
mod store;

use std::path::PathBuf;

use pyo3::create_exception;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

create_exception!(
    evalloop,
    EvalloopError,
    PyValueError,
    "An error of evalloop: bad input (naming the file, line and field, or the option), or a store \
     or file that could not be read or written. The message is the command line's."
);

/// An evalloop error as the Python exception, with the message the command line prints after
/// `error: ` (each message already names its cause).
pub(crate) fn py_err(e: evalloop_core::Error) -> PyErr {
    EvalloopError::new_err(e.to_string())
}

/// A bad argument, as `EvalloopError`.
pub(crate) fn input_err(msg: impl Into<String>) -> PyErr {
    EvalloopError::new_err(msg.into())
}

/// A serde value as Python objects (dicts, lists, floats, ints, strings, None), through its
/// JSON text: the same text `--json` prints, read back by Python's `json`.
pub(crate) fn to_py<'py, T: serde::Serialize>(py: Python<'py>, v: &T) -> PyResult<Bound<'py, PyAny>> {
    let text = serde_json::to_string(v).map_err(|e| input_err(format!("serialising the result: {e}")))?;
    py.import("json")?.call_method1("loads", (text,))
}

/// Python objects (a dict of options) as a serde value, through JSON text.
pub(crate) fn from_py<T: serde::de::DeserializeOwned>(what: &str, v: &Bound<'_, PyAny>) -> PyResult<T> {
    let text: String = v.py().import("json")?.call_method1("dumps", (v,))?.extract()?;
    serde_json::from_str(&text).map_err(|e| input_err(format!("{what}: {e}")))
}

/// Writes realistic logs, biased feedback and ground truth from a human-judgement file into
/// `out`, as `evalloop simulate` does; returns its `--json` summary.
#[pyfunction]
#[pyo3(signature = (judgements, dimension, out, *, config=None, seed=None, holdout_groups=None, dimensions=None))]
#[allow(clippy::too_many_arguments)]
fn simulate<'py>(
    py: Python<'py>,
    judgements: PathBuf,
    dimension: String,
    out: PathBuf,
    config: Option<PathBuf>,
    seed: Option<u64>,
    holdout_groups: Option<usize>,
    dimensions: Option<Vec<String>>,
) -> PyResult<Bound<'py, PyAny>> {
    let settings = evalloop_core::config::Settings::resolve(config.as_deref(), Some(String::new())).map_err(py_err)?;
    let mut cfg: evalloop_core::simulate::SimulateConfig =
        settings.section("simulate", &settings.config.simulate).map_err(py_err)?;
    if let Some(s) = seed {
        cfg.seed = s;
    }
    if let Some(n) = holdout_groups {
        cfg.holdout_groups = n;
    }
    if let Some(d) = dimensions {
        cfg.dimensions = d;
    }
    let s = evalloop_core::simulate::simulate(&judgements, &dimension, &out, &cfg).map_err(py_err)?;
    to_py(py, &s)
}

/// The module.
#[pymodule]
fn _evalloop(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("EvalloopError", m.py().get_type::<EvalloopError>())?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_class::<store::Store>()?;
    m.add_class::<arrow::ArrowStream>()?;
    m.add_class::<scorer::Scorer>()?;
    m.add_function(wrap_pyfunction!(simulate, m)?)?;
    m.add_function(wrap_pyfunction!(dataset::build_dataset, m)?)?;
    Ok(())
}
