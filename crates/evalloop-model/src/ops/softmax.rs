//! The scaled, masked softmax over the last dimension, optionally followed by dropout, as one
//! graph node with its backward pass (the attention path when the whole fused attention does
//! not apply).

use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor, bail};
use rayon::prelude::*;

use super::{ELEMS_PER_TASK, ROWS_PER_TASK, f32_slice, last_dim};

/// `softmax(scores * scale + mask)` over the last dimension, with a backward pass for `scores`
/// (the mask gets no gradient). `scores` is `(b, .., n)` and `mask` holds `b * n` additive
/// values (`(b, 1, 1, n)` for attention), broadcast over the middle dimensions. Needs
/// [`fused_ok`] inputs.
///
/// [`fused_ok`]: super::fused_ok
pub fn scaled_masked_softmax(scores: &Tensor, mask: &Tensor, scale: f64) -> Result<Tensor> {
    scaled_masked_softmax_dropout(scores, mask, scale, None)
}

/// [`scaled_masked_softmax`] followed by dropout: the probabilities times `keep` (one value per
/// element of `scores`: 0 or `1 / (1 - p)`), in the same pass, with the backward pass through
/// both. `keep: None` is no dropout.
pub fn scaled_masked_softmax_dropout(
    scores: &Tensor,
    mask: &Tensor,
    scale: f64,
    keep: Option<Vec<f32>>,
) -> Result<Tensor> {
    if let Some(k) = &keep
        && k.len() != scores.elem_count()
    {
        bail!("dropout mask has {} values for scores {:?}", k.len(), scores.dims());
    }
    scores.apply_op2(mask, SoftmaxOp { scale: scale as f32, keep, probs: std::sync::Mutex::new(None) })
}

struct SoftmaxOp {
    scale: f32,
    /// Dropout multipliers, one per element.
    keep: Option<Vec<f32>>,
    /// The probabilities before dropout, kept from the forward pass for the backward one (only
    /// with dropout: otherwise they are the op's result).
    probs: std::sync::Mutex<Option<Vec<f32>>>,
}

impl CustomOp2 for SoftmaxOp {
    fn name(&self) -> &'static str {
        "evalloop-scaled-masked-softmax"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let op = self.name();
        let (x, m) = (f32_slice(s1, l1, op)?, f32_slice(s2, l2, op)?);
        let n = last_dim(l1, op)?;
        let b = l1.dims()[0];
        if m.len() != b * n {
            bail!("{op}: mask has {} values, expected {b} x {n} for scores {:?}", m.len(), l1.dims());
        }
        let rows_per_batch = x.len() / n / b;
        let mut y = vec![0f32; x.len()];
        y.par_chunks_mut(n).zip(x.par_chunks(n)).enumerate().with_min_len(ROWS_PER_TASK).for_each(|(r, (y, x))| {
            let bi = r / rows_per_batch;
            let m = &m[bi * n..(bi + 1) * n];
            let mut max = f32::NEG_INFINITY;
            for i in 0..n {
                y[i] = x[i] * self.scale + m[i];
                max = max.max(y[i]);
            }
            let mut sum = 0f32;
            for v in y.iter_mut() {
                *v = (*v - max).exp();
                sum += *v;
            }
            let inv = 1.0 / sum;
            for v in y.iter_mut() {
                *v *= inv;
            }
        });
        let Some(keep) = &self.keep else { return Ok((CpuStorage::F32(y), l1.shape().clone())) };
        let mut dropped = vec![0f32; y.len()];
        dropped
            .par_chunks_mut(ELEMS_PER_TASK)
            .zip(y.par_chunks(ELEMS_PER_TASK))
            .zip(keep.par_chunks(ELEMS_PER_TASK))
            .for_each(|((d, p), k)| {
                for ((d, p), k) in d.iter_mut().zip(p).zip(k) {
                    *d = p * k;
                }
            });
        *self.probs.lock().map_err(|_| candle_core::Error::msg("softmax probs poisoned"))? = Some(y);
        Ok((CpuStorage::F32(dropped), l1.shape().clone()))
    }

    fn bwd(
        &self,
        scores: &Tensor,
        _mask: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        let dx = match &self.keep {
            None => res.apply_op2_no_bwd(&grad, &SoftmaxBwd { scale: self.scale, keep: None })?,
            Some(keep) => {
                let probs = self
                    .probs
                    .lock()
                    .map_err(|_| candle_core::Error::msg("softmax probs poisoned"))?
                    .take()
                    .ok_or_else(|| candle_core::Error::msg("softmax backward run twice"))?;
                let probs = Tensor::from_vec(probs, scores.shape(), scores.device())?;
                probs.apply_op2_no_bwd(&grad, &SoftmaxBwd { scale: self.scale, keep: Some(keep) })?
            }
        };
        Ok((Some(dx), None))
    }
}

