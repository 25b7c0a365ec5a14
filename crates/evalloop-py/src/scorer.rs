//! `Scorer`: a trained evaluator (a model or ensemble directory) scoring prompt/output pairs
//! with the interpreter released, as `evalloop score --input` does.

use std::path::PathBuf;

use pyo3::prelude::*;

use crate::{input_err, py_err};

/// A loaded evaluator model.
#[pyclass(module = "evalloop._evalloop", frozen)]
pub struct Scorer {
    scorer: evalloop_model::score::Scorer,
}

#[pymethods]
impl Scorer {
    /// Loads a model directory written by `evalloop train` (or an ensemble directory) on
    /// `device` (`cpu`, `cuda`, `cuda:N`, `auto`), scoring `batch_size` pairs per forward pass
    /// with the linear layers in `precision` (`fp32`, or `int8` on the CPU: `evalloop score
    /// --precision`).
    #[staticmethod]
    #[pyo3(signature = (model_dir, *, device="cpu", batch_size=32, precision="fp32"))]
    fn load(py: Python<'_>, model_dir: PathBuf, device: &str, batch_size: usize, precision: &str) -> PyResult<Scorer> {
        if batch_size == 0 {
            return Err(input_err("batch_size=0: expected at least 1"));
        }
        let precision: evalloop_model::Precision =
            precision.parse().map_err(|e: String| input_err(format!("precision: {e}")))?;
        let device = evalloop_model::parse_device(device).map_err(py_err)?;
        let scorer = py
            .detach(|| evalloop_model::score::Scorer::load(&model_dir, &device))
            .map_err(py_err)?
            .with_batch_size(batch_size)
            .with_precision(precision)
            .map_err(py_err)?;
        Ok(Scorer { scorer })
    }

    /// The evaluator's score of each (prompt, output) pair, in [0, 1]; a model trained with a
    /// blend (`blend.json`) also needs each request's production score (`evaluator_scores`).
    /// The interpreter is released while the model runs.
    #[pyo3(signature = (prompts, outputs, evaluator_scores=None))]
    fn score(
        &self,
        py: Python<'_>,
        prompts: Vec<String>,
        outputs: Vec<String>,
        evaluator_scores: Option<Vec<f64>>,
    ) -> PyResult<Vec<f64>> {
        if prompts.len() != outputs.len() {
            return Err(input_err(format!("{} prompts but {} outputs", prompts.len(), outputs.len())));
        }
        let pairs: Vec<(String, String)> = prompts.into_iter().zip(outputs).collect();
        py.detach(|| self.scorer.score_blended(&pairs, evaluator_scores.as_deref())).map_err(py_err)
    }

    /// The model directory.
    #[getter]
    fn model_dir(&self) -> PathBuf {
        self.scorer.model_dir().to_path_buf()
    }

    /// The names of the model's extra outputs (human dimensions); empty for a one-output model.
    #[getter]
    fn dimensions(&self) -> Vec<String> {
        self.scorer.dimensions().to_vec()
    }

    fn __repr__(&self) -> String {
        format!("Scorer({:?})", self.scorer.model_dir())
    }
}
