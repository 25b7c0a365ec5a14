//! A prepared statement stepped through SQLite's C API, for scans that read a few integer or
//! real columns from millions of rows (`cohort_stats`): rusqlite's checked row access (a type
//! lookup, a column-count check and a `ValueRef` per column read) was about a fifth of that
//! command's time. Only what those scans need: bind, step, read a column of the current row.

use std::ffi::c_int;
use std::marker::PhantomData;

use rusqlite::types::Value;
use rusqlite::{Connection, ffi};

/// A statement prepared on a connection it borrows, finalized on drop. Column reads are valid
/// after [`RawStmt::step`] returned `true`, until the next step.
pub(super) struct RawStmt<'c> {
    stmt: *mut ffi::sqlite3_stmt,
    db: *mut ffi::sqlite3,
    _conn: PhantomData<&'c Connection>,
}

impl<'c> RawStmt<'c> {
    /// Prepares `sql` (one statement) and binds `params` to `?1`, `?2`...
    pub(super) fn new(conn: &'c Connection, sql: &str, params: &[Value]) -> rusqlite::Result<RawStmt<'c>> {
        // SAFETY: the handle is the open connection `conn`, which outlives the statement (the
        // borrow 'c), and is used on this thread only (rusqlite's `Connection` is not `Sync`).
        let db = unsafe { conn.handle() };
        let len = c_int::try_from(sql.len()).map_err(|_| rusqlite::Error::InvalidQuery)?;
        let mut stmt = std::ptr::null_mut();
        // SAFETY: `sql` is valid for `len` bytes; SQLite writes the statement pointer.
        let rc = unsafe { ffi::sqlite3_prepare_v2(db, sql.as_ptr().cast(), len, &mut stmt, std::ptr::null_mut()) };
        let out = RawStmt { stmt, db, _conn: PhantomData };
        out.check(rc)?;
        if stmt.is_null() {
            return Err(rusqlite::Error::InvalidQuery);
        }
        for (i, v) in params.iter().enumerate() {
            let i = i as c_int + 1;
            // SAFETY: `stmt` is a live statement; text is copied by SQLite (SQLITE_TRANSIENT).
            let rc = unsafe {
                match v {
                    Value::Null => ffi::sqlite3_bind_null(stmt, i),
                    Value::Integer(n) => ffi::sqlite3_bind_int64(stmt, i, *n),
                    Value::Real(x) => ffi::sqlite3_bind_double(stmt, i, *x),
                    Value::Text(t) => ffi::sqlite3_bind_text(
                        stmt,
                        i,
                        t.as_ptr().cast(),
                        c_int::try_from(t.len()).map_err(|_| rusqlite::Error::InvalidQuery)?,
                        ffi::SQLITE_TRANSIENT(),
                    ),
                    Value::Blob(b) => ffi::sqlite3_bind_blob(
                        stmt,
                        i,
                        b.as_ptr().cast(),
                        c_int::try_from(b.len()).map_err(|_| rusqlite::Error::InvalidQuery)?,
                        ffi::SQLITE_TRANSIENT(),
                    ),
                }
            };
            out.check(rc)?;
        }
        Ok(out)
    }

    /// The error for a result code other than `SQLITE_OK`, with the connection's message.
    fn check(&self, rc: c_int) -> rusqlite::Result<()> {
        if rc == ffi::SQLITE_OK {
            return Ok(());
        }
        // SAFETY: `db` is the open connection; the message is copied before any other call.
        let message = unsafe {
            let m = ffi::sqlite3_errmsg(self.db);
            (!m.is_null()).then(|| std::ffi::CStr::from_ptr(m).to_string_lossy().into_owned())
        };
        Err(rusqlite::Error::SqliteFailure(ffi::Error::new(rc), message))
    }

    /// Advances to the next row: `true` when there is one, `false` when done.
    pub(super) fn step(&mut self) -> rusqlite::Result<bool> {
        // SAFETY: `stmt` is a live statement of this thread's connection.
        match unsafe { ffi::sqlite3_step(self.stmt) } {
            ffi::SQLITE_ROW => Ok(true),
            ffi::SQLITE_DONE => Ok(false),
            rc => self.check(rc).map(|_| false),
        }
    }

    /// Column `i` of the current row as an integer (SQLite's conversion; NULL is 0).
    pub(super) fn int(&self, i: c_int) -> i64 {
        // SAFETY: a live statement; callers pass column indexes of their own SELECT list (SQLite
        // answers an out-of-range index with a NULL value and SQLITE_RANGE, never a bad read).
        unsafe { ffi::sqlite3_column_int64(self.stmt, i) }
    }

    /// Column `i` of the current row as a real (SQLite's conversion; NULL is 0.0).
    pub(super) fn real(&self, i: c_int) -> f64 {
        // SAFETY: as in `int`.
        unsafe { ffi::sqlite3_column_double(self.stmt, i) }
    }

    /// Column `i` as a real, `None` when NULL.
    pub(super) fn opt_real(&self, i: c_int) -> Option<f64> {
        // SAFETY: as in `int`.
        (unsafe { ffi::sqlite3_column_type(self.stmt, i) } != ffi::SQLITE_NULL).then(|| self.real(i))
    }

    /// Column `i` as text bytes when its value is text, else `None` (NULL, numbers, blobs).
    pub(super) fn text(&self, i: c_int) -> Option<&[u8]> {
        // SAFETY: as in `int`; the pointer and length come from the same value, which stays
        // valid until the next step or finalize (both take `&mut self` or `self`).
        unsafe {
            if ffi::sqlite3_column_type(self.stmt, i) != ffi::SQLITE_TEXT {
                return None;
            }
            let p = ffi::sqlite3_column_text(self.stmt, i);
            let n = ffi::sqlite3_column_bytes(self.stmt, i);
            Some(if p.is_null() || n <= 0 { &[] } else { std::slice::from_raw_parts(p, n as usize) })
        }
    }
}

impl Drop for RawStmt<'_> {
    fn drop(&mut self) {
        // SAFETY: finalized once; a null statement is a no-op.
        unsafe { ffi::sqlite3_finalize(self.stmt) };
    }
}
