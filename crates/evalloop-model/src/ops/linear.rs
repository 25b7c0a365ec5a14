//! The fused linear layer: `x W^T + b` as one graph node, with its backward pass (two gemms and
//! a column sum).

use candle_core::{CpuStorage, CustomOp1, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor, bail};
use rayon::prelude::*;

use super::matmul::sgemm;
use super::{f32_slice, last_dim};

/// `x W^T + b` over the last dimension: `x` `(.., k)`, `weight` `(n, k)`, `bias` `(n,)` →
/// `(.., n)`, as one graph node: the bias is the initial value of the output that the matrix
/// product accumulates into (one gemm, no separate add), and the backward pass computes
/// dx = g W and dW = g^T x with one gemm each (no reshapes, no broadcast). Needs [`fused_ok`]
/// inputs.
///
/// [`fused_ok`]: super::fused_ok
pub fn linear(x: &Tensor, weight: &Tensor, bias: &Tensor) -> Result<Tensor> {
    x.apply_op3(weight, bias, LinearOp)
}

struct LinearOp;

impl CustomOp3 for LinearOp {
    fn name(&self) -> &'static str {
        "evalloop-linear"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let op = self.name();
        let (x, w, b) = (f32_slice(s1, l1, op)?, f32_slice(s2, l2, op)?, f32_slice(s3, l3, op)?);
        let k = last_dim(l1, op)?;
        let (n, wk) = l2.shape().dims2()?;
        if wk != k || b.len() != n {
            bail!("{op}: input (.., {k}), weight ({n}, {wk}), bias {} do not fit", b.len());
        }
        let m = x.len() / k;
        let mut y = Vec::with_capacity(m * n);
        for _ in 0..m {
            y.extend_from_slice(b);
        }
        // y += x (m x k) * W^T (k x n); W^T[kk][j] = w[j * k + kk].
        sgemm((m, n, k), &mut y, true, x, (k, 1), w, (1, k))?;
        let mut dims = l1.dims().to_vec();
        *dims.last_mut().expect("checked") = n;
        Ok((CpuStorage::F32(y), Shape::from(dims)))
    }

    fn bwd(
        &self,
        x: &Tensor,
        weight: &Tensor,
        _bias: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        let n = weight.dim(0)?;
        let dx = grad.apply_op2_no_bwd(weight, &LinearBwd { weight_grad: false })?.reshape(x.shape())?;
        let dw = grad.apply_op2_no_bwd(&x.contiguous()?, &LinearBwd { weight_grad: true })?;
        let db = grad.apply_op1_no_bwd(&ColSum)?;
        debug_assert_eq!(db.dims(), [n]);
        Ok((Some(dx), Some(dw), Some(db)))
    }
}

/// The sums over rows of a contiguous f32 tensor viewed as `(rows, n)`, `n` its last dimension:
/// the bias gradient of [`linear`]. Each column is summed in row order from 0, as candle's
/// `sum(0)` does (same bits, test), but a whole row at a time (vectorised) and with the columns
/// split over rayon's threads, instead of one index computation per element.
struct ColSum;

impl CustomOp1 for ColSum {
    fn name(&self) -> &'static str {
        "evalloop-col-sum"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = f32_slice(s, l, self.name())?;
        let n = last_dim(l, self.name())?;
        let mut sums = vec![0f32; n];
        // Column blocks of 64 (a few cache lines), each task summing all rows of its block.
        const COLS: usize = 64;
        sums.par_chunks_mut(COLS).enumerate().for_each(|(b, acc)| {
            let cols = b * COLS..b * COLS + acc.len();
            for row in x.chunks_exact(n) {
                for (a, &v) in acc.iter_mut().zip(&row[cols.clone()]) {
                    *a += v;
                }
            }
        });
        Ok((CpuStorage::F32(sums), Shape::from(n)))
    }
}

/// The two gradient products of [`linear`]: with `g` `(m, n)`, `dx = g W` (`weight_grad: false`,
/// second operand W `(n, k)`) or `dW = g^T x` (`weight_grad: true`, second operand x `(m, k)`).
struct LinearBwd {
    weight_grad: bool,
}

