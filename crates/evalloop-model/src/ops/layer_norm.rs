//! Fused LayerNorm over the last dimension, with a backward pass for the input, weight and bias
//! whose cross-row sums are added in a fixed order.

use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor, bail};
use rayon::prelude::*;

use super::{ROWS_PER_TASK, f32_slice, last_dim};

/// `(x - mean) / sqrt(var + eps) * weight + bias` over the last dimension (biased variance, as
/// PyTorch's `nn.LayerNorm`), with a backward pass for `x`, `weight` and `bias`. `x` is
/// `(.., h)`, `weight` and `bias` `(h,)`. Needs [`fused_ok`] inputs.
///
/// [`fused_ok`]: super::fused_ok
pub fn layer_norm(x: &Tensor, weight: &Tensor, bias: &Tensor, eps: f64) -> Result<Tensor> {
    x.apply_op3(weight, bias, LayerNormOp { eps: eps as f32 })
}

struct LayerNormOp {
    eps: f32,
}

/// Mean and 1/std of one row.
#[inline]
fn row_stats(x: &[f32], eps: f32) -> (f32, f32) {
    let n = x.len() as f32;
    let mean = x.iter().sum::<f32>() / n;
    let var = x.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n;
    (mean, 1.0 / (var + eps).sqrt())
}

impl CustomOp3 for LayerNormOp {
    fn name(&self) -> &'static str {
        "evalloop-layer-norm"
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
        let h = last_dim(l1, op)?;
        if w.len() != h || b.len() != h {
            bail!("{op}: weight {} / bias {} do not match the last dimension {h}", w.len(), b.len());
        }
        let mut y = vec![0f32; x.len()];
        y.par_chunks_mut(h).zip(x.par_chunks(h)).with_min_len(ROWS_PER_TASK).for_each(|(y, x)| {
            let (mean, rstd) = row_stats(x, self.eps);
            for i in 0..h {
                y[i] = (x[i] - mean) * rstd * w[i] + b[i];
            }
        });
        Ok((CpuStorage::F32(y), l1.shape().clone()))
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
        let x = x.contiguous()?;
        let h = weight.elem_count();
        let rows = x.elem_count() / h;
        // One tensor holding dx (rows x h), then dweight and dbias (one row each).
        let all = x.apply_op3_no_bwd(weight, &grad, &LayerNormBwd { eps: self.eps })?;
        let dx = all.narrow(0, 0, rows)?.reshape(x.shape())?;
        let dw = all.get(rows)?;
        let db = all.get(rows + 1)?;
        Ok((Some(dx), Some(dw), Some(db)))
    }
}

struct LayerNormBwd {
    eps: f32,
}

