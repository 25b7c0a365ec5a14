//! Fused CPU f32 kernels with backward passes for training: linear layers with their bias,
//! LayerNorm, the whole attention from q, k, v to the context (or only its scaled, masked
//! softmax), dropout alone or with the residual sum, and exact (erf) GELU, each one pass over the
//! data forward and one backward where the composed candle ops take five to twenty; and AdamW's
//! in-place update.
//!
//! Each op is a candle `CustomOp` whose `bwd` is itself a fused kernel, so the training graph
//! records one node per op instead of one per element-wise step. Rows are spread over rayon's
//! threads; reductions across rows (LayerNorm's weight and bias gradients) are summed in a fixed
//! order, so results do not depend on scheduling (the exact-resume test relies on this).
//! The kernels need contiguous f32 tensors on the CPU: [`fused_ok`] says when they apply, and the
//! callers in [`super::bert`] keep the composed ops for every other case.
//!
//! By concern: `linear` (the linear layer, on the gemms of `matmul`, whose [`serial`] switch
//! keeps them on the calling thread), `layer_norm`, `softmax`, `attention`, `dropout` (with the
//! residual sum), `gelu`, `inplace` (GELU and the residual sum in place, for inference),
//! `int8` (the linear layers with int8 weights and activations, for inference) and `adamw`.
//! The per-row loops of attention and GELU sit in `simd` (a safe baseline loop and its AVX2 and
//! AVX-512 builds, compared bit for bit), the branch-free `exp` and `erf` in `approx`.

mod adamw;
mod approx;
mod attention;
mod dropout;
mod gelu;
mod inplace;
mod int8;
mod layer_norm;
mod linear;
mod matmul;
mod simd;
mod softmax;

pub use adamw::{AdamUpdate, adam_moments, adam_update};
pub use attention::attention;
pub use dropout::{dropout, dropout_add};
pub use gelu::gelu_erf;
pub use inplace::{add_inplace, gelu_erf_inplace};
pub use int8::{Int8Weights, int8, int8_enabled, int8_has_vnni, linear_int8};
pub use layer_norm::layer_norm;
pub use linear::linear;
pub use matmul::serial;
pub use softmax::{scaled_masked_softmax, scaled_masked_softmax_dropout};

use candle_core::{CpuStorage, DType, Layout, Result, Tensor, bail};

/// Rows handed to one rayon task at a time (a row is a few hundred floats).
const ROWS_PER_TASK: usize = 16;

/// Elements handed to one rayon task at a time by the element-wise kernels.
const ELEMS_PER_TASK: usize = 16 * 1024;

/// True when the fused kernels can run on `t`: f32, on the CPU, contiguous.
pub fn fused_ok(t: &Tensor) -> bool {
    t.dtype() == DType::F32 && t.device().is_cpu() && t.is_contiguous()
}

/// The f32 values of a contiguous CPU tensor; `op` names the kernel in errors.
fn f32_slice<'a>(s: &'a CpuStorage, l: &Layout, op: &str) -> Result<&'a [f32]> {
    let CpuStorage::F32(v) = s else { bail!("{op}: expected an f32 tensor") };
    let Some((a, b)) = l.contiguous_offsets() else { bail!("{op}: input is not contiguous") };
    Ok(&v[a..b])
}

/// [`f32_slice`] for the tensor an in-place op writes.
fn f32_slice_mut<'a>(s: &'a mut CpuStorage, l: &Layout, op: &str) -> Result<&'a mut [f32]> {
    let CpuStorage::F32(v) = s else { bail!("{op}: expected f32") };
    let Some((a, b)) = l.contiguous_offsets() else { bail!("{op}: input is not contiguous") };
    Ok(&mut v[a..b])
}

/// The size of the last dimension; an error when it is 0 or there is none.
fn last_dim(l: &Layout, op: &str) -> Result<usize> {
    match l.dims().last() {
        Some(&n) if n > 0 => Ok(n),
        _ => bail!("{op}: needs a non-empty last dimension, got {:?}", l.dims()),
    }
}

/// Helpers shared by the kernels' tests.
#[cfg(test)]
mod test_support {
    use candle_core::{Tensor, Var};

    /// The largest absolute difference between two tensors of one shape.
    pub(super) fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap()
    }

    /// The gradients of `sum(f(..) * probe)` with respect to `vars`, for a fixed random `probe`.
    pub(super) fn grads_of(vars: &[&Var], out: &Tensor, probe: &Tensor) -> Vec<Tensor> {
        let g = (out * probe).unwrap().sum_all().unwrap().backward().unwrap();
        vars.iter().map(|v| g.get(v.as_tensor()).expect("gradient").clone()).collect()
    }
}
