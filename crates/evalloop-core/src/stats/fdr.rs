//! False-discovery-rate control over many tests: Benjamini-Hochberg adjusted p-values.

/// Benjamini-Hochberg adjusted p-values (q-values), in the order of `p`: for the `i`-th
/// smallest of `m` p-values, `min over j >= i of p_(j) * m / j`, capped at 1, as R's
/// `p.adjust(p, "BH")` and `scipy.stats.false_discovery_control(p, method="bh")`. Rejecting
/// every test whose q-value is at most `q` keeps the expected share of false discoveries at or
/// below `q` (for independent or positively dependent tests). Non-finite p-values count as 1.
pub fn benjamini_hochberg(p: &[f64]) -> Vec<f64> {
    let m = p.len();
    let clean = |v: f64| if v.is_finite() { v.clamp(0.0, 1.0) } else { 1.0 };
    let mut order: Vec<usize> = (0..m).collect();
    order.sort_by(|&a, &b| clean(p[a]).total_cmp(&clean(p[b])));
    let mut q = vec![1.0; m];
    let mut running = 1.0f64;
    for (rank, &i) in order.iter().enumerate().rev() {
        running = running.min(clean(p[i]) * m as f64 / (rank + 1) as f64);
        q[i] = running.min(1.0);
    }
    q
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_r_p_adjust_bh() {
        // R: p.adjust(c(0.01, 0.04, 0.03, 0.20, 0.005), "BH")
        //    0.025 0.050 0.050 0.200 0.025
        let q = benjamini_hochberg(&[0.01, 0.04, 0.03, 0.20, 0.005]);
        let want = [0.025, 0.05, 0.05, 0.2, 0.025];
        for (g, w) in q.iter().zip(want) {
            assert!((g - w).abs() < 1e-12, "{q:?}");
        }
    }

    #[test]
    fn empty_and_non_finite_inputs() {
        assert!(benjamini_hochberg(&[]).is_empty());
        assert_eq!(benjamini_hochberg(&[f64::NAN, 0.5]), vec![1.0, 1.0]);
        assert_eq!(benjamini_hochberg(&[0.0]), vec![0.0]);
    }
}
