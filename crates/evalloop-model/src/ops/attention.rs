//! Fused multi-head attention from q, k, v to the context, one rayon task per (batch, head),
//! with its backward pass.

use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor, bail};
use rayon::prelude::*;

use super::f32_slice;
use super::matmul::{Mat, small_gemm};
use super::simd::RowKernels;

/// The output of one (batch, head) task inside a shared `(b, s, heads * d)` buffer: the tasks
/// write disjoint column blocks, so the pointer is shared between threads.
#[derive(Clone, Copy)]
struct OutPtr(*mut f32);
// SAFETY: every task writes only its own (batch, head) block (see `head_offset`).
unsafe impl Send for OutPtr {}
// SAFETY: as for `Send`: no two tasks touch the same element.
unsafe impl Sync for OutPtr {}

/// Multi-head scaled dot-product attention with an additive mask (per key, or per query and
/// key) and dropout on the probabilities, reading `q`, `k`, `v` `(b, s, heads * d)` as they come out of the linear
/// layers (no head split or merge copies) and returning the context `(b, s, heads * d)`:
/// for each (batch, head), `softmax(q k^T * scale + mask) * keep` times `v`. `mask` holds
/// `b * s` additive values (`(b, 1, 1, s)`: one per key) or `b * s * s` (`(b, 1, s, s)`: one per
/// query and key, as a sliding window needs), `keep` the dropout multipliers in the order of a
/// `(b, heads, s, s)` probability tensor (`None`: no dropout). One rayon task per (batch, head),
/// each running its two small matrix products on its own thread. When an input tracks a
/// gradient the probabilities are kept for the backward pass (dq, dk, dv; the mask gets none).
/// Needs [`fused_ok`] inputs.
///
/// [`fused_ok`]: super::fused_ok
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
    let per_query = mask.elem_count() == b * s * s && s > 1;
    if mask.elem_count() != b * s && !per_query {
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
        per_query,
        keep,
        save: q.track_op() || k.track_op() || v.track_op(),
        probs: std::sync::Mutex::new(None),
    };
    q.apply_op3(k, v, op)
}

struct AttentionOp {
    heads: usize,
    scale: f32,
    /// Additive mask: `b * s` values (per key), or `b * s * s` when `per_query`.
    mask: Vec<f32>,
    /// Whether `mask` has a row per query.
    per_query: bool,
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

/// The f32 values of a contiguous tensor's storage, which must be on the CPU.
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
            let batch = t / dims.heads;
            // SAFETY: q and k hold (b, s, h) values and t < b * heads; scratch is s x s.
            unsafe { small_gemm((s, s, d), scratch.as_mut_ptr(), s, dims.head(q, t), dims.head_t(k, t)) };
            for (i, (x, p)) in scratch.chunks_exact(s).zip(p.chunks_exact_mut(s)).enumerate() {
                let m = if self.per_query { &mask[(batch * s + i) * s..][..s] } else { &mask[batch * s..][..s] };
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::test_support::{grads_of, max_diff};
    use candle_core::{D, Device, IndexOp, Var};

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
            // Per query as well: the key mask and a window of 2 tokens either side.
            let rows: Vec<f32> = (0..b * s * s)
                .map(|x| {
                    let (batch, i, j) = (x / (s * s), x / s % s, x % s);
                    if i.abs_diff(j) > 2 { f32::MIN } else { m[batch * s + j] }
                })
                .collect();
            let key_mask = Tensor::from_vec(m, (b, 1, 1, s), &dev).unwrap();
            let row_mask = Tensor::from_vec(rows, (b, 1, s, s), &dev).unwrap();
            let scale = 1.0 / (d as f64).sqrt();
            // Dropout 0.1 from a fixed seed.
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(42);
            let keep: Vec<f32> =
                (0..b * heads * s * s).map(|_| if rng.random::<f32>() < 0.1 { 0.0 } else { 1.0 / 0.9 }).collect();
            let keep_t = Tensor::from_vec(keep.clone(), (b, heads, s, s), &dev).unwrap();
            let probe = Tensor::randn(0f32, 1.0, (b, s, h), &dev).unwrap();
            for (dropout, per_query) in [(false, false), (true, false), (false, true), (true, true)] {
                let mask = if per_query { &row_mask } else { &key_mask };
                let kv = dropout.then(|| keep.clone());
                let fused = attention(&q, &k, &v, mask, heads, scale, kv).unwrap();
                let composed = composed_attention(&q, &k, &v, mask, heads, scale, dropout.then_some(&keep_t));
                assert_eq!(fused.dims(), &[b, s, h]);
                assert!(max_diff(&fused, &composed) < 1e-5, "{s}: {}", max_diff(&fused, &composed));
                let gf = grads_of(&[&q, &k, &v], &fused, &probe);
                let gc = grads_of(&[&q, &k, &v], &composed, &probe);
                for (name, (a, c)) in ["q", "k", "v"].iter().zip(gf.iter().zip(&gc)) {
                    assert!(max_diff(a, c) < 1e-4, "{s} {name}: {}", max_diff(a, c));
                }
                if per_query {
                    // A padding query whose whole window is padding spreads over every key,
                    // as the composed ops do: no zero to check.
                    continue;
                }
                // Padded keys get no gradient.
                let dk = gf[1].i((b - 1, s - 1)).unwrap().abs().unwrap().sum_all().unwrap();
                assert_eq!(dk.to_scalar::<f32>().unwrap(), 0.0);
            }
            // Plain tensors (scoring): nothing saved, the same values.
            let (qt, kt, vt) = (q.as_tensor().detach(), k.as_tensor().detach(), v.as_tensor().detach());
            let plain = attention(&qt, &kt, &vt, &key_mask, heads, scale, None).unwrap();
            let tracked = attention(&q, &k, &v, &key_mask, heads, scale, None).unwrap();
            assert_eq!(
                plain.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                tracked.flatten_all().unwrap().to_vec1::<f32>().unwrap()
            );
        }
    }
}
