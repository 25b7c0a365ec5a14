//! Exact (erf) GELU as one graph node, with its backward pass.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::simd::RowKernels;
use super::{ELEMS_PER_TASK, f32_slice};

/// Exact GELU, `0.5 x (1 + erf(x / sqrt 2))` (candle's `gelu_erf` formula, with the
/// vectorisable `erf_f32` of the `approx` module), with a backward pass. Needs [`fused_ok`] input.
///
/// [`fused_ok`]: super::fused_ok
pub fn gelu_erf(x: &Tensor) -> Result<Tensor> {
    x.apply_op1(GeluOp)
}

struct GeluOp;

impl CustomOp1 for GeluOp {
    fn name(&self) -> &'static str {
        "evalloop-gelu-erf"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = f32_slice(s, l, self.name())?;
        let k = RowKernels::detect();
        let mut y = vec![0f32; x.len()];
        y.par_chunks_mut(ELEMS_PER_TASK).zip(x.par_chunks(ELEMS_PER_TASK)).for_each(|(y, x)| k.gelu(x, y));
        Ok((CpuStorage::F32(y), l.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(x.contiguous()?.apply_op2_no_bwd(&grad.contiguous()?, &GeluBwd)?))
    }
}

struct GeluBwd;

impl CustomOp2 for GeluBwd {
    fn name(&self) -> &'static str {
        "evalloop-gelu-erf-bwd"
    }

    /// `g * (0.5 (1 + erf(x / sqrt 2)) + x exp(-x^2 / 2) / sqrt(2 pi))`.
    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let op = self.name();
        let (x, g) = (f32_slice(s1, l1, op)?, f32_slice(s2, l2, op)?);
        let k = RowKernels::detect();
        let mut dx = vec![0f32; x.len()];
        dx.par_chunks_mut(ELEMS_PER_TASK)
            .zip(x.par_chunks(ELEMS_PER_TASK))
            .zip(g.par_chunks(ELEMS_PER_TASK))
            .for_each(|((dx, x), g)| k.gelu_bwd(x, g, dx));
        Ok((CpuStorage::F32(dx), l1.shape().clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::test_support::{grads_of, max_diff};
    use candle_core::{Device, Var};

    #[test]
    fn gelu_forward_and_gradient_match_candle_gelu_erf() {
        let dev = Device::Cpu;
        // More elements than one task takes, so that the split is exercised.
        let x = Var::randn(0f32, 2.5, (3, 7001), &dev).unwrap();
        let probe = Tensor::randn(0f32, 1.0, (3, 7001), &dev).unwrap();
        let fused = gelu_erf(&x).unwrap();
        let reference = x.as_tensor().gelu_erf().unwrap();
        // erf_f32 is within 3.6e-7 of libm's erff, times |x| / 2 (|x| < 12 here).
        assert!(max_diff(&fused, &reference) < 3e-6, "{}", max_diff(&fused, &reference));
        let gf = grads_of(&[&x], &fused, &probe);
        let gr = grads_of(&[&x], &reference, &probe);
        // candle's backward uses 0.398942 for 1/sqrt(2 pi); ours the full f32 constant.
        assert!(max_diff(&gf[0], &gr[0]) < 1e-5, "{}", max_diff(&gf[0], &gr[0]));
    }
}
