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

    /// Runs `f` once per `log_id` chunk, every chunk reading the same snapshot of the store.
    /// One chunk runs on this connection inside one read transaction; several run each on a
    /// read-only connection of its own (WAL readers do not block each other), the first in this
    /// thread and the others in threads of their own, so none fills this connection's 64 MiB
    /// page cache with pages read once. The readers start their transactions while this
    /// connection holds the write lock, so no commit can land between them and they all see
    /// the same committed state; when the lock is not to be had within
    /// [`SNAPSHOT_LOCK_WAIT_MS`] (a long `--strict` ingest holds it), the chunks are read one
    /// after the other on this connection instead. Results come back in chunk order.
    pub(super) fn on_chunks<T: Send>(
        &self,
        f: impl Fn(&Connection, i64, i64) -> rusqlite::Result<T> + Sync,
    ) -> StoreResult<Vec<T>> {
        let chunks = self.log_id_chunks()?;
        if chunks.len() > 1 {
            let readers =
                chunks.iter().map(|_| self.reader()).collect::<rusqlite::Result<Vec<_>>>().map_err(self.err())?;
            if self.start_shared_snapshot(&readers).map_err(self.err())? {
                let f = &f;
                let results: Vec<rusqlite::Result<T>> = std::thread::scope(|scope| {
                    let mut work = readers.into_iter().zip(chunks.iter().copied());
                    let (first, (a0, b0)) = work.next().expect("several chunks");
                    let others: Vec<_> =
                        work.map(|(conn, (a, b))| scope.spawn(move || read_committed(&conn, f, a, b))).collect();
                    let mut results = vec![read_committed(&first, f, a0, b0)];
                    for h in others {
                        results.push(h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)));
                    }
                    results
                });
                return results.into_iter().map(|r| r.map_err(self.err())).collect();
            }
        }
        if self.in_tx {
            return chunks.iter().map(|&(a, b)| f(&self.conn, a, b).map_err(self.err())).collect();
        }
        self.conn.execute_batch("BEGIN DEFERRED").map_err(self.err())?;
        let results: rusqlite::Result<Vec<T>> = chunks.iter().map(|&(a, b)| f(&self.conn, a, b)).collect();
        // A read transaction: ending it cannot lose anything.
        let end = self.conn.execute_batch("COMMIT");
        let results = results.map_err(self.err())?;
        end.map_err(self.err())?;
        Ok(results)
    }

    /// A read-only connection to the same file, with the reading pragmas.
    fn reader(&self) -> rusqlite::Result<Connection> {
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.execute_batch(READ_PRAGMAS)?;
        conn.execute_batch(&format!("PRAGMA cache_size = -{READER_CACHE_KIB};"))?;
        Ok(conn)
    }

    /// Starts a read transaction on every reader while this connection holds the write lock,
    /// so that all of them read the same snapshot; false (and nothing started) when the lock
    /// was not free within [`SNAPSHOT_LOCK_WAIT_MS`].
    fn start_shared_snapshot(&self, readers: &[Connection]) -> rusqlite::Result<bool> {
        self.conn.execute_batch(&format!("PRAGMA busy_timeout = {SNAPSHOT_LOCK_WAIT_MS};"))?;
        let locked = self.conn.execute_batch("BEGIN IMMEDIATE");
        self.conn.execute_batch(READ_PRAGMAS)?;
        match locked {
            Ok(()) => {}
            Err(rusqlite::Error::SqliteFailure(e, _)) if e.code == rusqlite::ErrorCode::DatabaseBusy => {
                return Ok(false);
            }
            Err(e) => return Err(e),
        }
        let started = readers.iter().try_for_each(|c| {
            c.execute_batch("BEGIN DEFERRED")?;
            // The first read fixes the transaction's snapshot.
            c.query_row("SELECT COUNT(*) FROM (SELECT 1 FROM eval_logs LIMIT 1)", [], |_| Ok(()))
        });
        self.conn.execute_batch("ROLLBACK")?;
        started.map(|()| true)
    }
}

/// How long a chunked read waits for the write lock to line up its readers' snapshots before
/// reading on one connection instead, in milliseconds.
const SNAPSHOT_LOCK_WAIT_MS: u64 = 2000;

/// Runs `f` on a reader whose read transaction is open, then ends the transaction.
fn read_committed<T>(
    conn: &Connection,
    f: &(impl Fn(&Connection, i64, i64) -> rusqlite::Result<T> + Sync),
    a: i64,
    b: i64,
) -> rusqlite::Result<T> {
    let r = f(conn, a, b);
    let end = conn.execute_batch("COMMIT");
    let r = r?;
    end.map(|()| r)
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

#[cfg(test)]
mod snapshot_tests {
    use std::sync::Mutex;

    use super::*;
    use crate::store::sqlite::tests::{fixture, load};

    /// Regression: each chunk used to read on a connection with a snapshot of its own, so a
    /// commit landing between the chunks' first reads gave a state that never existed.
    #[test]
    fn analyses_read_one_snapshot() {
        let (logs, events, second) = fixture();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let mut s = SqliteStore::open(&path).unwrap();
        load(&mut s, &logs, &events, &second);
        s.parallel_min_logs = 0;
        let before: i64 = s.conn.query_row("SELECT COUNT(*) FROM eval_logs", [], |r| r.get(0)).unwrap();
        let writer = Mutex::new(Connection::open(&path).unwrap());
        writer.lock().unwrap().execute_batch("PRAGMA busy_timeout = 10000;").unwrap();
        let counts = s
            .on_chunks(|conn, a, b| {
                if a == i64::MIN {
                    // The first chunk commits a new log (it lands in the last chunk's range)...
                    writer
                        .lock()
                        .unwrap()
                        .execute("INSERT INTO eval_logs (request_id, ts) VALUES ('late', 0)", [])
                        .unwrap();
                } else {
                    // ...while the other chunks read after it.
                    std::thread::sleep(std::time::Duration::from_millis(150));
                }
                conn.query_row("SELECT COUNT(*) FROM eval_logs WHERE log_id BETWEEN ?1 AND ?2", [a, b], |r| {
                    r.get::<_, i64>(0)
                })
            })
            .unwrap();
        if counts.len() > 1 {
            assert_eq!(counts.iter().sum::<i64>(), before, "chunks {counts:?} read different states");
        }
        let after: i64 = s.conn.query_row("SELECT COUNT(*) FROM eval_logs", [], |r| r.get(0)).unwrap();
        assert_eq!(after, before + 1);
    }
}
