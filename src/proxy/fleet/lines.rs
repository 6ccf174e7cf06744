//! Splitting a box's answer into lines as chunks arrive, in linear time (each byte is
//! scanned once, however the chunks fall) and with a bound on how long a line may grow.

use bytes::{Bytes, BytesMut};

use crate::bounded_body::Size;

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("answered a line longer than {0}")]
pub(super) struct LineTooLong(pub Size);

pub(super) struct Lines {
    buf: BytesMut,
    /// Bytes of `buf` already searched for a newline: a line arriving in many chunks is
    /// not searched again from its start each time.
    scanned: usize,
    max_line: usize,
}

impl Lines {
    pub(super) fn new(max_line: usize) -> Lines {
        Lines {
            buf: BytesMut::new(),
            scanned: 0,
            max_line,
        }
    }

    pub(super) fn push(&mut self, chunk: &[u8]) {
        self.buf.extend_from_slice(chunk);
    }

    /// The next complete line (without its newline), `None` until one is complete.
    pub(super) fn next_line(&mut self) -> Result<Option<Bytes>, LineTooLong> {
        match self.buf[self.scanned..].iter().position(|&b| b == b'\n') {
            Some(at) => {
                let end = self.scanned + at;
                self.scanned = 0;
                if end > self.max_line {
                    return Err(LineTooLong(Size(self.max_line)));
                }
                let mut line = self.buf.split_to(end + 1);
                line.truncate(end);
                Ok(Some(line.freeze()))
            }
            None => {
                self.scanned = self.buf.len();
                if self.buf.len() > self.max_line {
                    return Err(LineTooLong(Size(self.max_line)));
                }
                Ok(None)
            }
        }
    }

    /// What is left once the answer has ended: a last line without a newline.
    pub(super) fn finish(self) -> Bytes {
        self.buf.freeze()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_lines(chunks: &[&[u8]], max: usize) -> Result<Vec<Bytes>, LineTooLong> {
        let mut lines = Lines::new(max);
        let mut out = Vec::new();
        for chunk in chunks {
            lines.push(chunk);
            while let Some(line) = lines.next_line()? {
                out.push(line);
            }
        }
        let rest = lines.finish();
        if !rest.is_empty() {
            out.push(rest);
        }
        Ok(out)
    }

    #[test]
    fn lines_come_out_whole_however_the_chunks_fall() {
        let body: &[u8] = b"{\"a\":1}\n{\"b\":2}\n{\"c\":3}";
        let whole = all_lines(&[body], 64).unwrap();
        assert_eq!(whole, ["{\"a\":1}", "{\"b\":2}", "{\"c\":3}"]);
        for split in 0..body.len() {
            let (x, y) = body.split_at(split);
            assert_eq!(all_lines(&[x, y], 64).unwrap(), whole, "split at {split}");
        }
        let bytes: Vec<&[u8]> = body.chunks(1).collect();
        assert_eq!(all_lines(&bytes, 64).unwrap(), whole);
    }

    #[test]
    fn a_line_past_the_limit_is_refused_with_or_without_its_newline() {
        let long = vec![b'x'; 100];
        assert_eq!(all_lines(&[&long], 64), Err(LineTooLong(Size(64))));
        let mut with_newline = long.clone();
        with_newline.push(b'\n');
        assert_eq!(all_lines(&[&with_newline], 64), Err(LineTooLong(Size(64))));
        // Arriving a few bytes at a time changes nothing.
        let bits: Vec<&[u8]> = long.chunks(7).collect();
        assert_eq!(all_lines(&bits, 64), Err(LineTooLong(Size(64))));
        // Exactly at the limit is fine.
        assert_eq!(all_lines(&[&[b'y'; 64], b"\n"], 64).unwrap().len(), 1);
    }

    #[test]
    fn a_long_unterminated_line_is_scanned_once() {
        // Quadratic rescanning would make this take minutes; linear is instant.
        let mut lines = Lines::new(8 * 1024 * 1024);
        let chunk = [b'x'; 16];
        for _ in 0..(4 * 1024 * 1024 / chunk.len()) {
            lines.push(&chunk);
            assert_eq!(lines.next_line(), Ok(None));
        }
        assert_eq!(lines.finish().len(), 4 * 1024 * 1024);
    }
}
