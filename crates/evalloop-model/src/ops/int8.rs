//! Int8 inference for the linear layers: `x W^T + b` with `W` quantized once per output row,
//! symmetric (`q = round(w / s_w)`, `s_w = max |w| / 127`), and `x` per input row at each call,
//! asymmetric over the row's range (`u = round((x - min) / s_x)` in 0..=255, `s_x = (max - min) /
//! 255`: the output of GELU, mostly above -0.17, keeps all 256 steps). The byte products are
//! summed exactly in 32-bit integers, and `sum_k x w = s_x s_w sum_k u q + min s_w sum_k q`.
//!
//! The integer products run on AVX-512 VNNI (`vpdpbusd`, unsigned by signed bytes: 64 products
//! per instruction, against 16 f32 multiply-adds for an AVX-512 FMA) where the CPU has it, on
//! AVX2 otherwise (`vpmaddwd` on the bytes widened to 16 bits: 16 exact products per instruction,
//! from a 16-bit copy of the weights made on first use), and on a portable loop without either;
//! all give the same integers and, with the same epilogue operations, the same f32 bits (test).
//!
//! Inference only: [`linear_int8`] records no gradient. Used by [`crate::bert::dense`] inside
//! [`int8`] (set by [`crate::predict`] when scoring with `Precision::Int8`).

use std::sync::Arc;

use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor, bail};
use rayon::prelude::*;

use super::{f32_slice, last_dim};

