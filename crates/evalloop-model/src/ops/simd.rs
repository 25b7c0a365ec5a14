//! The per-row loops of attention and GELU: a safe baseline loop for each, the same loops
//! compiled for AVX2 and AVX-512, and the run-time choice between them ([`RowKernels`]). Every
//! variant gives the baseline's bits (test).

use super::approx::{exp_f32, gelu_cdf};

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
pub(super) struct RowKernels {
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
    pub(super) fn detect() -> Self {
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

    pub(super) fn softmax(self, x: &[f32], mask: &[f32], scale: f32, p: &mut [f32]) {
        dispatch!(self.level, softmax_row, softmax_row_generic(x, mask, scale, p))
    }

    pub(super) fn softmax_bwd(self, p: &[f32], keep: Option<&[f32]>, scale: f32, d: &mut [f32]) {
        dispatch!(self.level, softmax_bwd_row, softmax_bwd_row_generic(p, keep, scale, d))
    }

    pub(super) fn mul(self, p: &[f32], keep: &[f32], dst: &mut [f32]) {
        dispatch!(self.level, mul_row, mul_row_generic(p, keep, dst))
    }

    pub(super) fn gelu(self, x: &[f32], y: &mut [f32]) {
        dispatch!(self.level, gelu_row, gelu_row_generic(x, y))
    }

    pub(super) fn gelu_inplace(self, v: &mut [f32]) {
        dispatch!(self.level, gelu_inplace_row, gelu_inplace_row_generic(v))
    }

    pub(super) fn gelu_bwd(self, x: &[f32], g: &[f32], d: &mut [f32]) {
        dispatch!(self.level, gelu_bwd_row, gelu_bwd_row_generic(x, g, d))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
