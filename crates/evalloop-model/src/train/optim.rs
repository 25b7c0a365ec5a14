//! AdamW with decoupled weight decay only on the parameters marked for it (not biases and
//! LayerNorm weights), layer-wise learning-rate decay, global-norm gradient clipping, and state
//! that can be saved and restored; and the learning-rate schedule ([`lr_at`]).
//!
//! Layer-wise learning-rate decay (`layer_lr_decay` = d in `[train]`, 1.0 = off) gives each
//! parameter its own rate, as PyTorch parameter groups would: with L encoder layers, layer l
//! (1-based; `bert.encoder.layer.{l-1}.*`, or the family's name for it) gets `lr * d^(L - l)`,
//! the embeddings (`bert.embeddings.*`) `lr * d^L`, the pooler and classifier `lr`. The decoupled weight decay
//! of a parameter uses its own rate.

use std::collections::HashMap;

use candle_core::{DType, Result, Tensor};

use super::config::TrainConfig;
use crate::ops;
use crate::weights::Param;

/// Learning rate at optimizer step `step` (0-based): linear warmup to `peak` over `warmup`
/// steps (step k gets `(k + 1) / warmup`), then linear decay to 0 at `total`.
pub fn lr_at(step: usize, peak: f64, warmup: usize, total: usize) -> f64 {
    if step < warmup {
        peak * (step + 1) as f64 / warmup as f64
    } else if total <= warmup {
        peak
    } else {
        peak * ((total - step) as f64 / (total - warmup) as f64).max(0.0)
    }
}

/// The learning-rate multiplier of parameter `name` under layer-wise decay `decay` with
/// `num_layers` encoder layers (see the module docs).
pub(crate) fn layer_lr_scale(name: &str, num_layers: usize, decay: f64) -> f64 {
    if decay == 1.0 {
        return 1.0;
    }
    let depth = if crate::weights::is_embedding(name) {
        num_layers
    } else if let Some(idx) = crate::weights::layer_index(name) {
        num_layers.saturating_sub(idx + 1)
    } else {
        0
    };
    decay.powi(depth as i32)
}

/// AdamW as PyTorch's `torch.optim.AdamW` (bias-corrected moments, `eps` added to the
/// corrected square root).
#[derive(Debug)]
pub(crate) struct AdamW {
    m: Vec<Tensor>,
    v: Vec<Tensor>,
    t: usize,
    /// Learning-rate multiplier of each parameter (layer-wise decay).
    lr_scale: Vec<f64>,
    beta1: f64,
    beta2: f64,
    eps: f64,
    weight_decay: f64,
}

impl AdamW {
    /// Zero moments for `params` of a model with `num_layers` encoder layers.
    pub(crate) fn new(params: &[Param], cfg: &TrainConfig, num_layers: usize) -> Result<Self> {
        let zeros = |p: &Param| p.var.as_tensor().zeros_like();
        Ok(AdamW {
            m: params.iter().map(zeros).collect::<Result<_>>()?,
            v: params.iter().map(zeros).collect::<Result<_>>()?,
            t: 0,
            lr_scale: params.iter().map(|p| layer_lr_scale(&p.name, num_layers, cfg.layer_lr_decay)).collect(),
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
            // Own copies: the update writes the moments in place.
            self.m[i] = get(m)?.copy()?;
            self.v[i] = get(v)?.copy()?;
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
            let lr = lr * self.lr_scale[i];
            let theta = p.var.as_tensor();
            if ops::fused_ok(theta) && ops::fused_ok(&self.m[i]) && ops::fused_ok(&self.v[i]) && g.dtype() == DType::F32
            {
                // One pass each over m, v and the parameter, in place, no temporaries.
                ops::adam_moments(&self.m[i], &self.v[i], &g, scale, self.beta1, self.beta2)?;
                let decay = if p.decay && self.weight_decay > 0.0 { 1.0 - lr * self.weight_decay } else { 1.0 };
                ops::adam_update(
                    theta,
                    &self.m[i],
                    &self.v[i],
                    ops::AdamUpdate { lr, decay, bc1, bc2, eps: self.eps },
                )?;
                continue;
            }
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

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    #[test]
    fn layer_lr_decay_scales_each_layers_first_update() {
        assert_eq!(layer_lr_scale("bert.encoder.layer.3.output.dense.weight", 4, 1.0), 1.0);
        assert_eq!(layer_lr_scale("bert.encoder.layer.3.output.dense.weight", 4, 0.5), 1.0);
        assert_eq!(layer_lr_scale("bert.encoder.layer.0.output.dense.weight", 4, 0.5), 0.125);
        assert_eq!(layer_lr_scale("bert.embeddings.word_embeddings.weight", 4, 0.5), 0.0625);
        assert_eq!(layer_lr_scale("bert.pooler.dense.weight", 4, 0.5), 1.0);
        assert_eq!(layer_lr_scale("classifier.weight", 4, 0.5), 1.0);

        // Adam's first update is lr * sign(g) (up to eps): each parameter moves by its own rate.
        let names = [
            "bert.embeddings.word_embeddings.weight",
            "bert.encoder.layer.0.attention.self.query.weight",
            "bert.encoder.layer.1.attention.self.query.weight",
            "classifier.weight",
        ];
        let params: Vec<Param> = names
            .iter()
            .map(|n| Param { name: n.to_string(), var: Var::zeros(3, DType::F32, &Device::Cpu).unwrap(), decay: false })
            .collect();
        let cfg = TrainConfig { layer_lr_decay: 0.5, weight_decay: 0.0, ..Default::default() };
        let mut opt = AdamW::new(&params, &cfg, 2).unwrap();
        let mut grads: Vec<Option<Tensor>> =
            params.iter().map(|_| Some(Tensor::new(&[1f32, -2.0, 0.5], &Device::Cpu).unwrap())).collect();
        opt.step(&params, &mut grads, 0.1, 0.0).unwrap();
        for (p, want) in params.iter().zip([0.025f32, 0.05, 0.1, 0.1]) {
            let got = p.var.as_tensor().to_vec1::<f32>().unwrap();
            for (g, sign) in got.iter().zip([-1.0f32, 1.0, -1.0]) {
                assert!((g - sign * want).abs() < 1e-5, "{}: {got:?}, want {want}", p.name);
            }
        }
    }
}