thread_local! {
    /// Set inside [`int8`]: this thread's linear layers use their int8 weights.
    static INT8: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f` with this thread's linear layers in int8 when `on` (see the module docs).
pub fn int8<R>(on: bool, f: impl FnOnce() -> R) -> R {
    super::matmul::with_flag(&INT8, on, f)
}

/// Whether the int8 products run on AVX-512 VNNI here, the kernel that makes int8 faster than
/// f32 (the AVX2 and portable kernels give the same results, more slowly).
pub fn int8_has_vnni() -> bool {
    #[cfg(target_arch = "x86_64")]
    return matches!(Kernel::detect(), Kernel::Vnni);
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// True inside [`int8`] with `on`.
pub fn int8_enabled() -> bool {
    INT8.with(|c| c.get())
}

/// Output columns of one block of the packed weights: four AVX-512 registers of 16 i32 sums.
const BLOCK: usize = 64;
/// Rows of one register tile: 6 rows x 4 registers = 24 accumulators, within the 32 registers.
const TILE_ROWS: usize = 6;
/// Rows handed to one rayon task (a whole number of tiles).
const TASK_ROWS: usize = 16 * TILE_ROWS;

/// A linear layer's weight and bias ready for [`linear_int8`].
#[derive(Debug)]
pub struct Int8Weights {
    /// Output and input sizes.
    n: usize,
    k: usize,
    /// `k` rounded up to a multiple of 4 (one `vpdpbusd` lane takes 4 bytes).
    kp: usize,
    /// `1 / s_c` for each input when the weight's columns were multiplied by `s_c`
    /// ([`Int8Weights::new`]): the inputs are multiplied by it before they are quantized.
    inv_smooth: Option<Vec<f32>>,
    /// The quantized weight, in blocks of [`BLOCK`] output columns; within a block, for each
    /// group of 4 inputs, 4 registers of 16 columns x 4 bytes (zero-padded past `n` and `k`).
    packed: Vec<i8>,
    /// Per output column, padded with zeros to whole blocks: the scale of its weights, the bias,
    /// and `s_w sum_k q[j][k]` (the term the activations' minimum multiplies).
    scale: Vec<f32>,
    bias: Vec<f32>,
    colsum: Vec<f32>,
    /// The AVX2 kernel's copy of the weights as 16-bit integers, made on its first call
    /// ([`Int8Weights::packed16`]).
    #[cfg(target_arch = "x86_64")]
    packed16: std::sync::OnceLock<Vec<i16>>,
}

impl Int8Weights {
    /// Quantizes `weight` (`n x k`, row-major) with one scale per output row; with `smooth`
    /// (`k` positive factors), column `c` is multiplied by `smooth[c]` first and each input is
    /// divided by it at every call (the product does not change; the quantization steps do).
    pub fn new(weight: &[f32], bias: Option<&[f32]>, n: usize, k: usize, smooth: Option<&[f32]>) -> Result<Self> {
        if weight.len() != n * k || bias.is_some_and(|b| b.len() != n) || n == 0 || k == 0 {
            bail!("int8 weights: {} weights and a bias of {:?} for {n} x {k}", weight.len(), bias.map(|b| b.len()));
        }
        if smooth.is_some_and(|s| s.len() != k || s.iter().any(|v| !(v.is_finite() && *v > 0.0))) {
            bail!("int8 weights: the smoothing factors must be {k} positive numbers");
        }
        let scaled: Vec<f32>;
        let weight = match smooth {
            None => weight,
            Some(s) => {
                scaled = weight.chunks_exact(k).flat_map(|row| row.iter().zip(s).map(|(w, s)| w * s)).collect();
                &scaled
            }
        };
        let inv_smooth = smooth.map(|s| s.iter().map(|v| 1.0 / v).collect());
        let kp = k.div_ceil(4) * 4;
        let blocks = n.div_ceil(BLOCK);
        let np = blocks * BLOCK;
        let mut packed = vec![0i8; blocks * kp * BLOCK];
        let mut scale = vec![0f32; np];
        let mut colsum = vec![0f32; np];
        let mut bias_p = vec![0f32; np];
        for j in 0..n {
            let row = &weight[j * k..(j + 1) * k];
            let max = row.iter().fold(0f32, |m, v| m.max(v.abs()));
            let s = max / 127.0;
            scale[j] = s;
            let inv = if s > 0.0 { 1.0 / s } else { 0.0 };
            let mut sum = 0i32;
            for (kk, &w) in row.iter().enumerate() {
                let q = (w * inv).round().clamp(-127.0, 127.0) as i8;
                sum += i32::from(q);
                packed[packed_at(kp, j, kk)] = q;
            }
            colsum[j] = s * sum as f32;
            if let Some(bias) = bias {
                bias_p[j] = bias[j];
            }
        }
        Ok(Self {
            n,
            k,
            kp,
            inv_smooth,
            packed,
            scale,
            bias: bias_p,
            colsum,
            #[cfg(target_arch = "x86_64")]
            packed16: std::sync::OnceLock::new(),
        })
    }

    /// The quantized weight of output `j` and input `kk` (zero in the padding).
    fn q(&self, j: usize, kk: usize) -> i8 {
        self.packed[packed_at(self.kp, j, kk)]
    }

    /// The weights for the AVX2 kernel: in blocks of [`avx2::COLS`] output columns; within a
    /// block, for each pair of inputs, 4 registers of 8 columns x 2 16-bit values.
    #[cfg(target_arch = "x86_64")]
    fn packed16(&self) -> &[i16] {
        self.packed16.get_or_init(|| {
            let blocks = self.n.div_ceil(avx2::COLS);
            let pairs = self.kp / 2;
            let mut out = vec![0i16; blocks * pairs * avx2::COLS * 2];
            for b in 0..blocks {
                for p in 0..pairs {
                    for c in 0..avx2::COLS {
                        let j = b * avx2::COLS + c;
                        if j >= self.n {
                            break;
                        }
                        let at = ((b * pairs + p) * avx2::COLS + c) * 2;
                        out[at] = i16::from(self.q(j, 2 * p));
                        out[at + 1] = i16::from(self.q(j, 2 * p + 1));
                    }
                }
            }
            out
        })
    }
}

/// Where the weight of output `j` and input `kk` lies in [`Int8Weights`]' `packed` (inputs padded
/// to `kp`): block `j / BLOCK`, input group `kk / 4`, register and lane of `j % BLOCK`, byte
/// `kk % 4`. The next group of 4 inputs of the same output is `BLOCK * 4` bytes further on.
fn packed_at(kp: usize, j: usize, kk: usize) -> usize {
    let (b, c) = (j / BLOCK, j % BLOCK);
    let (reg, lane) = (c / 16, c % 16);
    ((b * (kp / 4) + kk / 4) * 4 + reg) * 64 + lane * 4 + kk % 4
}

/// `x W^T + b` over the last dimension of a contiguous f32 CPU tensor `x` `(.., k)` → `(.., n)`
/// with int8 weights and per-row int8 activations (module docs). No gradient.
pub fn linear_int8(x: &Tensor, w: &Arc<Int8Weights>) -> Result<Tensor> {
    x.apply_op1_no_bwd(&Int8Linear(w.clone()))
}

struct Int8Linear(Arc<Int8Weights>);

impl CustomOp1 for Int8Linear {
    fn name(&self) -> &'static str {
        "evalloop-linear-int8"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let op = self.name();
        let x = f32_slice(s, l, op)?;
        let w = &*self.0;
        let k = last_dim(l, op)?;
        if k != w.k {
            bail!("{op}: input (.., {k}), weight ({}, {})", w.n, w.k);
        }
        let m = x.len() / k;
        let mut y = vec![0f32; m * w.n];
        let kernel = Kernel::detect();
        let run = |(xs, ys): (&[f32], &mut [f32])| {
            let rows = xs.len() / k;
            let mut q = vec![0u8; rows * w.kp];
            let mut sx = vec![(0f32, 0f32); rows];
            kernel.quantize(xs, k, w.kp, w.inv_smooth.as_deref(), &mut q, &mut sx);
            kernel.rows(w, &q, &sx, ys);
        };
        let (xc, yc) = (TASK_ROWS * k, TASK_ROWS * w.n);
        if super::matmul::is_serial() || m <= TASK_ROWS {
            x.chunks(xc).zip(y.chunks_mut(yc)).for_each(run);
        } else {
            x.par_chunks(xc).zip(y.par_chunks_mut(yc)).for_each(run);
        }
        let mut dims = l.dims().to_vec();
        *dims.last_mut().expect("checked") = w.n;
        Ok((CpuStorage::F32(y), Shape::from(dims)))
    }
}

/// Each row of `x` (`rows x k`), times `inv` element by element when given, as bytes
/// `round((x - min) / s)` into `q` (`rows x kp`; the padding meets zero weights), with `(s,
/// min)`, `s = (max - min) / 255`, into `sx`.
fn quantize_rows(x: &[f32], k: usize, kp: usize, inv: Option<&[f32]>, q: &mut [u8], sx: &mut [(f32, f32)]) {
    let mut scaled = vec![0f32; if inv.is_some() { k } else { 0 }];
    for ((row, qr), s) in x.chunks_exact(k).zip(q.chunks_exact_mut(kp)).zip(sx.iter_mut()) {
        let row = scaled_row(row, inv, &mut scaled);
        let (lo, hi) = row.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| (a.min(v), b.max(v)));
        let step = (hi - lo) / 255.0;
        *s = (step, lo);
        let inv = if step > 0.0 { 1.0 / step } else { 0.0 };
        for (d, &v) in qr.iter_mut().zip(row) {
            *d = ((v - lo) * inv).round_ties_even().clamp(0.0, 255.0) as u8;
        }
        qr[k..].fill(0);
    }
}

/// `row` times `inv` element by element, written into `scaled`; `row` itself without `inv`.
/// Inlined into both quantization loops (the AVX-512 one compiles it with its features).
#[inline(always)]
fn scaled_row<'a>(row: &'a [f32], inv: Option<&[f32]>, scaled: &'a mut [f32]) -> &'a [f32] {
    match inv {
        None => row,
        Some(inv) => {
            for ((d, v), i) in scaled.iter_mut().zip(row).zip(inv) {
                *d = v * i;
            }
            scaled
        }
    }
}

/// The output of one (row, column) from the exact integer sum `acc`: `acc s_x s_w + (min s_w
/// sum q + b)`. The AVX-512 path does the same operations in the same order (multiplies, then
/// adds; no fused multiply-add), so it gives the same bits.
#[inline(always)]
fn epilogue(acc: i32, (sx, lo): (f32, f32), sw: f32, colsum: f32, bias: f32) -> f32 {
    acc as f32 * (sx * sw) + (lo * colsum + bias)
}

#[derive(Clone, Copy, Debug)]
enum Kernel {
    Portable,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    #[cfg(target_arch = "x86_64")]
    Vnni,
}

impl Kernel {
    /// The fastest kernel this CPU runs (found once: every int8 layer call asks).
    fn detect() -> Self {
        static BEST: std::sync::OnceLock<Kernel> = std::sync::OnceLock::new();
        *BEST.get_or_init(|| *Self::available().last().expect("the portable kernel always runs"))
    }

    /// Every kernel this CPU runs, slowest first.
    fn available() -> Vec<Self> {
        #[allow(unused_mut)]
        let mut all = vec![Kernel::Portable];
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx2") {
                all.push(Kernel::Avx2);
            }
            if std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("avx512bw")
                && std::arch::is_x86_feature_detected!("avx512vnni")
            {
                all.push(Kernel::Vnni);
            }
        }
        all
    }

    /// [`quantize_rows`].
    fn quantize(self, x: &[f32], k: usize, kp: usize, inv: Option<&[f32]>, q: &mut [u8], sx: &mut [(f32, f32)]) {
        match self {
            Kernel::Portable => quantize_rows(x, k, kp, inv, q, sx),
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => quantize_rows(x, k, kp, inv, q, sx),
            // SAFETY: chosen only when the CPU has AVX-512 F, BW and VNNI (`detect`); `q` and `sx`
            // hold the rows of `x`.
            #[cfg(target_arch = "x86_64")]
            Kernel::Vnni => unsafe { vnni::quantize_rows(x, k, kp, inv, q, sx) },
        }
    }

    /// `y` (`rows x n`) from the quantized rows `q` (`rows x kp`) and their scales.
    fn rows(self, w: &Int8Weights, q: &[u8], sx: &[(f32, f32)], y: &mut [f32]) {
        match self {
            Kernel::Portable => portable_rows(w, q, sx, y),
            // SAFETY: chosen only when the CPU has AVX2 (`available`); the slices' sizes are
            // those `avx2::rows` expects.
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => unsafe { avx2::rows(w, w.packed16(), q, sx, y) },
            // SAFETY: chosen only when the CPU has AVX-512 F, BW and VNNI (`detect`); the slices'
            // sizes are those `rows_vnni` expects (`rows x kp`, `rows`, `rows x n`).
            #[cfg(target_arch = "x86_64")]
            Kernel::Vnni => unsafe { vnni::rows(w, q, sx, y) },
        }
    }
}

