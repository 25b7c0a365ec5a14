//! Fused CPU f32 kernels with backward passes for training: linear layers with their bias,
//! LayerNorm, the attention's scaled,
//! masked softmax and exact (erf) GELU, each one pass over the data forward and one backward
//! where the composed candle ops take five to twenty; and AdamW's in-place update.
//!
//! Each op is a candle `CustomOp` whose `bwd` is itself a fused kernel, so the training graph
//! records one node per op instead of one per element-wise step. Rows are spread over rayon's
//! threads; reductions across rows (LayerNorm's weight and bias gradients) are summed in a fixed
//! order, so results do not depend on scheduling (the exact-resume test relies on this).
//! The kernels need contiguous f32 tensors on the CPU: [`fused_ok`] says when they apply, and the
//! callers in [`super::bert`] keep the composed ops for every other case.

use candle_core::{
    CpuStorage, CustomOp1, CustomOp2, CustomOp3, DType, InplaceOp2, InplaceOp3, Layout, Result, Shape, Tensor, bail,
};
use rayon::prelude::*;

/// Rows handed to one rayon task at a time (a row is a few hundred floats).
const ROWS_PER_TASK: usize = 16;

/// Elements handed to one rayon task at a time by the element-wise kernels.
const ELEMS_PER_TASK: usize = 16 * 1024;

/// True when the fused kernels can run on `t`: f32, on the CPU, contiguous.
pub fn fused_ok(t: &Tensor) -> bool {
    t.dtype() == DType::F32 && t.device().is_cpu() && t.is_contiguous()
}

fn f32_slice<'a>(s: &'a CpuStorage, l: &Layout, op: &str) -> Result<&'a [f32]> {
    let CpuStorage::F32(v) = s else { bail!("{op}: expected an f32 tensor") };
    let Some((a, b)) = l.contiguous_offsets() else { bail!("{op}: input is not contiguous") };
    Ok(&v[a..b])
}

fn f32_slice_mut<'a>(s: &'a mut CpuStorage, l: &Layout, op: &str) -> Result<&'a mut [f32]> {
    let CpuStorage::F32(v) = s else { bail!("{op}: expected f32") };
    let Some((a, b)) = l.contiguous_offsets() else { bail!("{op}: input is not contiguous") };
    Ok(&mut v[a..b])
}

fn last_dim(l: &Layout, op: &str) -> Result<usize> {
    match l.dims().last() {
        Some(&n) if n > 0 => Ok(n),
        _ => bail!("{op}: needs a non-empty last dimension, got {:?}", l.dims()),
    }
}

// ---------------------------------------------------------------------------------------------
// Linear

/// `x W^T + b` over the last dimension: `x` `(.., k)`, `weight` `(n, k)`, `bias` `(n,)` →
/// `(.., n)`, as one graph node: the bias is the initial value of the output that the matrix
/// product accumulates into (one gemm, no separate add), and the backward pass computes
/// dx = g W and dW = g^T x with one gemm each (no reshapes, no broadcast). Needs [`fused_ok`]
/// inputs.
pub fn linear(x: &Tensor, weight: &Tensor, bias: &Tensor) -> Result<Tensor> {
    x.apply_op3(weight, bias, LinearOp)
}

struct LinearOp;

fn parallelism() -> gemm::Parallelism {
    match candle_core::utils::get_num_threads() {
        0 | 1 => gemm::Parallelism::None,
        n => gemm::Parallelism::Rayon(n),
    }
}

/// `dst (m x n, row-major) = [dst +] lhs (m x k) * rhs (k x n)`, each operand given by its row
/// and column strides.
#[allow(clippy::too_many_arguments)]
fn sgemm(
    (m, n, k): (usize, usize, usize),
    dst: &mut [f32],
    accumulate: bool,
    lhs: &[f32],
    (lhs_rs, lhs_cs): (usize, usize),
    rhs: &[f32],
    (rhs_rs, rhs_cs): (usize, usize),
) -> Result<()> {
    let span = |rows: usize, cols: usize, rs: usize, cs: usize| (rows - 1) * rs + (cols - 1) * cs + 1;
    if m == 0 || n == 0 || k == 0 {
        return Ok(());
    }
    if dst.len() < m * n || lhs.len() < span(m, k, lhs_rs, lhs_cs) || rhs.len() < span(k, n, rhs_rs, rhs_cs) {
        bail!("sgemm: operands too small for {m} x {k} x {n}");
    }
    // SAFETY: the bounds of all three operands were checked above; dst does not alias them.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            lhs.as_ptr(),
            lhs_cs as isize,
            lhs_rs as isize,
            rhs.as_ptr(),
            rhs_cs as isize,
            rhs_rs as isize,
            if accumulate { 1.0 } else { 0.0 },
            1.0,
            false,
            false,
            false,
            parallelism(),
        )
    }
    Ok(())
}

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
        let db = grad.reshape(((), n))?.sum(0)?;
        Ok((Some(dx), Some(dw), Some(db)))
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

