//! Dropout with given keep multipliers, alone or followed by the residual sum of a BERT output
//! block, each as one graph node with its backward pass.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor, bail};
use rayon::prelude::*;

use super::{ELEMS_PER_TASK, f32_slice};

/// `x * keep` (inverted dropout with the given multipliers, one per element of `x`: 0 or
/// `1 / (1 - p)`) as one graph node whose backward pass is `g * keep`. candle's `x * mask`
/// also computes, zero-fills and sums a gradient for the mask. Needs a [`fused_ok`] input.
///
/// [`fused_ok`]: super::fused_ok
pub fn dropout(x: &Tensor, keep: Vec<f32>) -> Result<Tensor> {
    if keep.len() != x.elem_count() {
        bail!("dropout mask has {} values for {:?}", keep.len(), x.dims());
    }
    x.apply_op1(DropoutOp { keep })
}

/// `x * keep + residual` (dropout then the residual sum of a BERT output block) as one graph
/// node: one pass forward, and backward `g * keep` for `x` and `g` itself for `residual` (two
/// candle nodes take five passes and four buffers). `keep: None` is no dropout. `x` and
/// `residual` have one shape; needs [`fused_ok`] inputs.
///
/// [`fused_ok`]: super::fused_ok
pub fn dropout_add(x: &Tensor, residual: &Tensor, keep: Option<Vec<f32>>) -> Result<Tensor> {
    if x.dims() != residual.dims() {
        bail!("dropout_add: x {:?} and residual {:?} differ", x.dims(), residual.dims());
    }
    if let Some(k) = &keep
        && k.len() != x.elem_count()
    {
        bail!("dropout mask has {} values for {:?}", k.len(), x.dims());
    }
    x.apply_op2(residual, DropoutAddOp { keep })
}

struct DropoutOp {
    keep: Vec<f32>,
}

/// `x * keep`, or `x * keep + r` when `r` is given, element-wise over rayon's threads.
fn mul_add(x: &[f32], keep: Option<&[f32]>, r: Option<&[f32]>) -> Vec<f32> {
    let mut y = vec![0f32; x.len()];
    y.par_chunks_mut(ELEMS_PER_TASK).enumerate().for_each(|(i, y)| {
        let at = i * ELEMS_PER_TASK;
        let x = &x[at..at + y.len()];
        match (keep.map(|k| &k[at..at + y.len()]), r.map(|r| &r[at..at + y.len()])) {
            (Some(k), Some(r)) => {
                for (((y, &x), &k), &r) in y.iter_mut().zip(x).zip(k).zip(r) {
                    *y = x * k + r;
                }
            }
            (Some(k), None) => {
                for ((y, &x), &k) in y.iter_mut().zip(x).zip(k) {
                    *y = x * k;
                }
            }
            (None, Some(r)) => {
                for ((y, &x), &r) in y.iter_mut().zip(x).zip(r) {
                    *y = x + r;
                }
            }
            (None, None) => y.copy_from_slice(x),
        }
    });
    y
}

impl CustomOp1 for DropoutOp {
    fn name(&self) -> &'static str {
        "evalloop-dropout"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = f32_slice(s, l, self.name())?;
        if x.len() != self.keep.len() {
            bail!("{}: {} values, mask {}", self.name(), x.len(), self.keep.len());
        }
        Ok((CpuStorage::F32(mul_add(x, Some(&self.keep), None)), l.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(grad.contiguous()?.apply_op1_no_bwd(&KeepMul { keep: &self.keep })?.reshape(x.shape())?))
    }
}

struct DropoutAddOp {
    keep: Option<Vec<f32>>,
}

impl CustomOp2 for DropoutAddOp {
    fn name(&self) -> &'static str {
        "evalloop-dropout-add"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let op = self.name();
        let (x, r) = (f32_slice(s1, l1, op)?, f32_slice(s2, l2, op)?);
        if r.len() != x.len() || self.keep.as_ref().is_some_and(|k| k.len() != x.len()) {
            bail!("{op}: x, residual and mask sizes differ");
        }
        Ok((CpuStorage::F32(mul_add(x, self.keep.as_deref(), Some(r))), l1.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, _r: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let dx = match &self.keep {
            Some(keep) => grad.contiguous()?.apply_op1_no_bwd(&KeepMul { keep })?.reshape(x.shape())?,
            None => grad.clone(),
        };
        Ok((Some(dx), Some(grad.clone())))
    }
}

/// `g * keep`, the backward pass of both dropout ops.
struct KeepMul<'a> {
    keep: &'a [f32],
}

impl CustomOp1 for KeepMul<'_> {
    fn name(&self) -> &'static str {
        "evalloop-dropout-bwd"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let g = f32_slice(s, l, self.name())?;
        if g.len() != self.keep.len() {
            bail!("{}: gradient has {} values, mask {}", self.name(), g.len(), self.keep.len());
        }
        Ok((CpuStorage::F32(mul_add(g, Some(self.keep), None)), l.shape().clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::test_support::{grads_of, max_diff};
    use candle_core::{Device, Var};

    #[test]
    fn dropout_ops_match_candle_mul_and_add() {
        let dev = Device::Cpu;
        // More elements than one task takes.
        let shape = (3, 41, 173);
        let n = 3 * 41 * 173;
        let x = Var::randn(0f32, 1.0, shape, &dev).unwrap();
        let r = Var::randn(0f32, 1.0, shape, &dev).unwrap();
        let keep: Vec<f32> = (0..n).map(|i| if i % 7 == 3 { 0.0 } else { 1.0 / 0.9 }).collect();
        let keep_t = Tensor::from_vec(keep.clone(), shape, &dev).unwrap();
        let probe = Tensor::randn(0f32, 1.0, shape, &dev).unwrap();
        for with_keep in [true, false] {
            let fused = dropout_add(&x, &r, with_keep.then(|| keep.clone())).unwrap();
            let dropped = if with_keep { x.as_tensor().mul(&keep_t).unwrap() } else { x.as_tensor().clone() };
            let reference = (dropped + r.as_tensor()).unwrap();
            assert_eq!(max_diff(&fused, &reference), 0.0);
            let gf = grads_of(&[&x, &r], &fused, &probe);
            let gr = grads_of(&[&x, &r], &reference, &probe);
            assert_eq!(max_diff(&gf[0], &gr[0]), 0.0);
            assert_eq!(max_diff(&gf[1], &gr[1]), 0.0);
        }
        let fused = dropout(&x, keep).unwrap();
        let reference = x.as_tensor().mul(&keep_t).unwrap();
        assert_eq!(max_diff(&fused, &reference), 0.0);
        let (gf, gr) = (grads_of(&[&x], &fused, &probe), grads_of(&[&x], &reference, &probe));
        assert_eq!(max_diff(&gf[0], &gr[0]), 0.0);
    }
}
