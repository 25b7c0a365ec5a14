//! The review login's guard against key guessing: failed logins per client address in a sliding
//! window; an address with [`MAX_FAILURES`] failures in the last [`WINDOW`] is refused (429 with
//! `Retry-After`) until the oldest of them leaves the window.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failed logins an address may make within [`WINDOW`].
pub const MAX_FAILURES: usize = 10;
/// The sliding window of failed logins: one minute.
pub const WINDOW: Duration = Duration::from_secs(60);
/// Addresses tracked before the expired ones are swept out.
const SWEEP_ABOVE: usize = 4096;

/// Failed review logins per client address.
#[derive(Debug, Default)]
pub struct LoginLimiter {
    failures: Mutex<HashMap<IpAddr, VecDeque<Instant>>>,
}

impl LoginLimiter {
    /// `Err(seconds)` to wait when `addr` has [`MAX_FAILURES`] failures in the window ending at
    /// `now`; `Ok` otherwise.
    pub fn check(&self, addr: IpAddr, now: Instant) -> Result<(), u64> {
        let mut f = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let Some(times) = f.get_mut(&addr) else { return Ok(()) };
        expire(times, now);
        if times.len() < MAX_FAILURES {
            return Ok(());
        }
        let oldest = times.front().copied().unwrap_or(now);
        let left = (oldest + WINDOW).saturating_duration_since(now);
        Err(left.as_secs_f64().ceil().max(1.0) as u64)
    }

    /// Counts a failed login from `addr` at `now`.
    pub fn fail(&self, addr: IpAddr, now: Instant) {
        let mut f = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        if f.len() > SWEEP_ABOVE {
            f.retain(|_, t| {
                expire(t, now);
                !t.is_empty()
            });
        }
        let times = f.entry(addr).or_default();
        expire(times, now);
        times.push_back(now);
        // Older failures than the last MAX_FAILURES never decide a refusal.
        while times.len() > MAX_FAILURES {
            times.pop_front();
        }
    }
}

fn expire(times: &mut VecDeque<Instant>, now: Instant) {
    while times.front().is_some_and(|t| now.saturating_duration_since(*t) >= WINDOW) {
        times.pop_front();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ten_failures_a_minute_then_refused_until_the_oldest_expires() {
        let l = LoginLimiter::default();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let t0 = Instant::now();
        for i in 0..MAX_FAILURES {
            assert_eq!(l.check(a, t0 + Duration::from_secs(i as u64)), Ok(()));
            l.fail(a, t0 + Duration::from_secs(i as u64));
        }
        // The 11th try 20 s after the first: the first failure leaves the window at 60 s.
        assert_eq!(l.check(a, t0 + Duration::from_secs(20)), Err(40));
        assert_eq!(l.check(b, t0 + Duration::from_secs(20)), Ok(()), "another address is not affected");
        assert_eq!(l.check(a, t0 + Duration::from_secs(60)), Ok(()));
    }
}