struct SoftmaxBwd<'a> {
    scale: f32,
    keep: Option<&'a [f32]>,
}

impl CustomOp2 for SoftmaxBwd<'_> {
    fn name(&self) -> &'static str {
        "evalloop-scaled-masked-softmax-bwd"
    }

    /// With `gd = g * keep` (or `g`): `dx = scale * p * (gd - sum(gd * p))` row by row.
    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let op = self.name();
        let (y, g) = (f32_slice(s1, l1, op)?, f32_slice(s2, l2, op)?);
        let n = last_dim(l1, op)?;
        let mut dx = vec![0f32; y.len()];
        dx.par_chunks_mut(n)
            .zip(y.par_chunks(n))
            .zip(g.par_chunks(n))
            .enumerate()
            .with_min_len(ROWS_PER_TASK)
            .for_each(|(r, ((dx, y), g))| {
                if let Some(keep) = self.keep {
                    let k = &keep[r * n..(r + 1) * n];
                    for i in 0..n {
                        dx[i] = g[i] * k[i];
                    }
                } else {
                    dx.copy_from_slice(g);
                }
                let dot: f32 = y.iter().zip(dx.iter()).map(|(a, b)| a * b).sum();
                for i in 0..n {
                    dx[i] = self.scale * y[i] * (dx[i] - dot);
                }
            });
        Ok((CpuStorage::F32(dx), l1.shape().clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::test_support::{grads_of, max_diff};
    use candle_core::{D, DType, Device, IndexOp, Var};

    #[test]
    fn masked_softmax_forward_and_gradient_match_the_composed_ops() {
        let dev = Device::Cpu;
        let (b, heads, s) = (3, 2, 5);
        let scores = Var::randn(0f32, 3.0, (b, heads, s, s), &dev).unwrap();
        // Padding at the end of the second and third sequences, as the attention mask has it.
        let mut m = vec![0f32; b * s];
        m[s + 4] = f32::MIN;
        m[2 * s + 3] = f32::MIN;
        m[2 * s + 4] = f32::MIN;
        let mask = Tensor::from_vec(m, (b, 1, 1, s), &dev).unwrap();
        let scale = 0.125;
        let fused = scaled_masked_softmax(&scores, &mask, scale).unwrap();
        let z = (scores.as_tensor() * scale).unwrap().broadcast_add(&mask).unwrap();
        let max = z.max_keepdim(D::Minus1).unwrap().detach();
        let e = z.broadcast_sub(&max).unwrap().exp().unwrap();
        let composed = e.broadcast_div(&e.sum_keepdim(D::Minus1).unwrap()).unwrap();
        assert!(max_diff(&fused, &composed) < 1e-6);
        let probe = Tensor::randn(0f32, 1.0, (b, heads, s, s), &dev).unwrap();
        let gf = grads_of(&[&scores], &fused, &probe);
        let gc = grads_of(&[&scores], &composed, &probe);
        assert!(max_diff(&gf[0], &gc[0]) < 1e-5, "{}", max_diff(&gf[0], &gc[0]));
        // Padded keys get no probability and no gradient.
        let p = fused.i((2, 1, 0)).unwrap().to_vec1::<f32>().unwrap();
        assert_eq!((p[3], p[4]), (0.0, 0.0));
    }

    #[test]
    fn softmax_with_dropout_matches_softmax_times_the_mask() {
        let dev = Device::Cpu;
        let (b, heads, s) = (2, 3, 6);
        let scores = Var::randn(0f32, 2.0, (b, heads, s, s), &dev).unwrap();
        let mask = Tensor::zeros((b, 1, 1, s), DType::F32, &dev).unwrap();
        let keep: Vec<f32> = (0..b * heads * s * s).map(|i| if i % 3 == 0 { 0.0 } else { 1.25 }).collect();
        let scale = 0.3;
        let fused = scaled_masked_softmax_dropout(&scores, &mask, scale, Some(keep.clone())).unwrap();
        let keep_t = Tensor::from_vec(keep, (b, heads, s, s), &dev).unwrap();
        let z = (scores.as_tensor() * scale).unwrap();
        let max = z.max_keepdim(D::Minus1).unwrap().detach();
        let e = z.broadcast_sub(&max).unwrap().exp().unwrap();
        let composed = e.broadcast_div(&e.sum_keepdim(D::Minus1).unwrap()).unwrap().mul(&keep_t).unwrap();
        assert!(max_diff(&fused, &composed) < 1e-6);
        let probe = Tensor::randn(0f32, 1.0, (b, heads, s, s), &dev).unwrap();
        let gf = grads_of(&[&scores], &fused, &probe);
        let gc = grads_of(&[&scores], &composed, &probe);
        assert!(max_diff(&gf[0], &gc[0]) < 1e-5, "{}", max_diff(&gf[0], &gc[0]));
    }
}
