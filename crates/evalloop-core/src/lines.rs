//! Reading an ingest file's lines with bounded memory: `\n`, `\r\n` or a lone `\r` ends a
//! line, a UTF-8 byte order mark before the first is dropped, and a line longer than the limit
//! is skipped (and reported) without being held whole.

use std::io::{self, BufRead, Read};

/// The default longest line ingest reads, in bytes (16 MiB); `--max-line-bytes` changes it.
pub const DEFAULT_MAX_LINE_BYTES: usize = 16 << 20;

/// How much of an over-long line is kept, for the rejects file.
const HEAD_BYTES: usize = 1024;

/// One line as read.
#[derive(Debug, PartialEq, Eq)]
pub enum Line<'a> {
    /// The line, without its end.
    Text(&'a [u8]),
    /// The line was longer than the limit: its length and first bytes.
    TooLong { bytes: u64, head: &'a [u8] },
}

/// Splits a byte stream into numbered lines.
pub struct LineReader<R> {
    inner: R,
    buf: Vec<u8>,
    max: usize,
    line: u64,
    /// The last line ended with `\r`: a `\n` right after it belongs to it.
    skip_lf: bool,
}

impl<R: BufRead> LineReader<R> {
    /// Lines of `inner`, none longer than `max` bytes held in memory.
    pub fn new(inner: R, max: usize) -> Self {
        LineReader { inner, buf: Vec::with_capacity(4096), max: max.max(1), line: 0, skip_lf: false }
    }

    /// The next line and its number (from 1), or `None` at the end.
    pub fn next_line(&mut self) -> io::Result<Option<(u64, Line<'_>)>> {
        self.buf.clear();
        let mut total: u64 = 0;
        let mut any = false;
        loop {
            let avail = match self.inner.fill_buf() {
                Ok(b) => b,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if avail.is_empty() {
                break;
            }
            if self.skip_lf {
                self.skip_lf = false;
                if avail[0] == b'\n' {
                    self.inner.consume(1);
                    continue;
                }
            }
            let (n, ended) = match avail.iter().position(|&c| c == b'\n' || c == b'\r') {
                Some(i) => {
                    self.skip_lf = avail[i] == b'\r';
                    (i, true)
                }
                None => (avail.len(), false),
            };
            let room = self.max.saturating_sub(self.buf.len());
            self.buf.extend_from_slice(&avail[..n.min(room)]);
            total += n as u64;
            any = true;
            self.inner.consume(if ended { n + 1 } else { n });
            if ended {
                break;
            }
        }
        if !any {
            return Ok(None);
        }
        self.line += 1;
        if self.line == 1 && self.buf.starts_with(b"\xEF\xBB\xBF") {
            self.buf.drain(..3);
            total -= 3;
        }
        if total > self.max as u64 {
            let head = &self.buf[..self.buf.len().min(HEAD_BYTES)];
            return Ok(Some((self.line, Line::TooLong { bytes: total, head })));
        }
        Ok(Some((self.line, Line::Text(&self.buf))))
    }
}

/// A reader that fails, naming the line, once a line grows past `max` bytes: CSV input, whose
/// records the `csv` crate holds whole, cannot skip such a line and go on.
pub struct CappedLines<R> {
    inner: R,
    max: u64,
    line: u64,
    current: u64,
}

impl<R: Read> CappedLines<R> {
    pub fn new(inner: R, max: usize) -> Self {
        CappedLines { inner, max: max.max(1) as u64, line: 1, current: 0 }
    }
}

impl<R: Read> Read for CappedLines<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(out)?;
        for &c in &out[..n] {
            if c == b'\n' {
                self.line += 1;
                self.current = 0;
            } else {
                self.current += 1;
                if self.current > self.max {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("line {} is longer than {} bytes (--max-line-bytes)", self.line, self.max),
                    ));
                }
            }
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(input: &[u8], max: usize) -> Vec<(u64, String)> {
        let mut r = LineReader::new(input, max);
        let mut out = Vec::new();
        while let Some((n, l)) = r.next_line().unwrap() {
            out.push((
                n,
                match l {
                    Line::Text(t) => String::from_utf8_lossy(t).into_owned(),
                    Line::TooLong { bytes, .. } => format!("<{bytes} bytes>"),
                },
            ));
        }
        out
    }

    #[test]
    fn every_line_end_and_a_bom() {
        let got = lines(b"\xEF\xBB\xBFa\r\nb\rc\n\nd", 100);
        let want: Vec<(u64, String)> =
            [(1, "a"), (2, "b"), (3, "c"), (4, ""), (5, "d")].iter().map(|(n, s)| (*n, s.to_string())).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn a_long_line_is_skipped_and_the_stream_goes_on() {
        let mut input = b"ok\n".to_vec();
        input.extend(std::iter::repeat_n(b'x', 10_000));
        input.extend(b"\nafter\n");
        // A reader with a small buffer, so the long line spans many fills.
        let got = lines_with(&input, 100);
        assert_eq!(got, vec![(1, "ok".into()), (2, "<10000 bytes>".into()), (3, "after".into())]);
    }

    fn lines_with(input: &[u8], max: usize) -> Vec<(u64, String)> {
        let r = io::BufReader::with_capacity(64, input);
        let mut lr = LineReader::new(r, max);
        let mut out = Vec::new();
        while let Some((n, l)) = lr.next_line().unwrap() {
            out.push((
                n,
                match l {
                    Line::Text(t) => String::from_utf8_lossy(t).into_owned(),
                    Line::TooLong { bytes, head } => {
                        assert!(head.len() <= HEAD_BYTES);
                        format!("<{bytes} bytes>")
                    }
                },
            ));
        }
        out
    }

    #[test]
    fn capped_csv_lines_fail_naming_the_line() {
        let mut r = CappedLines::new(&b"a,b\n1,2\n333333333\n"[..], 5);
        let mut s = String::new();
        let e = r.read_to_string(&mut s).unwrap_err();
        assert!(e.to_string().contains("line 3 is longer than 5 bytes"), "{e}");
    }
}