impl CustomOp3 for LayerNormBwd {
    fn name(&self) -> &'static str {
        "evalloop-layer-norm-bwd"
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
        let (x, w, g) = (f32_slice(s1, l1, op)?, f32_slice(s2, l2, op)?, f32_slice(s3, l3, op)?);
        let h = w.len();
        let rows = x.len() / h;
        let mut out = vec![0f32; (rows + 2) * h];
        let (dx, _) = out.split_at_mut(rows * h);
        let block = ROWS_PER_TASK * h;
        // Per-block partial sums of dweight and dbias, in block order.
        let partials: Vec<Vec<f32>> = dx
            .par_chunks_mut(block)
            .zip(x.par_chunks(block))
            .zip(g.par_chunks(block))
            .map(|((dx, x), g)| {
                let mut acc = vec![0f32; 2 * h];
                let (dw, db) = acc.split_at_mut(h);
                let mut xhat = vec![0f32; h];
                for ((dx, x), g) in dx.chunks_mut(h).zip(x.chunks(h)).zip(g.chunks(h)) {
                    let (mean, rstd) = row_stats(x, self.eps);
                    let (mut sum_gy, mut sum_gy_xhat) = (0f32, 0f32);
                    for i in 0..h {
                        xhat[i] = (x[i] - mean) * rstd;
                        let gy = g[i] * w[i];
                        sum_gy += gy;
                        sum_gy_xhat += gy * xhat[i];
                        dw[i] += g[i] * xhat[i];
                        db[i] += g[i];
                    }
                    let (mg, mgx) = (sum_gy / h as f32, sum_gy_xhat / h as f32);
                    for i in 0..h {
                        dx[i] = rstd * (g[i] * w[i] - mg - xhat[i] * mgx);
                    }
                }
                acc
            })
            .collect();
        let tail = &mut out[rows * h..];
        for p in &partials {
            for (t, v) in tail.iter_mut().zip(p) {
                *t += v;
            }
        }
        Ok((CpuStorage::F32(out), Shape::from((rows + 2, h))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::test_support::{grads_of, max_diff};
    use candle_core::{D, Device, Var};

    fn composed_layer_norm(x: &Tensor, w: &Tensor, b: &Tensor, eps: f64) -> Tensor {
        let mean = x.mean_keepdim(D::Minus1).unwrap();
        let c = x.broadcast_sub(&mean).unwrap();
        let var = c.sqr().unwrap().mean_keepdim(D::Minus1).unwrap();
        let inv = (var + eps).unwrap().sqrt().unwrap().recip().unwrap();
        c.broadcast_mul(&inv).unwrap().broadcast_mul(w).unwrap().broadcast_add(b).unwrap()
    }

    #[test]
    fn layer_norm_forward_and_gradients_match_the_composed_ops() {
        let dev = Device::Cpu;
        // 37 rows: not a multiple of the rows per task.
        let x = Var::randn(0.5f32, 2.0, (37, 48), &dev).unwrap();
        let w = Var::randn(1f32, 0.3, 48, &dev).unwrap();
        let b = Var::randn(0f32, 0.3, 48, &dev).unwrap();
        let probe = Tensor::randn(0f32, 1.0, (37, 48), &dev).unwrap();
        let fused = layer_norm(&x, &w, &b, 1e-12).unwrap();
        let composed = composed_layer_norm(&x, &w, &b, 1e-12);
        assert!(max_diff(&fused, &composed) < 1e-5);
        let gf = grads_of(&[&x, &w, &b], &fused, &probe);
        let gc = grads_of(&[&x, &w, &b], &composed, &probe);
        for (name, (a, c)) in ["x", "weight", "bias"].iter().zip(gf.iter().zip(&gc)) {
            assert_eq!(a.shape(), c.shape(), "{name}");
            assert!(max_diff(a, c) < 1e-4, "{name}: {}", max_diff(a, c));
        }
    }

    #[test]
    fn layer_norm_gradient_matches_finite_differences() {
        let dev = Device::Cpu;
        let x0: Vec<f32> = (0..12).map(|i| ((i * 7 % 5) as f32 - 2.0) * 0.7 + 0.1 * i as f32).collect();
        let w = Tensor::new(&[1.2f32, -0.4, 0.9, 2.0, 0.5, -1.1], &dev).unwrap();
        let b = Tensor::new(&[0.1f32, 0.0, -0.3, 0.2, 0.0, 0.4], &dev).unwrap();
        let probe = Tensor::new(&[0.3f32, -1.0, 0.5, 0.8, -0.2, 1.5, 0.7, 0.1, -0.9, 0.4, 1.1, -0.6], &dev)
            .unwrap()
            .reshape((2, 6))
            .unwrap();
        let f = |x: &[f32]| -> f64 {
            let x = Tensor::new(x, &dev).unwrap().reshape((2, 6)).unwrap();
            let y = layer_norm(&x, &w, &b, 1e-5).unwrap();
            (y * &probe).unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap() as f64
        };
        let xv = Var::from_tensor(&Tensor::new(x0.as_slice(), &dev).unwrap().reshape((2, 6)).unwrap()).unwrap();
        let y = layer_norm(&xv, &w, &b, 1e-5).unwrap();
        let g = (y * &probe).unwrap().sum_all().unwrap().backward().unwrap();
        let gx = g.get(xv.as_tensor()).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        for i in 0..x0.len() {
            let h = 1e-2f32;
            let (mut up, mut dn) = (x0.clone(), x0.clone());
            up[i] += h;
            dn[i] -= h;
            let fd = (f(&up) - f(&dn)) / (2.0 * h as f64);
            assert!((fd - gx[i] as f64).abs() < 2e-3, "x[{i}]: fd {fd} vs {}", gx[i]);
        }
    }
}
