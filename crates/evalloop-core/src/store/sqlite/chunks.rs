//! Reads of a large store split by `log_id` range, each range on a read-only connection and a
//! thread of its own.

use rusqlite::{Connection, OpenFlags};

use super::{READ_PRAGMAS, SqliteStore};
use crate::store::StoreResult;

/// Stores with fewer logs than this are read on one connection; larger ones are split by
/// `log_id` range over [`read_threads`] connections.
pub(super) const PARALLEL_MIN_LOGS: i64 = 200_000;

/// Page cache of the extra reading connections, in KiB (the writer's is 64 MiB). Their reads
/// are one pass over each table; a small cache recycles its pages instead of touching fresh
/// memory for every page read.
const READER_CACHE_KIB: i64 = 8192;

/// How many connections read a large store at once: the available cores, at most 8.
pub(super) fn read_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get()).min(8)
}

impl SqliteStore {
    /// Splits the `log_id` range into one chunk per reading thread when the store is large
    /// enough and no write transaction is open (other connections would not see its rows);
    /// otherwise one chunk covering everything.
    pub(super) fn log_id_chunks(&self) -> StoreResult<Vec<(i64, i64)>> {
        let threads = read_threads() as i64;
        if self.in_tx || threads < 2 {
            return Ok(vec![(i64::MIN, i64::MAX)]);
        }
        let (lo, hi): (Option<i64>, Option<i64>) = self
            .conn
            .query_row(
                // Two subqueries: each is one B-tree descent, where MIN and MAX together scan.
                "SELECT (SELECT MIN(log_id) FROM eval_logs), (SELECT MAX(log_id) FROM eval_logs)",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .map_err(self.err())?;
        let (Some(lo), Some(hi)) = (lo, hi) else { return Ok(vec![(i64::MIN, i64::MAX)]) };
        let span = hi.saturating_sub(lo).saturating_add(1);
        if span < self.parallel_min_logs.max(threads) {
            return Ok(vec![(i64::MIN, i64::MAX)]);
        }
        let step = span / threads;
        Ok((0..threads)
            .map(|i| {
                let a = if i == 0 { i64::MIN } else { lo + i * step };
                let b = if i == threads - 1 { i64::MAX } else { lo + (i + 1) * step - 1 };
                (a, b)
            })
            .collect())
    }

    /// Runs `f` once per `log_id` chunk. One chunk runs on this connection; several run each on
    /// a read-only connection of its own (WAL readers do not block each other), the first in
    /// this thread and the others in threads of their own, so none fills this connection's
    /// 64 MiB page cache with pages read once. Results come back in chunk order.
    pub(super) fn on_chunks<T: Send>(
        &self,
        f: impl Fn(&Connection, i64, i64) -> rusqlite::Result<T> + Sync,
    ) -> StoreResult<Vec<T>> {
        let chunks = self.log_id_chunks()?;
        if let [(a, b)] = chunks[..] {
            return Ok(vec![f(&self.conn, a, b).map_err(self.err())?]);
        }
        let path = self.path.as_path();
        let f = &f;
        let reader = move |a: i64, b: i64| -> rusqlite::Result<T> {
            let conn =
                Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)?;
            conn.execute_batch(READ_PRAGMAS)?;
            conn.execute_batch(&format!("PRAGMA cache_size = -{READER_CACHE_KIB};"))?;
            f(&conn, a, b)
        };
        let results: Vec<rusqlite::Result<T>> = std::thread::scope(|scope| {
            let others: Vec<_> = chunks[1..].iter().map(|&(a, b)| scope.spawn(move || reader(a, b))).collect();
            let mut results = vec![reader(chunks[0].0, chunks[0].1)];
            for h in others {
                results.push(h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)));
            }
            results
        });
        results.into_iter().map(|r| r.map_err(self.err())).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sqlite::tests::{answers, fixture, load};

    #[test]
    fn chunked_reads_on_several_connections_answer_as_one() {
        let (logs, events, second) = fixture();
        let dir = tempfile::tempdir().unwrap();
        let mut s = SqliteStore::open(&dir.path().join("t.db")).unwrap();
        load(&mut s, &logs, &events, &second);
        let one = answers(&s);
        s.parallel_min_logs = 0;
        let chunks = s.log_id_chunks().unwrap();
        assert_eq!(chunks.len(), read_threads(), "the store is split when the machine has cores to spare");
        assert_eq!(answers(&s), one);
    }
}