// ---------------------------------------------------------------------------------------------
// LayerNorm

/// `(x - mean) / sqrt(var + eps) * weight + bias` over the last dimension (biased variance, as
/// PyTorch's `nn.LayerNorm`), with a backward pass for `x`, `weight` and `bias`. `x` is
/// `(.., h)`, `weight` and `bias` `(h,)`. Needs [`fused_ok`] inputs.
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

// ---------------------------------------------------------------------------------------------
// Softmax

/// `softmax(scores * scale + mask)` over the last dimension, with a backward pass for `scores`
/// (the mask gets no gradient). `scores` is `(b, .., n)` and `mask` holds `b * n` additive
/// values (`(b, 1, 1, n)` for attention), broadcast over the middle dimensions. Needs
/// [`fused_ok`] inputs.
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

// ---------------------------------------------------------------------------------------------
// GELU

/// `erf(x)` in f32 as a rational function of `x` on [-4, 4] (Eigen's and XLA's
/// `generic_fast_erf_float`; outside that range erf is +-1 in f32): no branches and no calls,
/// so the loops over it vectorise. Largest error against `libm::erff` 3.6e-7 (3 ulp near 1).
#[inline(always)]
fn erf_f32(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let mut p = x2 * -2.726_142_3e-10 + 2.770_681_4e-8;
    p = x2 * p + -2.101_024e-6;
    p = x2 * p + -5.692_506_4e-5;
    p = x2 * p + -7.349_906e-4;
    p = x2 * p + -2.954_6e-3;
    p = x2 * p + -1.609_603_3e-2;
    let mut q = x2 * -1.456_607_2e-5 + -2.133_740_6e-4;
    q = x2 * q + -1.682_827e-3;
    q = x2 * q + -7.373_329e-3;
    q = x2 * q + -1.426_474e-2;
    x * p / q
}

/// Exact GELU, `0.5 x (1 + erf(x / sqrt 2))` (candle's `gelu_erf` formula, with the
/// vectorisable [`erf_f32`]), with a backward pass. Needs [`fused_ok`] input.
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
        let mut y = vec![0f32; x.len()];
        y.par_chunks_mut(ELEMS_PER_TASK).zip(x.par_chunks(ELEMS_PER_TASK)).for_each(|(y, x)| {
            for (y, &x) in y.iter_mut().zip(x) {
                *y = (erf_f32(x * std::f32::consts::FRAC_1_SQRT_2) + 1.0) * 0.5 * x;
            }
        });
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
        const INV_SQRT_2PI: f32 = 0.398_942_3;
        let mut dx = vec![0f32; x.len()];
        dx.par_chunks_mut(ELEMS_PER_TASK).zip(x.par_chunks(ELEMS_PER_TASK)).zip(g.par_chunks(ELEMS_PER_TASK)).for_each(
            |((dx, x), g)| {
                for ((d, &x), &g) in dx.iter_mut().zip(x).zip(g) {
                    let cdf = 0.5 * (1.0 + erf_f32(x * std::f32::consts::FRAC_1_SQRT_2));
                    *d = g * (cdf + x * (-0.5 * x * x).exp() * INV_SQRT_2PI);
                }
            },
        );
        Ok((CpuStorage::F32(dx), l1.shape().clone()))
    }
}

// ---------------------------------------------------------------------------------------------
// AdamW

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
    use candle_core::{D, Device, IndexOp, Var};

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap()
    }

    /// The gradients of `sum(f(..) * probe)` with respect to `vars`, for a fixed random `probe`.
    fn grads_of(vars: &[&Var], out: &Tensor, probe: &Tensor) -> Vec<Tensor> {
        let g = (out * probe).unwrap().sum_all().unwrap().backward().unwrap();
        vars.iter().map(|v| g.get(v.as_tensor()).expect("gradient").clone()).collect()
    }

    fn composed_layer_norm(x: &Tensor, w: &Tensor, b: &Tensor, eps: f64) -> Tensor {
        let mean = x.mean_keepdim(D::Minus1).unwrap();
        let c = x.broadcast_sub(&mean).unwrap();
        let var = c.sqr().unwrap().mean_keepdim(D::Minus1).unwrap();
        let inv = (var + eps).unwrap().sqrt().unwrap().recip().unwrap();
        c.broadcast_mul(&inv).unwrap().broadcast_mul(w).unwrap().broadcast_add(b).unwrap()
    }

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

    #[test]
    fn fast_erf_matches_libm() {
        let worst = (-60_000..=60_000)
            .map(|i| i as f32 * 1e-4)
            .map(|x| (erf_f32(x) - libm::erff(x)).abs())
            .fold(0f32, f32::max);
        assert!(worst < 5e-7, "{worst}");
        assert!((erf_f32(30.0) - 1.0).abs() < 2e-7 && (erf_f32(-30.0) + 1.0).abs() < 2e-7);
    }

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
