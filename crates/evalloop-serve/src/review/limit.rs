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

/// An address or a CIDR range of addresses (`[serve] trusted_proxies`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpRange {
    net: IpAddr,
    prefix: u8,
}

impl IpRange {
    /// `ADDRESS` or `ADDRESS/PREFIX` (IPv4 or IPv6).
    pub fn parse(text: &str) -> Result<IpRange, String> {
        let (addr, prefix) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let net: IpAddr = addr.trim().parse().map_err(|_| "not an IP address".to_string())?;
        let max = if net.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => match p.trim().parse::<u8>() {
                Ok(n) if n <= max => n,
                _ => return Err(format!("the prefix length must be a number from 0 to {max}")),
            },
        };
        Ok(IpRange { net, prefix })
    }

    /// Whether `ip` is in the range (an IPv4 address never matches an IPv6 range, nor the
    /// reverse, except IPv4-mapped IPv6 addresses, compared as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        let bits = |a: IpAddr| -> (u128, u8) {
            match a {
                IpAddr::V4(v) => (u128::from(u32::from(v)), 32),
                IpAddr::V6(v) => (u128::from(v), 128),
            }
        };
        let ((a, wa), (b, wb)) = (bits(self.net), bits(ip));
        if wa != wb {
            return false;
        }
        if self.prefix == 0 {
            return true;
        }
        let shift = u32::from(wa - self.prefix);
        (a >> shift) == (b >> shift)
    }
}

/// The client's address for the limit: the TCP `peer`, or, when the peer is a trusted proxy,
/// the right-most address of `X-Forwarded-For` that is not itself a trusted proxy (proxies
/// append the address they saw, so addresses left of it may be forged by the client). A header
/// that does not parse leaves the peer.
pub fn client_address(peer: IpAddr, forwarded_for: Option<&str>, trusted: &[IpRange]) -> IpAddr {
    let is_trusted = |ip: IpAddr| trusted.iter().any(|r| r.contains(ip));
    if !is_trusted(peer) {
        return peer;
    }
    let Some(header) = forwarded_for else { return peer };
    let mut client = peer;
    for part in header.rsplit(',') {
        match part.trim().parse::<IpAddr>() {
            Ok(ip) => {
                client = ip;
                if !is_trusted(ip) {
                    break;
                }
            }
            Err(_) => return peer,
        }
    }
    client
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

    #[test]
    fn ranges_parse_and_match() {
        let r = IpRange::parse("10.0.0.0/8").unwrap();
        assert!(r.contains("10.2.3.4".parse().unwrap()));
        assert!(!r.contains("11.0.0.1".parse().unwrap()));
        assert!(r.contains("::ffff:10.9.9.9".parse().unwrap()), "IPv4-mapped IPv6 compares as IPv4");
        let one = IpRange::parse("127.0.0.1").unwrap();
        assert!(one.contains("127.0.0.1".parse().unwrap()) && !one.contains("127.0.0.2".parse().unwrap()));
        let v6 = IpRange::parse("fd00::/8").unwrap();
        assert!(v6.contains("fd12::1".parse().unwrap()) && !v6.contains("10.0.0.1".parse().unwrap()));
        assert!(IpRange::parse("0.0.0.0/0").unwrap().contains("8.8.8.8".parse().unwrap()));
        assert!(IpRange::parse("10.0.0.0/33").unwrap_err().contains("0 to 32"));
        assert!(IpRange::parse("proxy.local").is_err());
    }

    #[test]
    fn forwarded_for_counts_only_behind_a_trusted_proxy() {
        let trusted = [IpRange::parse("127.0.0.1").unwrap(), IpRange::parse("10.0.0.0/8").unwrap()];
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        // Not from a trusted proxy: the header is ignored (a client could send any).
        assert_eq!(client_address(ip("203.0.113.5"), Some("198.51.100.1"), &trusted), ip("203.0.113.5"));
        // From the proxy: the right-most untrusted address; a forged left part is skipped.
        assert_eq!(client_address(ip("127.0.0.1"), Some("1.1.1.1, 198.51.100.7"), &trusted), ip("198.51.100.7"));
        assert_eq!(client_address(ip("127.0.0.1"), Some("198.51.100.7, 10.1.1.1"), &trusted), ip("198.51.100.7"));
        // No header, a bad header, no trusted proxies: the peer.
        assert_eq!(client_address(ip("127.0.0.1"), None, &trusted), ip("127.0.0.1"));
        assert_eq!(client_address(ip("127.0.0.1"), Some("not-an-ip"), &trusted), ip("127.0.0.1"));
        assert_eq!(client_address(ip("127.0.0.1"), Some("198.51.100.7"), &[]), ip("127.0.0.1"));
    }
}
