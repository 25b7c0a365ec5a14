//! Branch-free f32 approximations of `exp` and `erf` (and GELU's gate built on `erf`), so that
//! the row loops calling them vectorise; each checked against the standard library or libm.

/// `exp(x)` in f32 without calls or branches (Cephes' `expf`: `x = n ln 2 + r`, a degree-6
/// polynomial in `r`, `2^n` built from its bits), so that loops over it vectorise. Within 2e-7
/// relative of `f32::exp` on [-87, 88] (test); 0 below -87 (`f32::exp` gives at most 1.7e-38
/// there), `exp(88)` above 88.
#[inline(always)]
pub(super) fn exp_f32(x: f32) -> f32 {
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
pub(super) fn gelu_cdf(x: f32) -> f32 {
    (erf_f32(x * std::f32::consts::FRAC_1_SQRT_2) + 1.0) * 0.5
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn fast_erf_matches_libm() {
        let worst = (-60_000..=60_000)
            .map(|i| i as f32 * 1e-4)
            .map(|x| (erf_f32(x) - libm::erff(x)).abs())
            .fold(0f32, f32::max);
        assert!(worst < 5e-7, "{worst}");
        assert!((erf_f32(30.0) - 1.0).abs() < 2e-7 && (erf_f32(-30.0) + 1.0).abs() < 2e-7);
    }
}
