//! AdamW with decoupled weight decay only on the parameters marked for it (not biases and
//! LayerNorm weights), global-norm gradient clipping, and state that can be saved and restored.

use std::collections::HashMap;

use candle_core::{DType, Result, Tensor};

use super::config::TrainConfig;
use crate::model::weights::Param;

/// AdamW as PyTorch's `torch.optim.AdamW` (bias-corrected moments, `eps` added to the
/// corrected square root).
#[derive(Debug)]
pub(crate) struct AdamW {
    m: Vec<Tensor>,
    v: Vec<Tensor>,
    t: usize,
    beta1: f64,
    beta2: f64,
    eps: f64,
    weight_decay: f64,
}

impl AdamW {
    /// Zero moments for `params`.
    pub(crate) fn new(params: &[Param], cfg: &TrainConfig) -> Result<Self> {
        let zeros = |p: &Param| p.var.as_tensor().zeros_like();
        Ok(AdamW {
            m: params.iter().map(zeros).collect::<Result<_>>()?,
            v: params.iter().map(zeros).collect::<Result<_>>()?,
            t: 0,
            beta1: cfg.adam_beta1,
            beta2: cfg.adam_beta2,
            eps: cfg.adam_eps,
            weight_decay: cfg.weight_decay,
        })
    }

    /// Number of updates applied.
    pub(crate) fn step_count(&self) -> usize {
        self.t
    }

    /// First and second moments, in parameter order.
    pub(crate) fn moments(&self) -> (&[Tensor], &[Tensor]) {
        (&self.m, &self.v)
    }

    /// Restores the update count and moments saved under parameter names.
    pub(crate) fn restore(
        &mut self,
        t: usize,
        m: &HashMap<String, Tensor>,
        v: &HashMap<String, Tensor>,
        params: &[Param],
    ) -> Result<()> {
        for (i, p) in params.iter().enumerate() {
            let get = |map: &HashMap<String, Tensor>| -> Result<Tensor> {
                map.get(&p.name)
                    .ok_or_else(|| candle_core::Error::msg(format!("no optimizer state for {}", p.name)))?
                    .to_device(p.var.device())
            };
            self.m[i] = get(m)?;
            self.v[i] = get(v)?;
        }
        self.t = t;
        Ok(())
    }

    /// Clips `grads` to global L2 norm `clip` (0 = off), then applies one update with
    /// learning rate `lr`. Parameters without a gradient are left alone. Returns the gradient
    /// norm before clipping.
    pub(crate) fn step(&mut self, params: &[Param], grads: &mut [Option<Tensor>], lr: f64, clip: f64) -> Result<f64> {
        let mut sq = 0.0;
        for g in grads.iter().flatten() {
            sq += g.sqr()?.sum_all()?.to_dtype(DType::F64)?.to_scalar::<f64>()?;
        }
        let norm = sq.sqrt();
        let scale = if clip > 0.0 && norm > clip { clip / (norm + 1e-6) } else { 1.0 };
        self.t += 1;
        let bc1 = 1.0 - self.beta1.powi(self.t as i32);
        let bc2 = 1.0 - self.beta2.powi(self.t as i32);
        for (i, (p, g)) in params.iter().zip(grads.iter_mut()).enumerate() {
            let Some(g) = g.take() else { continue };
            let g = g.detach();
            let g = if scale != 1.0 { (g * scale)? } else { g };
            let m = ((&self.m[i] * self.beta1)? + (&g * (1.0 - self.beta1))?)?;
            let v = ((&self.v[i] * self.beta2)? + (g.sqr()? * (1.0 - self.beta2))?)?;
            let denom = ((&v / bc2)?.sqrt()? + self.eps)?;
            let update = ((&m / bc1)? / denom)?;
            let theta = p.var.as_tensor().detach();
            let theta =
                if p.decay && self.weight_decay > 0.0 { (theta * (1.0 - lr * self.weight_decay))? } else { theta };
            p.var.set(&(theta - (update * lr)?)?)?;
            self.m[i] = m;
            self.v[i] = v;
        }
        Ok(norm)
    }
}