impl CustomOp2 for LinearBwd {
    fn name(&self) -> &'static str {
        "evalloop-linear-bwd"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let op = self.name();
        let (g, o) = (f32_slice(s1, l1, op)?, f32_slice(s2, l2, op)?);
        let n = last_dim(l1, op)?;
        let m = g.len() / n;
        let k = last_dim(l2, op)?;
        if self.weight_grad {
            if o.len() != m * k {
                bail!("{op}: gradient has {m} rows, input {}", o.len() / k);
            }
            let mut dw = vec![0f32; n * k];
            // dW (n x k) = g^T (n x m) * x (m x k); g^T[j][r] = g[r * n + j].
            sgemm((n, k, m), &mut dw, false, g, (1, n), o, (k, 1))?;
            Ok((CpuStorage::F32(dw), Shape::from((n, k))))
        } else {
            if o.len() != n * k {
                bail!("{op}: weight has {} values, expected {n} x {k}", o.len());
            }
            let mut dx = vec![0f32; m * k];
            // dx (m x k) = g (m x n) * W (n x k).
            sgemm((m, k, n), &mut dx, false, g, (n, 1), o, (k, 1))?;
            Ok((CpuStorage::F32(dx), Shape::from((m, k))))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::test_support::{grads_of, max_diff};
    use candle_core::{Device, Var};

    #[test]
    fn linear_forward_and_gradients_match_candle_linear() {
        let dev = Device::Cpu;
        let x = Var::randn(0f32, 1.0, (3, 37, 24), &dev).unwrap();
        let w = Var::randn(0f32, 0.2, (40, 24), &dev).unwrap();
        let b = Var::randn(0f32, 0.5, 40, &dev).unwrap();
        let fused = linear(&x, &w, &b).unwrap();
        let reference = candle_nn::Linear::new(w.as_tensor().clone(), Some(b.as_tensor().clone()));
        let reference = candle_core::Module::forward(&reference, x.as_tensor()).unwrap();
        assert_eq!(fused.dims(), &[3, 37, 40]);
        assert!(max_diff(&fused, &reference) < 1e-5);
        let probe = Tensor::randn(0f32, 1.0, (3, 37, 40), &dev).unwrap();
        let gf = grads_of(&[&x, &w, &b], &fused, &probe);
        let gr = grads_of(&[&x, &w, &b], &reference, &probe);
        for (name, (a, r)) in ["x", "weight", "bias"].iter().zip(gf.iter().zip(&gr)) {
            assert_eq!(a.shape(), r.shape(), "{name}");
            assert!(max_diff(a, r) < 1e-4, "{name}: {}", max_diff(a, r));
        }
        // A 2-D input (the pooler and the classifier).
        let x2 = Tensor::randn(0f32, 1.0, (5, 24), &dev).unwrap();
        let y2 = linear(&x2, &w, &b).unwrap();
        let r2 = x2.matmul(&w.as_tensor().t().unwrap()).unwrap().broadcast_add(&b).unwrap();
        assert!(max_diff(&y2, &r2) < 1e-5);
    }

    /// The bias gradient's column sums give candle's `sum(0)` bits.
    #[test]
    fn column_sums_equal_candle_sum_over_rows() {
        let dev = Device::Cpu;
        for (rows, n) in [(1, 5), (7, 64), (300, 130), (2048, 384)] {
            let g = Tensor::randn(0f32, 1.0, (rows, n), &dev).unwrap();
            let ours = g.apply_op1_no_bwd(&ColSum).unwrap().to_vec1::<f32>().unwrap();
            let want = g.sum(0).unwrap().to_vec1::<f32>().unwrap();
            let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&ours), bits(&want), "{rows} x {n}");
        }
        let g3 = Tensor::randn(0f32, 1.0, (2, 3, 10), &dev).unwrap();
        let want = g3.reshape((6, 10)).unwrap().sum(0).unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(g3.apply_op1_no_bwd(&ColSum).unwrap().to_vec1::<f32>().unwrap(), want);
    }
}
