//! Stable hashes that seed evalloop's random draws (simulated traffic, dataset splits,
//! subsampling, unlabelled rows): the same value on every platform and version.

use sha2::{Digest, Sha256};

/// A stable 64-bit hash of some strings (first 8 bytes of SHA-256 over length-prefixed parts).
pub fn hash64(parts: &[&str]) -> u64 {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p.as_bytes());
    }
    let d = h.finalize();
    u64::from_le_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]])
}
