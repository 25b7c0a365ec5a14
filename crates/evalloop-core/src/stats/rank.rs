//! Average ranks with ties (scipy `rankdata(method="average")`) and tie-group sizes.

/// Average ranks of `v` (1-based; tied values share the mean of their positions), as
/// `scipy.stats.rankdata(v)`, plus the sizes of the tie groups (every group, including size 1,
/// in ascending value order). Values are ordered with `f64::total_cmp`; callers reject NaN.
pub fn average_ranks(v: &[f64]) -> (Vec<f64>, Vec<usize>) {
    let n = v.len();
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_unstable_by(|&a, &b| v[a].total_cmp(&v[b]));
    let mut ranks = vec![0.0; n];
    let mut ties = Vec::new();
    let mut i = 0;
    while i < n {
        let mut j = i + 1;
        while j < n && v[order[j]] == v[order[i]] {
            j += 1;
        }
        // positions i..j (0-based) hold ranks i+1..=j; their mean is (i + 1 + j) / 2
        let r = (i + 1 + j) as f64 / 2.0;
        for &k in &order[i..j] {
            ranks[k] = r;
        }
        ties.push(j - i);
        i = j;
    }
    (ranks, ties)
}

/// Average ranks only; see [`average_ranks`].
pub fn rankdata(v: &[f64]) -> Vec<f64> {
    average_ranks(v).0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ties_share_the_average_rank() {
        // scipy.stats.rankdata([3, 1, 4, 1, 5, 9, 2, 6, 5]) =
        // [4. , 1.5, 5. , 1.5, 6.5, 9. , 3. , 8. , 6.5]
        let (r, t) = average_ranks(&[3.0, 1.0, 4.0, 1.0, 5.0, 9.0, 2.0, 6.0, 5.0]);
        assert_eq!(r, vec![4.0, 1.5, 5.0, 1.5, 6.5, 9.0, 3.0, 8.0, 6.5]);
        assert_eq!(t, vec![2, 1, 1, 1, 2, 1, 1]);
    }
}
