//! In-place element-wise ops for inference: GELU and the residual sum written into a fresh layer
//! output instead of a new buffer.

use candle_core::{CpuStorage, InplaceOp1, InplaceOp2, Layout, Result, Tensor, bail};
use rayon::prelude::*;

use super::simd::RowKernels;
use super::{ELEMS_PER_TASK, f32_slice, f32_slice_mut};

/// [`gelu_erf`] in place, for inference: `x` must not be tracked for gradients nor share its
/// storage with another tensor (a fresh layer output), and needs [`fused_ok`].
///
/// [`gelu_erf`]: super::gelu_erf
/// [`fused_ok`]: super::fused_ok
pub fn gelu_erf_inplace(x: &Tensor) -> Result<()> {
    if x.track_op() {
        bail!("gelu_erf_inplace: the input is tracked for gradients");
    }
    x.inplace_op1(&GeluInplace)
}

struct GeluInplace;

impl InplaceOp1 for GeluInplace {
    fn name(&self) -> &'static str {
        "evalloop-gelu-erf-inplace"
    }

    fn cpu_fwd(&self, s: &mut CpuStorage, l: &Layout) -> Result<()> {
        let v = f32_slice_mut(s, l, "evalloop-gelu-erf-inplace")?;
        let k = RowKernels::detect();
        v.par_chunks_mut(ELEMS_PER_TASK).for_each(|v| k.gelu_inplace(v));
        Ok(())
    }
}

/// `x += residual` in place, for inference (the residual sum of a BERT output block without
/// dropout): `x` must not be tracked for gradients nor share its storage; needs [`fused_ok`]
/// inputs of one shape.
///
/// [`fused_ok`]: super::fused_ok
pub fn add_inplace(x: &Tensor, residual: &Tensor) -> Result<()> {
    if x.track_op() {
        bail!("add_inplace: the input is tracked for gradients");
    }
    if x.dims() != residual.dims() {
        bail!("add_inplace: x {:?} and residual {:?} differ", x.dims(), residual.dims());
    }
    x.inplace_op2(residual, &AddInplace)
}

struct AddInplace;

impl InplaceOp2 for AddInplace {
    fn name(&self) -> &'static str {
        "evalloop-add-inplace"
    }

    fn cpu_fwd(&self, s1: &mut CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<()> {
        let op = "evalloop-add-inplace";
        let r = f32_slice(s2, l2, op)?;
        let x = f32_slice_mut(s1, l1, op)?;
        x.par_chunks_mut(ELEMS_PER_TASK).zip(r.par_chunks(ELEMS_PER_TASK)).for_each(|(x, r)| {
            for (x, &r) in x.iter_mut().zip(r) {
                *x += r;
            }
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::{dropout_add, gelu_erf};
    use candle_core::{Device, Var};

    /// The in-place inference ops give the bits of the graph ops, and refuse tracked inputs.
    #[test]
    fn inplace_gelu_and_residual_sum_equal_the_graph_ops() {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 2.0, (3, 7001), &dev).unwrap();
        let r = Tensor::randn(0f32, 1.0, (3, 7001), &dev).unwrap();
        let want_gelu = gelu_erf(&x).unwrap();
        let want_sum = dropout_add(&x, &r, None).unwrap();
        let a = x.copy().unwrap();
        gelu_erf_inplace(&a).unwrap();
        let b = x.copy().unwrap();
        add_inplace(&b, &r).unwrap();
        let bits = |t: &Tensor| {
            t.flatten_all().unwrap().to_vec1::<f32>().unwrap().iter().map(|f| f.to_bits()).collect::<Vec<_>>()
        };
        assert_eq!(bits(&a), bits(&want_gelu));
        assert_eq!(bits(&b), bits(&want_sum));
        let v = Var::from_tensor(&x).unwrap();
        assert!(gelu_erf_inplace(v.as_tensor()).is_err());
        assert!(add_inplace(v.as_tensor(), &r).is_err());
        assert!(add_inplace(&x.copy().unwrap(), &r.narrow(1, 0, 7000).unwrap()).is_err());
    }
}
