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

use candle_core::{
    CpuStorage, CustomOp1, CustomOp2, CustomOp3, DType, InplaceOp1, InplaceOp2, InplaceOp3, Layout, Result, Shape,
    Tensor, bail,
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

thread_local! {
    /// Set inside [`serial`]: this thread's fused linear layers run their gemm on this thread.
    static SERIAL: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f` with the fused linear layers' gemm on the calling thread only, for callers that
/// run several independent batches side by side (data parallelism) instead of splitting each
/// gemm over the threads. Other ops keep their own parallel loops.
pub fn serial<R>(f: impl FnOnce() -> R) -> R {
    struct Reset(bool);
    impl Drop for Reset {
        fn drop(&mut self) {
            SERIAL.with(|c| c.set(self.0));
        }
    }
    let _reset = Reset(SERIAL.with(|c| c.replace(true)));
    f()
}

fn parallelism() -> gemm::Parallelism {
    if SERIAL.with(|c| c.get()) {
        return gemm::Parallelism::None;
    }
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
// Attention

/// `exp(x)` in f32 without calls or branches (Cephes' `expf`: `x = n ln 2 + r`, a degree-6
/// polynomial in `r`, `2^n` built from its bits), so that loops over it vectorise. Within 2e-7
/// relative of `f32::exp` on [-87, 88] (test); 0 below -87 (`f32::exp` gives at most 1.7e-38
/// there), `exp(88)` above 88.
#[inline(always)]
fn exp_f32(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // ln 2 split in two so that n * LN2_HI is exact for |n| < 2^9.
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // 1.5 * 2^23: adding it rounds to the nearest integer, which lands in the low mantissa bits.
    const ROUND: f32 = 12_582_912.0;
    let xc = x.clamp(-87.0, 88.0);
    let t = xc * LOG2E + ROUND;
    let n = t - ROUND;
    let r = xc - n * LN2_HI - n * LN2_LO;
    let mut p = 1.987_569_2e-4f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5; // Cephes: 5.0000001201e-1, which rounds to 0.5 in f32
    let y = p * r * r + r + 1.0;
    let pow2n = f32::from_bits(((t.to_bits() as i32 - 0x4B40_0000 + 127) << 23) as u32);
    if x < -87.0 { 0.0 } else { y * pow2n }
}

/// Lanes of the explicit partial sums below (LLVM does not reorder a float sum by itself).
const LANES: usize = 16;

/// `sum(a * b)` with [`LANES`] partial sums, added in a fixed order.
#[inline(always)]
fn dot_lanes(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    let (ac, bc) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let (ar, br) = (ac.remainder(), bc.remainder());
    for (a, b) in ac.zip(bc) {
        for i in 0..LANES {
            acc[i] += a[i] * b[i];
        }
    }
    for (i, (a, b)) in ar.iter().zip(br).enumerate() {
        acc[i] += a * b;
    }
    acc.iter().sum()
}

/// One row of the forward pass: `p = softmax(x * scale + mask)`.
#[inline(always)]
fn softmax_row_generic(x: &[f32], mask: &[f32], scale: f32, p: &mut [f32]) {
    let mut mx = [f32::NEG_INFINITY; LANES];
    for ((p, &x), &m) in p.iter_mut().zip(x).zip(mask) {
        *p = x * scale + m;
    }
    let chunks = p.chunks_exact(LANES);
    for (i, &v) in chunks.remainder().iter().enumerate() {
        mx[i] = mx[i].max(v);
    }
    for c in chunks {
        for i in 0..LANES {
            mx[i] = mx[i].max(c[i]);
        }
    }
    let max = mx.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
    let mut acc = [0f32; LANES];
    let mut chunks = p.chunks_exact_mut(LANES);
    for c in &mut chunks {
        for i in 0..LANES {
            c[i] = exp_f32(c[i] - max);
            acc[i] += c[i];
        }
    }
    for (i, v) in chunks.into_remainder().iter_mut().enumerate() {
        *v = exp_f32(*v - max);
        acc[i] += *v;
    }
    let inv = 1.0 / acc.iter().sum::<f32>();
    for v in p.iter_mut() {
        *v *= inv;
    }
}

/// One row of the backward pass: with `d` the gradient of the dropped probabilities and `keep`
/// the dropout multipliers, `d = scale * p * (d k - sum(d k p))` in place.
#[inline(always)]
fn softmax_bwd_row_generic(p: &[f32], keep: Option<&[f32]>, scale: f32, d: &mut [f32]) {
    if let Some(k) = keep {
        for (d, &k) in d.iter_mut().zip(k) {
            *d *= k;
        }
    }
    let dot = dot_lanes(d, p);
    for (d, &p) in d.iter_mut().zip(p) {
        *d = scale * p * (*d - dot);
    }
}

/// `dst = p * keep` element-wise.
#[inline(always)]
fn mul_row_generic(p: &[f32], keep: &[f32], dst: &mut [f32]) {
    for ((d, &p), &k) in dst.iter_mut().zip(p).zip(keep) {
        *d = p * k;
    }
}

/// The row kernels compiled for a set of target features (`$features`). Rust does not contract
/// `a * b + c` into an FMA, so every variant gives the same bits as the baseline (SSE2) loops,
/// only with wider vectors (test).
macro_rules! row_kernels {
    ($name:ident, $features:literal) => {
        #[cfg(target_arch = "x86_64")]
        mod $name {
            #[target_feature(enable = $features)]
            pub(super) fn softmax_row(x: &[f32], mask: &[f32], scale: f32, p: &mut [f32]) {
                super::softmax_row_generic(x, mask, scale, p)
            }

            #[target_feature(enable = $features)]
            pub(super) fn softmax_bwd_row(p: &[f32], keep: Option<&[f32]>, scale: f32, d: &mut [f32]) {
                super::softmax_bwd_row_generic(p, keep, scale, d)
            }

            #[target_feature(enable = $features)]
            pub(super) fn mul_row(p: &[f32], keep: &[f32], dst: &mut [f32]) {
                super::mul_row_generic(p, keep, dst)
            }

            #[target_feature(enable = $features)]
            pub(super) fn gelu_row(x: &[f32], y: &mut [f32]) {
                super::gelu_row_generic(x, y)
            }

            #[target_feature(enable = $features)]
            pub(super) fn gelu_inplace_row(v: &mut [f32]) {
                super::gelu_inplace_row_generic(v)
            }

            #[target_feature(enable = $features)]
            pub(super) fn gelu_bwd_row(x: &[f32], g: &[f32], d: &mut [f32]) {
                super::gelu_bwd_row_generic(x, g, d)
            }
        }
    };
}

row_kernels!(avx2, "avx2,fma");
row_kernels!(avx512, "avx512f,avx2,fma");

/// Which compiled variant of the row kernels runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Level {
    /// The baseline loops.
    Base,
    /// AVX2 + FMA (8 lanes).
    Avx2,
    /// AVX-512F (16 lanes).
    Avx512,
}

/// The row kernels for this CPU, chosen once per call of an op.
#[derive(Clone, Copy)]
struct RowKernels {
    level: Level,
}

/// Calls kernel `$f` of the variant for `$level`, or the baseline loop `$generic`.
macro_rules! dispatch {
    ($level:expr, $f:ident, $generic:ident($($arg:expr),*)) => {{
        #[cfg(target_arch = "x86_64")]
        match $level {
            // SAFETY: `Level::Avx512` and `Level::Avx2` are only chosen (in `RowKernels::detect`)
            // on a CPU that has those features.
            Level::Avx512 => return unsafe { avx512::$f($($arg),*) },
            Level::Avx2 => return unsafe { avx2::$f($($arg),*) },
            Level::Base => {}
        }
        $generic($($arg),*)
    }};
}

impl RowKernels {
    fn detect() -> Self {
        RowKernels { level: Self::best() }
    }

    /// The best level this CPU runs.
    fn best() -> Level {
        #[cfg(target_arch = "x86_64")]
        {
            let avx2 = std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma");
            if avx2 && std::is_x86_feature_detected!("avx512f") {
                return Level::Avx512;
            }
            if avx2 {
                return Level::Avx2;
            }
        }
        Level::Base
    }

    fn softmax(self, x: &[f32], mask: &[f32], scale: f32, p: &mut [f32]) {
        dispatch!(self.level, softmax_row, softmax_row_generic(x, mask, scale, p))
    }

    fn softmax_bwd(self, p: &[f32], keep: Option<&[f32]>, scale: f32, d: &mut [f32]) {
        dispatch!(self.level, softmax_bwd_row, softmax_bwd_row_generic(p, keep, scale, d))
    }

    fn mul(self, p: &[f32], keep: &[f32], dst: &mut [f32]) {
        dispatch!(self.level, mul_row, mul_row_generic(p, keep, dst))
    }

    fn gelu(self, x: &[f32], y: &mut [f32]) {
        dispatch!(self.level, gelu_row, gelu_row_generic(x, y))
    }

    fn gelu_inplace(self, v: &mut [f32]) {
        dispatch!(self.level, gelu_inplace_row, gelu_inplace_row_generic(v))
    }

    fn gelu_bwd(self, x: &[f32], g: &[f32], d: &mut [f32]) {
        dispatch!(self.level, gelu_bwd_row, gelu_bwd_row_generic(x, g, d))
    }
}

/// A matrix operand of [`small_gemm`]: its first element and its row and column strides.
#[derive(Clone, Copy)]
struct Mat {
    ptr: *const f32,
    rs: usize,
    cs: usize,
}

/// The output of one (batch, head) task inside a shared `(b, s, heads * d)` buffer: the tasks
/// write disjoint column blocks, so the pointer is shared between threads.
#[derive(Clone, Copy)]
struct OutPtr(*mut f32);
// SAFETY: every task writes only its own (batch, head) block (see `head_offset`).
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

/// `dst (m x n, row stride dst_rs) = lhs (m x k) * rhs (k x n)` on the calling thread.
///
/// # Safety
/// All three operands must be valid for the given sizes and strides; `dst` must not overlap the
/// operands or memory another thread touches.
unsafe fn small_gemm((m, n, k): (usize, usize, usize), dst: *mut f32, dst_rs: usize, lhs: Mat, rhs: Mat) {
    // SAFETY: forwarded to the caller.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            1,
            dst_rs as isize,
            false,
            lhs.ptr,
            lhs.cs as isize,
            lhs.rs as isize,
            rhs.ptr,
            rhs.cs as isize,
            rhs.rs as isize,
            0.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        )
    }
}

/// Multi-head scaled dot-product attention with an additive key mask and dropout on the
/// probabilities, reading `q`, `k`, `v` `(b, s, heads * d)` as they come out of the linear
/// layers (no head split or merge copies) and returning the context `(b, s, heads * d)`:
/// for each (batch, head), `softmax(q k^T * scale + mask) * keep` times `v`. `mask` holds
/// `b * s` additive values (`(b, 1, 1, s)`), `keep` the dropout multipliers in the order of a
/// `(b, heads, s, s)` probability tensor (`None`: no dropout). One rayon task per (batch, head),
/// each running its two small matrix products on its own thread. When an input tracks a
/// gradient the probabilities are kept for the backward pass (dq, dk, dv; the mask gets none).
/// Needs [`fused_ok`] inputs.
pub fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: &Tensor,
    heads: usize,
    scale: f64,
    keep: Option<Vec<f32>>,
) -> Result<Tensor> {
    let (b, s, h) = q.dims3()?;
    if k.dims() != q.dims() || v.dims() != q.dims() {
        bail!("attention: q {:?}, k {:?}, v {:?} differ", q.dims(), k.dims(), v.dims());
    }
    if heads == 0 || h % heads != 0 {
        bail!("attention: hidden size {h} is not a multiple of {heads} heads");
    }
    if mask.elem_count() != b * s {
        bail!("attention: mask {:?} for {b} sequences of {s} tokens", mask.dims());
    }
    if let Some(kp) = &keep
        && kp.len() != b * heads * s * s
    {
        bail!("attention: dropout mask has {} values, expected {b} x {heads} x {s} x {s}", kp.len());
    }
    let op = AttentionOp {
        heads,
        scale: scale as f32,
        mask: mask.flatten_all()?.to_vec1::<f32>()?,
        keep,
        save: q.track_op() || k.track_op() || v.track_op(),
        probs: std::sync::Mutex::new(None),
    };
    q.apply_op3(k, v, op)
}

struct AttentionOp {
    heads: usize,
    scale: f32,
    /// Additive key mask, `b * s` values.
    mask: Vec<f32>,
    /// Dropout multipliers, `(b, heads, s, s)`.
    keep: Option<Vec<f32>>,
    /// Whether to keep the probabilities for the backward pass.
    save: bool,
    /// The probabilities before dropout, `(b, heads, s, s)`, when `save`.
    probs: std::sync::Mutex<Option<Vec<f32>>>,
}

/// Sizes of one attention call: sequence, heads, head size, hidden size.
#[derive(Clone, Copy)]
struct AttnDims {
    s: usize,
    heads: usize,
    d: usize,
    h: usize,
}

impl AttnDims {
    /// Offset of (batch, head) `t = batch * heads + head` in a `(b, s, h)` buffer.
    fn head_offset(self, t: usize) -> usize {
        (t / self.heads) * self.s * self.h + (t % self.heads) * self.d
    }

    /// The `(s, d)` block of (batch, head) `t` in a `(b, s, h)` buffer, as a gemm operand.
    fn head(self, buf: &[f32], t: usize) -> Mat {
        Mat { ptr: buf[self.head_offset(t)..].as_ptr(), rs: self.h, cs: 1 }
    }

    /// The same block transposed, `(d, s)`.
    fn head_t(self, buf: &[f32], t: usize) -> Mat {
        Mat { ptr: buf[self.head_offset(t)..].as_ptr(), rs: 1, cs: self.h }
    }
}

fn cpu_f32<'a>(s: &'a candle_core::Storage, l: &Layout, op: &str) -> Result<&'a [f32]> {
    match s {
        candle_core::Storage::Cpu(c) => f32_slice(c, l, op),
        _ => bail!("{op}: expected a CPU tensor"),
    }
}

impl CustomOp3 for AttentionOp {
    fn name(&self) -> &'static str {
        "evalloop-attention"
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
        let (q, k, v) = (f32_slice(s1, l1, op)?, f32_slice(s2, l2, op)?, f32_slice(s3, l3, op)?);
        let (b, s, h) = l1.shape().dims3()?;
        if k.len() != q.len() || v.len() != q.len() {
            bail!("{op}: q, k, v sizes differ");
        }
        let dims = AttnDims { s, heads: self.heads, d: h / self.heads, h };
        let kernels = RowKernels::detect();
        let mut out = vec![0f32; q.len()];
        let out_ptr = OutPtr(out.as_mut_ptr());
        let mask = &self.mask;
        let keep = self.keep.as_deref();
        // One (batch, head): `p` receives the probabilities, `scratch` is s x s.
        let task = |t: usize, p: &mut [f32], scratch: &mut [f32]| {
            let (s, d) = (dims.s, dims.d);
            let m = &mask[(t / dims.heads) * s..][..s];
            // SAFETY: q and k hold (b, s, h) values and t < b * heads; scratch is s x s.
            unsafe { small_gemm((s, s, d), scratch.as_mut_ptr(), s, dims.head(q, t), dims.head_t(k, t)) };
            for (x, p) in scratch.chunks_exact(s).zip(p.chunks_exact_mut(s)) {
                kernels.softmax(x, m, self.scale, p);
            }
            let lhs = match keep {
                Some(keep) => {
                    let keep = &keep[t * s * s..][..s * s];
                    kernels.mul(p, keep, scratch);
                    &*scratch
                }
                None => &*p,
            };
            let out = out_ptr;
            // SAFETY: lhs is s x s, v holds (b, s, h) values, and this task alone writes the
            // (s, d) block of (batch, head) t of `out`.
            unsafe {
                small_gemm(
                    (s, d, s),
                    out.0.add(dims.head_offset(t)),
                    dims.h,
                    Mat { ptr: lhs.as_ptr(), rs: s, cs: 1 },
                    dims.head(v, t),
                )
            };
        };
        let tasks = b * self.heads;
        if self.save {
            let mut probs = vec![0f32; tasks * s * s];
            probs
                .par_chunks_mut(s * s)
                .enumerate()
                .for_each_init(|| vec![0f32; s * s], |scratch, (t, p)| task(t, p, scratch));
            *self.probs.lock().map_err(|_| candle_core::Error::msg("attention probs poisoned"))? = Some(probs);
        } else {
            (0..tasks).into_par_iter().for_each_init(
                || vec![0f32; 2 * s * s],
                |buf, t| {
                    let (p, scratch) = buf.split_at_mut(s * s);
                    task(t, p, scratch)
                },
            );
        }
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    fn bwd(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let op = "evalloop-attention-bwd";
        let probs =
            self.probs.lock().map_err(|_| candle_core::Error::msg("attention probs poisoned"))?.take().ok_or_else(
                || candle_core::Error::msg("attention backward without saved probabilities, or run twice"),
            )?;
        let (q, k, v, grad) = (q.contiguous()?, k.contiguous()?, v.contiguous()?, grad.contiguous()?);
        let (b, s, h) = q.dims3()?;
        let dims = AttnDims { s, heads: self.heads, d: h / self.heads, h };
        let (qs, ql) = q.storage_and_layout();
        let (ks, kl) = k.storage_and_layout();
        let (vs, vl) = v.storage_and_layout();
        let (gs, gl) = grad.storage_and_layout();
        let (qd, kd, vd, gd) =
            (cpu_f32(&qs, ql, op)?, cpu_f32(&ks, kl, op)?, cpu_f32(&vs, vl, op)?, cpu_f32(&gs, gl, op)?);
        if gd.len() != qd.len() || probs.len() != b * self.heads * s * s {
            bail!("{op}: gradient or probabilities do not match q {:?}", q.dims());
        }
        let kernels = RowKernels::detect();
        let (mut dq, mut dk, mut dv) = (vec![0f32; qd.len()], vec![0f32; qd.len()], vec![0f32; qd.len()]);
        let (dq_ptr, dk_ptr, dv_ptr) = (OutPtr(dq.as_mut_ptr()), OutPtr(dk.as_mut_ptr()), OutPtr(dv.as_mut_ptr()));
        let keep = self.keep.as_deref();
        let scale = self.scale;
        probs.par_chunks(s * s).enumerate().for_each_init(
            || vec![0f32; 2 * s * s],
            |buf, (t, p)| {
                let (pd, ds) = buf.split_at_mut(s * s);
                let d = dims.d;
                let keep = keep.map(|kp| &kp[t * s * s..][..s * s]);
                let pd: &[f32] = match keep {
                    Some(kp) => {
                        kernels.mul(p, kp, pd);
                        pd
                    }
                    None => p,
                };
                let (dq, dk, dv) = (dq_ptr, dk_ptr, dv_ptr);
                let off = dims.head_offset(t);
                // SAFETY: pd, ds are s x s; q, k, v, grad hold (b, s, h) values and
                // t < b * heads; this task alone writes the (s, d) block t of dq, dk, dv.
                unsafe {
                    // dv = pd^T g
                    let pd_t = Mat { ptr: pd.as_ptr(), rs: 1, cs: s };
                    small_gemm((s, d, s), dv.0.add(off), h, pd_t, dims.head(gd, t));
                    // d(pd) = g v^T
                    small_gemm((s, s, d), ds.as_mut_ptr(), s, dims.head(gd, t), dims.head_t(vd, t));
                }
                for ((p, kp), ds) in p
                    .chunks_exact(s)
                    .enumerate()
                    .map(|(r, p)| (p, keep.map(|kp| &kp[r * s..][..s])))
                    .zip(ds.chunks_exact_mut(s))
                {
                    kernels.softmax_bwd(p, kp, scale, ds);
                }
                // SAFETY: as above.
                unsafe {
                    // dq = ds k, dk = ds^T q
                    let ds_m = Mat { ptr: ds.as_ptr(), rs: s, cs: 1 };
                    let ds_t = Mat { ptr: ds.as_ptr(), rs: 1, cs: s };
                    small_gemm((s, d, s), dq.0.add(off), h, ds_m, dims.head(kd, t));
                    small_gemm((s, d, s), dk.0.add(off), h, ds_t, dims.head(qd, t));
                }
            },
        );
        drop((qs, ks, vs, gs));
        let dev = q.device();
        Ok((
            Some(Tensor::from_vec(dq, q.shape(), dev)?),
            Some(Tensor::from_vec(dk, q.shape(), dev)?),
            Some(Tensor::from_vec(dv, q.shape(), dev)?),
        ))
    }
}

// ---------------------------------------------------------------------------------------------
// Dropout and the residual sum

/// `x * keep` (inverted dropout with the given multipliers, one per element of `x`: 0 or
/// `1 / (1 - p)`) as one graph node whose backward pass is `g * keep`. candle's `x * mask`
/// also computes, zero-fills and sums a gradient for the mask. Needs a [`fused_ok`] input.
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

/// The standard normal CDF `0.5 (1 + erf(x / sqrt 2))`, GELU's gate: `gelu(x) = x cdf(x)`.
#[inline(always)]
fn gelu_cdf(x: f32) -> f32 {
    (erf_f32(x * std::f32::consts::FRAC_1_SQRT_2) + 1.0) * 0.5
}

/// `y = gelu(x)` elementwise.
#[inline(always)]
fn gelu_row_generic(x: &[f32], y: &mut [f32]) {
    for (y, &x) in y.iter_mut().zip(x) {
        *y = gelu_cdf(x) * x;
    }
}

/// `v = gelu(v)` elementwise, in place.
#[inline(always)]
fn gelu_inplace_row_generic(v: &mut [f32]) {
    for v in v.iter_mut() {
        *v = gelu_cdf(*v) * *v;
    }
}

/// `d = g * gelu'(x)` elementwise: `g * (cdf(x) + x exp(-x^2 / 2) / sqrt(2 pi))`.
#[inline(always)]
fn gelu_bwd_row_generic(x: &[f32], g: &[f32], d: &mut [f32]) {
    const INV_SQRT_2PI: f32 = 0.398_942_3;
    for ((d, &x), &g) in d.iter_mut().zip(x).zip(g) {
        *d = g * (gelu_cdf(x) + x * (-0.5 * x * x).exp() * INV_SQRT_2PI);
    }
}

/// Exact GELU, `0.5 x (1 + erf(x / sqrt 2))` (candle's `gelu_erf` formula, with the
/// vectorisable [`erf_f32`]), with a backward pass. Needs [`fused_ok`] input.
pub fn gelu_erf(x: &Tensor) -> Result<Tensor> {
    x.apply_op1(GeluOp)
}

/// [`gelu_erf`] in place, for inference: `x` must not be tracked for gradients nor share its
/// storage with another tensor (a fresh layer output), and needs [`fused_ok`].
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

    /// Attention from candle's ops: head split, matmuls, composed softmax, dropout multiply,
    /// head merge.
    fn composed_attention(
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        mask: &Tensor,
        heads: usize,
        scale: f64,
        keep: Option<&Tensor>,
    ) -> Tensor {
        let (b, s, h) = q.dims3().unwrap();
        let split =
            |x: &Tensor| x.reshape((b, s, heads, h / heads)).unwrap().transpose(1, 2).unwrap().contiguous().unwrap();
        let scores = split(q).matmul(&split(k).t().unwrap()).unwrap();
        let z = (scores * scale).unwrap().broadcast_add(mask).unwrap();
        let max = z.max_keepdim(D::Minus1).unwrap().detach();
        let e = z.broadcast_sub(&max).unwrap().exp().unwrap();
        let mut p = e.broadcast_div(&e.sum_keepdim(D::Minus1).unwrap()).unwrap();
        if let Some(keep) = keep {
            p = p.mul(keep).unwrap();
        }
        p.matmul(&split(v)).unwrap().transpose(1, 2).unwrap().reshape((b, s, h)).unwrap()
    }

    #[test]
    fn attention_forward_and_gradients_match_the_composed_ops() {
        use rand::{Rng, SeedableRng};
        let dev = Device::Cpu;
        // Odd sizes: a sequence shorter than the kernels' lanes, one longer and not a multiple.
        for (b, s, heads, d) in [(3, 7, 3, 5), (2, 37, 2, 16)] {
            let h = heads * d;
            let q = Var::randn(0f32, 1.0, (b, s, h), &dev).unwrap();
            let k = Var::randn(0f32, 1.0, (b, s, h), &dev).unwrap();
            let v = Var::randn(0f32, 1.0, (b, s, h), &dev).unwrap();
            // The last sequence ends in 3 padding tokens, another in 1.
            let mut m = vec![0f32; b * s];
            for j in s - 3..s {
                m[(b - 1) * s + j] = f32::MIN;
            }
            m[s - 1] = f32::MIN;
            let mask = Tensor::from_vec(m, (b, 1, 1, s), &dev).unwrap();
            let scale = 1.0 / (d as f64).sqrt();
            // Dropout 0.1 from a fixed seed.
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(42);
            let keep: Vec<f32> =
                (0..b * heads * s * s).map(|_| if rng.random::<f32>() < 0.1 { 0.0 } else { 1.0 / 0.9 }).collect();
            let keep_t = Tensor::from_vec(keep.clone(), (b, heads, s, s), &dev).unwrap();
            let probe = Tensor::randn(0f32, 1.0, (b, s, h), &dev).unwrap();
            for dropout in [false, true] {
                let kv = dropout.then(|| keep.clone());
                let fused = attention(&q, &k, &v, &mask, heads, scale, kv).unwrap();
                let composed = composed_attention(&q, &k, &v, &mask, heads, scale, dropout.then_some(&keep_t));
                assert_eq!(fused.dims(), &[b, s, h]);
                assert!(max_diff(&fused, &composed) < 1e-5, "{s}: {}", max_diff(&fused, &composed));
                let gf = grads_of(&[&q, &k, &v], &fused, &probe);
                let gc = grads_of(&[&q, &k, &v], &composed, &probe);
                for (name, (a, c)) in ["q", "k", "v"].iter().zip(gf.iter().zip(&gc)) {
                    assert!(max_diff(a, c) < 1e-4, "{s} {name}: {}", max_diff(a, c));
                }
                // Padded keys get no gradient.
                let dk = gf[1].i((b - 1, s - 1)).unwrap().abs().unwrap().sum_all().unwrap();
                assert_eq!(dk.to_scalar::<f32>().unwrap(), 0.0);
            }
            // Plain tensors (scoring): nothing saved, the same values.
            let (qt, kt, vt) = (q.as_tensor().detach(), k.as_tensor().detach(), v.as_tensor().detach());
            let plain = attention(&qt, &kt, &vt, &mask, heads, scale, None).unwrap();
            let tracked = attention(&q, &k, &v, &mask, heads, scale, None).unwrap();
            assert_eq!(
                plain.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                tracked.flatten_all().unwrap().to_vec1::<f32>().unwrap()
            );
        }
    }

    #[test]
    fn fast_exp_matches_std() {
        let worst = (-870_000..=880_000)
            .map(|i| i as f32 * 1e-4)
            .map(|x| ((exp_f32(x) - x.exp()) / x.exp()).abs())
            .fold(0f32, f32::max);
        assert!(worst < 3e-7, "{worst}");
        assert_eq!(exp_f32(0.0), 1.0);
        assert_eq!(exp_f32(-87.5), 0.0);
        assert_eq!(exp_f32(f32::MIN), 0.0);
        assert!(exp_f32(f32::NAN).is_nan());
    }

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

    /// Every compiled variant of the row kernels this CPU runs (baseline, AVX2, AVX-512) gives
    /// the same bits as the baseline loops, on rows of lengths around the 16-lane blocks.
    #[test]
    fn row_kernels_give_the_same_bits_on_every_level() {
        let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        let best = RowKernels::best();
        let levels: Vec<Level> = [Level::Base, Level::Avx2, Level::Avx512].into_iter().filter(|l| *l <= best).collect();
        for n in [1, 15, 16, 17, 128, 1003] {
            let x: Vec<f32> = (0..n).map(|i| (i as f32 - n as f32 / 2.0) * 0.013).collect();
            let g: Vec<f32> = (0..n).map(|i| ((i * 7919) % 101) as f32 / 50.0 - 1.0).collect();
            let mask: Vec<f32> = (0..n).map(|i| if i % 7 == 3 { f32::NEG_INFINITY } else { 0.0 }).collect();
            let keep: Vec<f32> = (0..n).map(|i| if i % 5 == 1 { 0.0 } else { 1.25 }).collect();
            let run = |k: RowKernels| {
                let mut out = vec![vec![0f32; n]; 6];
                k.softmax(&x, &mask, 0.7, &mut out[0]);
                out[1] = g.clone();
                k.softmax_bwd(&out[0].clone(), Some(&keep), 0.7, &mut out[1]);
                out[2] = g.clone();
                k.softmax_bwd(&out[0].clone(), None, 0.7, &mut out[2]);
                k.mul(&x, &keep, &mut out[3]);
                k.gelu(&x, &mut out[4]);
                k.gelu_bwd(&x, &g, &mut out[5]);
                out.iter().map(|v| bits(v)).collect::<Vec<_>>()
            };
            let base = run(RowKernels { level: Level::Base });
            // (A one-value row has a zero softmax gradient.)
            assert!(n == 1 || base.iter().all(|v| v.iter().any(|&b| b != 0)), "n = {n}: a kernel wrote only zeros");
            for &level in &levels[1..] {
                assert_eq!(run(RowKernels { level }), base, "n = {n}, {level:?}");
            }
        }
        eprintln!("row kernel levels checked: {levels:?}");
    }

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
