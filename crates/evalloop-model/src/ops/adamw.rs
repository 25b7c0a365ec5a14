//! AdamW's in-place moment and parameter updates.

use candle_core::{CpuStorage, InplaceOp2, InplaceOp3, Layout, Result, Tensor, bail};
use rayon::prelude::*;

use super::{ELEMS_PER_TASK, f32_slice, f32_slice_mut};

/// Updates AdamW's moments in place: `m = b1 m + (1 - b1) g` and `v = b2 v + (1 - b2) g^2`,
/// with `g` scaled by `grad_scale` (gradient clipping) first. `m`, `v`, `g` have one shape.
pub fn adam_moments(m: &Tensor, v: &Tensor, g: &Tensor, grad_scale: f64, beta1: f64, beta2: f64) -> Result<()> {
    let g = g.contiguous()?;
    m.inplace_op2(&g, &Moment { scale: grad_scale as f32, beta: beta1 as f32, square: false })?;
    v.inplace_op2(&g, &Moment { scale: grad_scale as f32, beta: beta2 as f32, square: true })
}

/// Applies AdamW's parameter update in place: `theta = theta * decay - lr * (m / bc1) /
/// (sqrt(v / bc2) + eps)`, where `decay` is `1 - lr * weight_decay` (1 for no decay).
pub fn adam_update(theta: &Tensor, m: &Tensor, v: &Tensor, u: AdamUpdate) -> Result<()> {
    theta.inplace_op3(m, v, &u)
}

struct Moment {
    scale: f32,
    beta: f32,
    square: bool,
}

impl InplaceOp2 for Moment {
    fn name(&self) -> &'static str {
        "evalloop-adam-moment"
    }

    fn cpu_fwd(&self, s1: &mut CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<()> {
        let op = "evalloop-adam-moment";
        let g = f32_slice(s2, l2, op)?;
        let m = f32_slice_mut(s1, l1, op)?;
        if m.len() != g.len() {
            bail!("{op}: moment has {} values, gradient {}", m.len(), g.len());
        }
        let (b, c) = (self.beta, 1.0 - self.beta);
        m.par_chunks_mut(ELEMS_PER_TASK).zip(g.par_chunks(ELEMS_PER_TASK)).for_each(|(m, g)| {
            if self.square {
                for (m, &g) in m.iter_mut().zip(g) {
                    let g = g * self.scale;
                    *m = *m * b + g * g * c;
                }
            } else {
                for (m, &g) in m.iter_mut().zip(g) {
                    *m = *m * b + g * self.scale * c;
                }
            }
        });
        Ok(())
    }
}

/// The scalars of one AdamW parameter update (see [`adam_update`]).
#[derive(Debug, Clone, Copy)]
pub struct AdamUpdate {
    /// The parameter's learning rate.
    pub lr: f64,
    /// `1 - lr * weight_decay`, or 1 for a parameter without decay.
    pub decay: f64,
    /// Bias corrections `1 - beta1^t` and `1 - beta2^t`.
    pub bc1: f64,
    /// See `bc1`.
    pub bc2: f64,
    /// Added to the corrected square root.
    pub eps: f64,
}

impl InplaceOp3 for AdamUpdate {
    fn name(&self) -> &'static str {
        "evalloop-adam-update"
    }

    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<()> {
        let op = "evalloop-adam-update";
        let (m, v) = (f32_slice(s2, l2, op)?, f32_slice(s3, l3, op)?);
        let theta = f32_slice_mut(s1, l1, op)?;
        if theta.len() != m.len() || theta.len() != v.len() {
            bail!("{op}: parameter has {} values, moments {} and {}", theta.len(), m.len(), v.len());
        }
        // Same operation order as the tensor version: (m / bc1) / (sqrt(v / bc2) + eps) * lr.
        let (lr, decay, bc1, bc2, eps) =
            (self.lr as f32, self.decay as f32, self.bc1 as f32, self.bc2 as f32, self.eps as f32);
        theta
            .par_chunks_mut(ELEMS_PER_TASK)
            .zip(m.par_chunks(ELEMS_PER_TASK))
            .zip(v.par_chunks(ELEMS_PER_TASK))
            .for_each(|((t, m), v)| {
                for ((t, &m), &v) in t.iter_mut().zip(m).zip(v) {
                    let update = (m / bc1) / ((v / bc2).sqrt() + eps);
                    let th = if decay != 1.0 { *t * decay } else { *t };
                    *t = th - update * lr;
                }
            });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::test_support::max_diff;
    use candle_core::Device;

    #[test]
    fn in_place_adamw_matches_the_tensor_formula() {
        let dev = Device::Cpu;
        let theta0 = Tensor::randn(0f32, 1.0, 1000, &dev).unwrap();
        let m0 = Tensor::randn(0f32, 0.1, 1000, &dev).unwrap();
        let v0 = Tensor::randn(0f32, 0.1, 1000, &dev).unwrap().abs().unwrap();
        let g = Tensor::randn(0f32, 1.0, 1000, &dev).unwrap();
        let (b1, b2, eps, lr, wd, scale, bc1, bc2) = (0.9, 0.999, 1e-8, 1e-3, 0.01, 0.5, 0.19, 0.002);
        let gs = (&g * scale).unwrap();
        let m = ((&m0 * b1).unwrap() + (&gs * (1.0 - b1)).unwrap()).unwrap();
        let v = ((&v0 * b2).unwrap() + (gs.sqr().unwrap() * (1.0 - b2)).unwrap()).unwrap();
        let denom = ((&v / bc2).unwrap().sqrt().unwrap() + eps).unwrap();
        let update = ((&m / bc1).unwrap() / denom).unwrap();
        let want = ((&theta0 * (1.0 - lr * wd)).unwrap() - (update * lr).unwrap()).unwrap();

        let (theta, mi, vi) = (theta0.copy().unwrap(), m0.copy().unwrap(), v0.copy().unwrap());
        adam_moments(&mi, &vi, &g, scale, b1, b2).unwrap();
        adam_update(&theta, &mi, &vi, AdamUpdate { lr, decay: 1.0 - lr * wd, bc1, bc2, eps }).unwrap();
        assert!(max_diff(&mi, &m) < 1e-7);
        assert!(max_diff(&vi, &v) < 1e-7);
        assert!(max_diff(&theta, &want) < 1e-6, "{}", max_diff(&theta, &want));
    }
}
