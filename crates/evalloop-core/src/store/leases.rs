//! Leases for scoring a store with many workers (`evalloop score --store --workers N`, or
//! `--worker` processes started anywhere): the requests are split into ranges of request ids
//! (a plan per job, in the store's `score_leases` table); a worker leases the next range that is
//! to do or whose lease expired, scores it, and writes the range's scores and marks it done in
//! one transaction, but only while the lease is still its own. So every range is written by
//! exactly one worker, a killed worker loses at most the range it held (taken over when its
//! lease expires), and running the command again resumes the job.
//!
//! PostgreSQL takes the next range with `SELECT ... FOR UPDATE SKIP LOCKED`; SQLite with a
//! write transaction (`BEGIN IMMEDIATE`), which the file's lock serialises.

use serde::Serialize;

/// The lease table of both stores.
pub const LEASES_SQL: &str = "CREATE TABLE IF NOT EXISTS score_leases (
        job TEXT NOT NULL,
        range_no BIGINT NOT NULL,
        first_id TEXT NOT NULL,
        last_id TEXT NOT NULL,
        requests BIGINT NOT NULL,
        state TEXT NOT NULL,
        worker TEXT,
        lease_until BIGINT NOT NULL DEFAULT 0,
        attempts BIGINT NOT NULL DEFAULT 0,
        finished_by TEXT,
        PRIMARY KEY (job, range_no)
    )";

/// One range of a job's plan: request ids from `first_id` to `last_id` (inclusive, in the
/// store's request id order), `requests` of them when planned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedRange {
    pub first_id: String,
    pub last_id: String,
    pub requests: u64,
}

/// A range leased to a worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeasedRange {
    pub range_no: i64,
    pub first_id: String,
    pub last_id: String,
    /// How many times the range was leased, this lease included (more than 1: taken over).
    pub attempts: i64,
}

/// Where a job stands.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct LeaseProgress {
    pub ranges: u64,
    pub done: u64,
    /// Leased and not done (held, or held by a worker that died, until the lease expires).
    pub leased: u64,
    pub todo: u64,
    /// Requests in the done ranges, as planned.
    pub requests_done: u64,
    /// Leases beyond the first of a range: ranges taken over from a worker that stopped.
    pub takeovers: u64,
}

/// Cuts sorted request ids into ranges of `size`.
pub fn plan(ids: &[String], size: usize) -> Vec<PlannedRange> {
    ids.chunks(size.max(1))
        .map(|c| PlannedRange { first_id: c[0].clone(), last_id: c[c.len() - 1].clone(), requests: c.len() as u64 })
        .collect()
}
