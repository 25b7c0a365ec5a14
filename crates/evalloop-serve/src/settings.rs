//! The `[serve]` config section as read, and the validated settings the service runs with.

use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;

/// `[serve]` as read from the TOML config; every key is optional (defaults below).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServeSection {
    /// Listen address; default `127.0.0.1:8080` (`--addr` overrides).
    pub addr: Option<String>,
    /// Largest request body in bytes; default 1 MiB (1048576). Larger bodies get 413.
    pub max_body_bytes: Option<usize>,
    /// Most rows in one `POST /v1/logs` or `/v1/feedback`; default 1000. More: 413.
    pub max_rows: Option<usize>,
    /// How long the writer keeps collecting requests into one transaction after the first, in
    /// milliseconds; default 1. 0 commits what is queued at once.
    pub group_commit_ms: Option<u64>,
    /// Rows waiting for the writer before new requests get 503; default 100000.
    pub queue_rows: Option<usize>,
    /// Seconds a request may take before it is answered 503; default 10.
    pub request_timeout_s: Option<u64>,
    /// Requests per second each API key or token may make; default 2000. 0 turns the limit off.
    pub rate_limit_per_s: Option<f64>,
    /// Requests a key may make at once above its rate; default 4000.
    pub rate_limit_burst: Option<f64>,
    /// Default lifetime of a feedback token in seconds; default 3600 (an hour).
    pub token_ttl_s: Option<u64>,
    /// Longest lifetime a token may ask for, in seconds; default 604800 (a week).
    pub token_max_ttl_s: Option<u64>,
    /// Origins allowed to call `POST /v1/feedback` with a token from a browser (CORS), e.g.
    /// `["https://app.example.com"]`; `["*"]` allows any; default none.
    pub cors_origins: Option<Vec<String>>,
    /// How often the key list is re-read from the store, in milliseconds (a revoked key stops
    /// working within this time); default 1000.
    pub key_refresh_ms: Option<u64>,
    /// Reverse proxies whose `X-Forwarded-For` names the client (addresses or CIDR ranges, e.g.
    /// `["127.0.0.1", "10.0.0.0/8"]`); default none: the TCP peer is the client.
    pub trusted_proxies: Option<Vec<String>>,
}

/// The settings the service runs with, validated.
#[derive(Debug, Clone)]
pub struct ServeSettings {
    pub addr: SocketAddr,
    pub max_body_bytes: usize,
    pub max_rows: usize,
    pub group_commit: Duration,
    pub queue_rows: usize,
    pub request_timeout: Duration,
    /// Requests per second per key; 0 = no limit.
    pub rate_limit_per_s: f64,
    pub rate_limit_burst: f64,
    pub token_ttl: Duration,
    pub token_max_ttl: Duration,
    pub cors_origins: Vec<String>,
    pub key_refresh: Duration,
    pub trusted_proxies: Vec<crate::review::limit::IpRange>,
}

impl ServeSettings {
    /// Defaults < `[serve]` < the `--addr` flag; errors name the key.
    pub fn resolve(section: &ServeSection, addr_flag: Option<&str>) -> Result<ServeSettings, String> {
        let addr_text = addr_flag.or(section.addr.as_deref()).unwrap_or("127.0.0.1:8080");
        let addr: SocketAddr =
            addr_text.parse().map_err(|e| format!("[serve] addr {addr_text:?}: not an IP:port address ({e})"))?;
        let positive = |name: &str, v: Option<usize>, default: usize| -> Result<usize, String> {
            match v {
                Some(0) => Err(format!("[serve] {name}: must be at least 1")),
                Some(n) => Ok(n),
                None => Ok(default),
            }
        };
        let rate = section.rate_limit_per_s.unwrap_or(2000.0);
        let burst = section.rate_limit_burst.unwrap_or(4000.0);
        if !(rate.is_finite() && rate >= 0.0) {
            return Err(format!("[serve] rate_limit_per_s: {rate} is not a number >= 0"));
        }
        if !(burst.is_finite() && burst >= 1.0) {
            return Err(format!("[serve] rate_limit_burst: {burst} is not a number >= 1"));
        }
        let token_ttl = section.token_ttl_s.unwrap_or(3600);
        let token_max_ttl = section.token_max_ttl_s.unwrap_or(7 * 24 * 3600);
        if token_ttl == 0 || token_ttl > token_max_ttl {
            return Err(format!(
                "[serve] token_ttl_s: {token_ttl} must be between 1 and token_max_ttl_s ({token_max_ttl})"
            ));
        }
        let cors_origins = section.cors_origins.clone().unwrap_or_default();
        for o in &cors_origins {
            if o != "*" && !(o.starts_with("http://") || o.starts_with("https://")) {
                return Err(format!("[serve] cors_origins: {o:?} is neither \"*\" nor an http(s):// origin"));
            }
        }
        let trusted_proxies = section
            .trusted_proxies
            .iter()
            .flatten()
            .map(|t| {
                crate::review::limit::IpRange::parse(t).map_err(|e| format!("[serve] trusted_proxies: {t:?}: {e}"))
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(ServeSettings {
            addr,
            max_body_bytes: positive("max_body_bytes", section.max_body_bytes, 1 << 20)?,
            max_rows: positive("max_rows", section.max_rows, 1000)?,
            group_commit: Duration::from_millis(section.group_commit_ms.unwrap_or(1)),
            queue_rows: positive("queue_rows", section.queue_rows, 100_000)?,
            request_timeout: Duration::from_secs(section.request_timeout_s.unwrap_or(10).max(1)),
            rate_limit_per_s: rate,
            rate_limit_burst: burst,
            token_ttl: Duration::from_secs(token_ttl),
            token_max_ttl: Duration::from_secs(token_max_ttl),
            cors_origins,
            key_refresh: Duration::from_millis(section.key_refresh_ms.unwrap_or(1000).max(10)),
            trusted_proxies,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_documented_ones() {
        let s = ServeSettings::resolve(&ServeSection::default(), None).unwrap();
        assert_eq!(s.addr.to_string(), "127.0.0.1:8080");
        assert_eq!(s.max_body_bytes, 1 << 20);
        assert_eq!(s.max_rows, 1000);
        assert_eq!(s.token_ttl, Duration::from_secs(3600));
        assert!(s.cors_origins.is_empty());
    }

    #[test]
    fn flag_beats_file_and_bad_values_name_the_key() {
        let sec = ServeSection { addr: Some("0.0.0.0:1".into()), ..Default::default() };
        assert_eq!(ServeSettings::resolve(&sec, Some("127.0.0.1:9")).unwrap().addr.to_string(), "127.0.0.1:9");
        let bad = ServeSection { max_rows: Some(0), ..Default::default() };
        assert!(ServeSettings::resolve(&bad, None).unwrap_err().contains("max_rows"));
        let bad = ServeSection { cors_origins: Some(vec!["example.com".into()]), ..Default::default() };
        assert!(ServeSettings::resolve(&bad, None).unwrap_err().contains("cors_origins"));
        let bad = ServeSection { trusted_proxies: Some(vec!["10.0.0.0/33".into()]), ..Default::default() };
        let err = ServeSettings::resolve(&bad, None).unwrap_err();
        assert!(err.contains("trusted_proxies") && err.contains("10.0.0.0/33"), "{err}");
    }
}
