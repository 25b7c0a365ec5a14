//! The service's counters and histograms, and their Prometheus text exposition (`GET /metrics`).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;

/// Latency buckets, seconds.
const LATENCY_BUCKETS: &[f64] = &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
/// Rows-per-transaction buckets.
const GROUP_BUCKETS: &[f64] = &[1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0, 20000.0];

#[derive(Debug, Default, Clone)]
struct Histogram {
    /// Count per bucket (not cumulative), one more for +Inf.
    counts: Vec<u64>,
    sum: f64,
    n: u64,
}

impl Histogram {
    fn observe(&mut self, bounds: &[f64], v: f64) {
        if self.counts.is_empty() {
            self.counts = vec![0; bounds.len() + 1];
        }
        let i = bounds.iter().position(|b| v <= *b).unwrap_or(bounds.len());
        self.counts[i] += 1;
        self.sum += v;
        self.n += 1;
    }

    fn write(&self, out: &mut String, name: &str, labels: &str, bounds: &[f64]) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cum = 0;
        for (i, b) in bounds.iter().enumerate() {
            cum += self.counts.get(i).copied().unwrap_or(0);
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{b}\"}} {cum}");
        }
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}", self.n);
        let braces = if labels.is_empty() { String::new() } else { format!("{{{labels}}}") };
        let _ = writeln!(out, "{name}_sum{braces} {}", self.sum);
        let _ = writeln!(out, "{name}_count{braces} {}", self.n);
    }
}

#[derive(Debug, Default)]
struct Inner {
    /// (route, status) -> requests.
    requests: BTreeMap<(&'static str, u16), u64>,
    /// route -> latency.
    latency: BTreeMap<&'static str, Histogram>,
    /// (kind, status) -> rows.
    rows: BTreeMap<(&'static str, &'static str), u64>,
    groups: Histogram,
}

/// Everything `/metrics` shows; shared by the handlers and the writer.
#[derive(Debug, Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

impl Metrics {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// One answered request on `route` (the route's pattern, not the path) in `seconds`.
    pub fn observe_request(&self, route: &'static str, status: u16, seconds: f64) {
        let mut m = self.lock();
        *m.requests.entry((route, status)).or_default() += 1;
        m.latency.entry(route).or_default().observe(LATENCY_BUCKETS, seconds);
    }

    /// `n` rows of `kind` (`logs`, `feedback`) ended as `status`.
    pub fn add_rows(&self, kind: &'static str, status: &'static str, n: u64) {
        if n > 0 {
            *self.lock().rows.entry((kind, status)).or_default() += n;
        }
    }

    /// One transaction of the writer, with `rows` rows.
    pub fn observe_group(&self, rows: usize) {
        self.lock().groups.observe(GROUP_BUCKETS, rows as f64);
    }

    /// The Prometheus text exposition (version 0.0.4); `queued` is the writer's queue depth.
    pub fn render(&self, queued: usize) -> String {
        let m = self.lock();
        let mut out = String::new();
        out.push_str("# HELP evalloop_http_requests_total HTTP requests answered, by route and status.\n");
        out.push_str("# TYPE evalloop_http_requests_total counter\n");
        for ((route, status), n) in &m.requests {
            let _ = writeln!(out, "evalloop_http_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}");
        }
        out.push_str("# HELP evalloop_http_request_duration_seconds Time to answer a request, by route.\n");
        out.push_str("# TYPE evalloop_http_request_duration_seconds histogram\n");
        for (route, h) in &m.latency {
            h.write(&mut out, "evalloop_http_request_duration_seconds", &format!("route=\"{route}\""), LATENCY_BUCKETS);
        }
        out.push_str("# HELP evalloop_rows_total Rows received, by kind and outcome.\n");
        out.push_str("# TYPE evalloop_rows_total counter\n");
        for ((kind, status), n) in &m.rows {
            let _ = writeln!(out, "evalloop_rows_total{{kind=\"{kind}\",status=\"{status}\"}} {n}");
        }
        out.push_str("# HELP evalloop_commit_rows Rows per group-commit transaction.\n");
        out.push_str("# TYPE evalloop_commit_rows histogram\n");
        m.groups.write(&mut out, "evalloop_commit_rows", "", GROUP_BUCKETS);
        out.push_str("# HELP evalloop_queue_rows Rows waiting for the writer.\n");
        out.push_str("# TYPE evalloop_queue_rows gauge\n");
        let _ = writeln!(out, "evalloop_queue_rows {queued}");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let m = Metrics::default();
        m.observe_request("/healthz", 200, 0.0007);
        m.observe_request("/healthz", 200, 0.02);
        m.observe_request("/healthz", 404, 20.0);
        m.observe_group(3);
        let t = m.render(5);
        assert!(t.contains("evalloop_http_requests_total{route=\"/healthz\",status=\"200\"} 2"));
        assert!(t.contains("evalloop_http_request_duration_seconds_bucket{route=\"/healthz\",le=\"0.001\"} 1"));
        assert!(t.contains("evalloop_http_request_duration_seconds_bucket{route=\"/healthz\",le=\"0.025\"} 2"));
        assert!(t.contains("evalloop_http_request_duration_seconds_bucket{route=\"/healthz\",le=\"+Inf\"} 3"));
        assert!(t.contains("evalloop_commit_rows_bucket{le=\"5\"} 1"));
        assert!(t.contains("evalloop_queue_rows 5"));
    }
}