fn portable_rows(w: &Int8Weights, q: &[u8], sx: &[(f32, f32)], y: &mut [f32]) {
    let kq = w.kp / 4;
    for ((qr, &s), yr) in q.chunks_exact(w.kp).zip(sx).zip(y.chunks_exact_mut(w.n)) {
        for (j, out) in yr.iter_mut().enumerate() {
            let first = packed_at(w.kp, j, 0);
            let mut acc = 0i32;
            for kk in 0..kq {
                let wb = &w.packed[first + kk * BLOCK * 4..][..4];
                for t in 0..4 {
                    acc += i32::from(qr[kk * 4 + t]) * i32::from(wb[t]);
                }
            }
            *out = epilogue(acc, s, w.scale[j], w.colsum[j], w.bias[j]);
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::Int8Weights;

    /// Output columns of one block of [`Int8Weights::packed16`]: four registers of 8 i32 sums.
    pub(super) const COLS: usize = 32;
    /// Rows of one register tile: 2 rows x 4 registers = 8 accumulators, beside the 4 weight
    /// registers, within the 16.
    const TILE_ROWS: usize = 2;

    /// [`super::portable_rows`] with `vpmaddwd`: each activation pair, widened to two 16-bit
    /// values, times each column's pair of weights, summed exactly into 32 bits.
    ///
    /// # Safety
    /// The CPU must have AVX2; `w16` is `w.packed16()`, `q` holds `rows x kp` bytes, `sx` `rows`
    /// scales and `y` `rows x n` floats.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn rows(w: &Int8Weights, w16: &[i16], q: &[u8], sx: &[(f32, f32)], y: &mut [f32]) {
        let rows = sx.len();
        assert!(q.len() == rows * w.kp && y.len() == rows * w.n && w16.len() == w.n.div_ceil(COLS) * w.kp * COLS);
        // Each pair of activation bytes as the two 16-bit halves of one i32, once for every
        // block: the tile broadcasts it with one instruction.
        let pairs: Vec<i32> = q.chunks_exact(2).map(|p| i32::from(p[0]) | (i32::from(p[1]) << 16)).collect();
        for b in 0..w.n.div_ceil(COLS) {
            let mut r = 0;
            while r < rows {
                let t = (rows - r).min(TILE_ROWS);
                // SAFETY: rows r..r + t exist in q, sx and y (checked above), block b in w16.
                unsafe {
                    if t == 2 {
                        tile::<2>(w, w16, b, &pairs, sx, y, r);
                    } else {
                        tile::<1>(w, w16, b, &pairs, sx, y, r);
                    }
                }
                r += t;
            }
        }
    }

    /// Rows `r..r + R` by the columns of block `b`; `q` holds each row's activation pairs.
    #[target_feature(enable = "avx2")]
    unsafe fn tile<const R: usize>(
        w: &Int8Weights,
        w16: &[i16],
        b: usize,
        q: &[i32],
        sx: &[(f32, f32)],
        y: &mut [f32],
        r: usize,
    ) {
        let pairs = w.kp / 2;
        let mut acc = [[_mm256_setzero_si256(); 4]; R];
        let block = &w16[b * pairs * COLS * 2..(b + 1) * pairs * COLS * 2];
        let rows = &q[r * pairs..(r + R) * pairs];
        for p in 0..pairs {
            // SAFETY: the block holds `pairs` groups of 4 registers (64 values).
            let v = unsafe {
                let bw = block.as_ptr().add(p * COLS * 2);
                [
                    _mm256_loadu_si256(bw.cast()),
                    _mm256_loadu_si256(bw.add(16).cast()),
                    _mm256_loadu_si256(bw.add(32).cast()),
                    _mm256_loadu_si256(bw.add(48).cast()),
                ]
            };
            for (i, acc) in acc.iter_mut().enumerate() {
                let a = _mm256_set1_epi32(rows[i * pairs + p]);
                for (acc, v) in acc.iter_mut().zip(v) {
                    *acc = _mm256_add_epi32(*acc, _mm256_madd_epi16(a, v));
                }
            }
        }
        let col = b * COLS;
        for (reg, c) in (col..col + COLS).step_by(8).enumerate() {
            if c >= w.n {
                break;
            }
            let left = (w.n - c).min(8);
            // SAFETY: the scale, bias and column-sum vectors are padded to whole blocks of 64,
            // a multiple of COLS.
            let (sw, bias, colsum) = unsafe {
                (
                    _mm256_loadu_ps(w.scale.as_ptr().add(c)),
                    _mm256_loadu_ps(w.bias.as_ptr().add(c)),
                    _mm256_loadu_ps(w.colsum.as_ptr().add(c)),
                )
            };
            for (i, acc) in acc.iter().enumerate() {
                let (step, lo) = sx[r + i];
                // The epilogue's operations in its order: multiplies, then adds; no FMA.
                let s = _mm256_mul_ps(_mm256_set1_ps(step), sw);
                let shift = _mm256_add_ps(_mm256_mul_ps(_mm256_set1_ps(lo), colsum), bias);
                let out = _mm256_add_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(acc[reg]), s), shift);
                let mut lanes = [0f32; 8];
                // SAFETY: `lanes` has 8 floats.
                unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), out) };
                let at = (r + i) * w.n + c;
                y[at..at + left].copy_from_slice(&lanes[..left]);
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod vnni {
    use std::arch::x86_64::*;

    use super::{BLOCK, Int8Weights, TILE_ROWS};

    /// [`super::quantize_rows`] 16 values at a time: the same minimum, maximum and step, and
    /// the same bytes (`vcvtps2dq` rounds half to even, as `round_ties_even` does).
    ///
    /// # Safety
    /// The CPU must have AVX-512 F, BW and VNNI; `q` holds `rows x kp` bytes and `sx` `rows`
    /// pairs for the `rows = x.len() / k` rows of `x`.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    pub(super) unsafe fn quantize_rows(
        x: &[f32],
        k: usize,
        kp: usize,
        inv: Option<&[f32]>,
        q: &mut [u8],
        sx: &mut [(f32, f32)],
    ) {
        assert!(q.len() == sx.len() * kp && x.len() == sx.len() * k && inv.is_none_or(|i| i.len() == k));
        let mut scaled = vec![0f32; if inv.is_some() { k } else { 0 }];
        let tail = k % 16;
        let tail_mask: __mmask16 = if tail == 0 { 0 } else { (1u16 << tail) - 1 };
        for ((row, qr), s) in x.chunks_exact(k).zip(q.chunks_exact_mut(kp)).zip(sx.iter_mut()) {
            let whole = k - tail;
            let row = super::scaled_row(row, inv, &mut scaled);
            let p = row.as_ptr();
            let (mut lo, mut hi) = (_mm512_set1_ps(f32::INFINITY), _mm512_set1_ps(f32::NEG_INFINITY));
            // SAFETY: offsets below `whole` and the masked tail lie within the row.
            unsafe {
                for c in (0..whole).step_by(16) {
                    let v = _mm512_loadu_ps(p.add(c));
                    lo = _mm512_min_ps(lo, v);
                    hi = _mm512_max_ps(hi, v);
                }
                if tail > 0 {
                    lo =
                        _mm512_min_ps(lo, _mm512_mask_loadu_ps(_mm512_set1_ps(f32::INFINITY), tail_mask, p.add(whole)));
                    hi = _mm512_max_ps(
                        hi,
                        _mm512_mask_loadu_ps(_mm512_set1_ps(f32::NEG_INFINITY), tail_mask, p.add(whole)),
                    );
                }
            }
            let (lo, hi) = (_mm512_reduce_min_ps(lo), _mm512_reduce_max_ps(hi));
            let step = (hi - lo) / 255.0;
            *s = (step, lo);
            let inv = if step > 0.0 { 1.0 / step } else { 0.0 };
            let (lov, invv) = (_mm512_set1_ps(lo), _mm512_set1_ps(inv));
            let (zero, top) = (_mm512_setzero_si512(), _mm512_set1_epi32(255));
            let d = qr.as_mut_ptr();
            let byte = |v: __m512| {
                let i = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_sub_ps(v, lov), invv));
                _mm512_min_epi32(_mm512_max_epi32(i, zero), top)
            };
            // SAFETY: as above; `qr` has kp >= k bytes.
            unsafe {
                for c in (0..whole).step_by(16) {
                    _mm512_mask_cvtepi32_storeu_epi8(d.add(c).cast(), 0xffff, byte(_mm512_loadu_ps(p.add(c))));
                }
                if tail > 0 {
                    let v = _mm512_maskz_loadu_ps(tail_mask, p.add(whole));
                    _mm512_mask_cvtepi32_storeu_epi8(d.add(whole).cast(), tail_mask, byte(v));
                }
            }
            qr[k..].fill(0);
        }
    }

    /// [`super::portable_rows`] with `vpdpbusd`: for each block of 64 columns, tiles of up to 6
    /// rows accumulate in 24 registers over the whole input.
    ///
    /// # Safety
    /// The CPU must have AVX-512 F, BW and VNNI; `q` holds `rows x kp` bytes, `sx` `rows`
    /// scales and `y` `rows x n` floats.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    pub(super) unsafe fn rows(w: &Int8Weights, q: &[u8], sx: &[(f32, f32)], y: &mut [f32]) {
        let rows = sx.len();
        assert!(q.len() == rows * w.kp && y.len() == rows * w.n);
        for b in 0..w.n.div_ceil(BLOCK) {
            let mut r = 0;
            while r < rows {
                let t = (rows - r).min(TILE_ROWS);
                // SAFETY: rows r..r + t exist in q, sx and y (checked above), block b in w.
                unsafe {
                    match t {
                        6 => tile::<6>(w, b, q, sx, y, r),
                        5 => tile::<5>(w, b, q, sx, y, r),
                        4 => tile::<4>(w, b, q, sx, y, r),
                        3 => tile::<3>(w, b, q, sx, y, r),
                        2 => tile::<2>(w, b, q, sx, y, r),
                        _ => tile::<1>(w, b, q, sx, y, r),
                    }
                }
                r += t;
            }
        }
    }

    /// Rows `r..r + R` by the columns of block `b`.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    unsafe fn tile<const R: usize>(w: &Int8Weights, b: usize, q: &[u8], sx: &[(f32, f32)], y: &mut [f32], r: usize) {
        let kq = w.kp / 4;
        let mut acc = [[_mm512_setzero_si512(); 4]; R];
        let wp = w.packed[b * w.kp * BLOCK..(b + 1) * w.kp * BLOCK].as_ptr();
        let qp = q[r * w.kp..(r + R) * w.kp].as_ptr();
        for kk in 0..kq {
            // SAFETY: block b holds kq groups of 4 registers (256 bytes); row i of the tile has
            // kp = 4 kq bytes.
            unsafe {
                let bw = wp.add(kk * 256);
                let v = [
                    _mm512_loadu_si512(bw.cast()),
                    _mm512_loadu_si512(bw.add(64).cast()),
                    _mm512_loadu_si512(bw.add(128).cast()),
                    _mm512_loadu_si512(bw.add(192).cast()),
                ];
                for (i, acc) in acc.iter_mut().enumerate() {
                    let a = _mm512_set1_epi32(qp.add(i * w.kp + kk * 4).cast::<i32>().read_unaligned());
                    for (acc, v) in acc.iter_mut().zip(v) {
                        *acc = _mm512_dpbusd_epi32(*acc, a, v);
                    }
                }
            }
        }
        let col = b * BLOCK;
        for (reg, c) in (col..col + BLOCK).step_by(16).enumerate() {
            if c >= w.n {
                break;
            }
            let left = (w.n - c).min(16);
            let mask: __mmask16 = if left == 16 { 0xffff } else { (1u16 << left) - 1 };
            // SAFETY: the scale, bias and column-sum vectors are padded to whole blocks.
            let (sw, bias, colsum) = unsafe {
                (
                    _mm512_loadu_ps(w.scale.as_ptr().add(c)),
                    _mm512_loadu_ps(w.bias.as_ptr().add(c)),
                    _mm512_loadu_ps(w.colsum.as_ptr().add(c)),
                )
            };
            for (i, acc) in acc.iter().enumerate() {
                let (step, lo) = sx[r + i];
                let s = _mm512_mul_ps(_mm512_set1_ps(step), sw);
                let shift = _mm512_add_ps(_mm512_mul_ps(_mm512_set1_ps(lo), colsum), bias);
                let out = _mm512_add_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(acc[reg]), s), shift);
                // SAFETY: row r + i has n floats in y; the mask stops at column n.
                unsafe { _mm512_mask_storeu_ps(y.as_mut_ptr().add((r + i) * w.n + c), mask, out) };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn random(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
            })
            .collect()
    }

    /// Sizes with remainders everywhere: rows not a multiple of the tile or the task, columns
    /// not a multiple of 16 or 64, inputs not a multiple of 4.
    const SHAPES: [(usize, usize, usize); 4] = [(1, 1, 1), (7, 17, 5), (203, 70, 38), (100, 130, 384)];

    /// No smoothing, and smoothing factors between 0.25 and 4.
    fn smoothings(k: usize) -> [Option<Vec<f32>>; 2] {
        [None, Some(random(k, 9).iter().map(|v| 4f32.powf(*v)).collect())]
    }

    #[test]
    fn every_kernel_gives_the_portable_bits() {
        for (m, n, k) in SHAPES {
            for smooth in smoothings(k) {
                let (x, wt, b) = (random(m * k, 1), random(n * k, 2), random(n, 3));
                let w = Int8Weights::new(&wt, Some(&b), n, k, smooth.as_deref()).unwrap();
                let inv = w.inv_smooth.as_deref();
                let mut q = vec![0u8; m * w.kp];
                let mut sx = vec![(0f32, 0f32); m];
                quantize_rows(&x, k, w.kp, inv, &mut q, &mut sx);
                let mut want = vec![0f32; m * n];
                portable_rows(&w, &q, &sx, &mut want);
                for kernel in Kernel::available() {
                    let mut got = vec![0f32; m * n];
                    let (mut q2, mut sx2) = (vec![1u8; m * w.kp], vec![(0f32, 0f32); m]);
                    kernel.quantize(&x, k, w.kp, inv, &mut q2, &mut sx2);
                    assert!(q == q2 && sx == sx2, "{kernel:?} {m} x {n} x {k}: quantized rows differ");
                    kernel.rows(&w, &q, &sx, &mut got);
                    let same = want.iter().zip(&got).all(|(a, b)| a.to_bits() == b.to_bits());
                    assert!(same, "{kernel:?} {m} x {n} x {k}");
                }
            }
        }
    }

    #[test]
    fn int8_linear_is_close_to_f32_and_threads_do_not_change_it() {
        for (m, n, k) in SHAPES {
            for smooth in smoothings(k) {
                let (x, wt, b) = (random(m * k, 4), random(n * k, 5), random(n, 6));
                let xt = Tensor::from_vec(x.clone(), (m, k), &Device::Cpu).unwrap();
                let w = Arc::new(Int8Weights::new(&wt, Some(&b), n, k, smooth.as_deref()).unwrap());
                let got: Vec<f32> = linear_int8(&xt, &w).unwrap().flatten_all().unwrap().to_vec1().unwrap();
                let serial: Vec<f32> =
                    super::super::serial(|| linear_int8(&xt, &w)).unwrap().flatten_all().unwrap().to_vec1().unwrap();
                assert_eq!(got, serial);
                // The operands as quantized: inputs divided by the factors, columns multiplied.
                let s = smooth.clone().unwrap_or_else(|| vec![1.0; k]);
                let xs: Vec<f32> = x.chunks_exact(k).flat_map(|r| r.iter().zip(&s).map(|(v, s)| v / s)).collect();
                let ws: Vec<f32> = wt.chunks_exact(k).flat_map(|r| r.iter().zip(&s).map(|(v, s)| v * s)).collect();
                let max_abs = |v: &[f32]| v.iter().fold(0f32, |m, v| m.max(v.abs()));
                for i in 0..m {
                    let xr = &xs[i * k..(i + 1) * k];
                    let (lo, hi) =
                        xr.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| (a.min(v), b.max(v)));
                    let sx = (hi - lo) / 255.0;
                    for j in 0..n {
                        let wr = &ws[j * k..(j + 1) * k];
                        let sw = max_abs(wr) / 127.0;
                        let exact: f32 =
                            b[j] + x[i * k..(i + 1) * k].iter().zip(&wt[j * k..]).map(|(a, b)| a * b).sum::<f32>();
                        // Rounding moves each operand by at most half its step: each product by
                        // at most |x| sw / 2 + |w| sx / 2 + sx sw / 4 (plus f32 rounding).
                        let bound: f32 = xr
                            .iter()
                            .zip(wr)
                            .map(|(a, b)| a.abs() * sw / 2.0 + b.abs() * sx / 2.0 + sx * sw / 4.0)
                            .sum();
                        let tol = bound * 1.001 + 1e-5;
                        let d = (got[i * n + j] - exact).abs();
                        assert!(d <= tol, "{m} x {n} x {k} at ({i}, {j}): {} vs {exact}", got[i * n + j]);
                    }
                }
            }
        }
    }

    #[test]
    fn zero_rows_give_the_bias_and_a_batch_dimension_is_kept() {
        let (n, k) = (20, 9);
        let (wt, b) = (random(n * k, 7), random(n, 8));
        let w = Arc::new(Int8Weights::new(&wt, Some(&b), n, k, None).unwrap());
        let x = Tensor::zeros((2, 3, k), candle_core::DType::F32, &Device::Cpu).unwrap();
        let y = linear_int8(&x, &w).unwrap();
        assert_eq!(y.dims(), [2, 3, n]);
        let y: Vec<f32> = y.flatten_all().unwrap().to_vec1().unwrap();
        for (i, v) in y.iter().enumerate() {
            assert_eq!(*v, b[i % n]);
        }
        let bad = Tensor::zeros((2, k + 1), candle_core::DType::F32, &Device::Cpu).unwrap();
        assert!(linear_int8(&bad, &w).unwrap_err().to_string().contains("(.., 10)"));
    }
}
