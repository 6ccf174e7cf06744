//! Whole lines to the client. A streamed answer (NDJSON, or SSE for OpenAI clients) is
//! passed on up to its last complete line (SSE: event), and a trailing partial one is
//! held until the rest arrives. When the backend dies mid-line the fragment is dropped,
//! so the error line corral adds (`failure`) is a line of its own and every line the
//! client reads parses.
//!
//! A chunk that ends on a boundary with nothing held — nearly every chunk Ollama sends
//! — passes through untouched, without a copy. A partial line longer than `MAX_HELD`
//! passes through as it comes rather than being buffered without bound; the client is
//! then mid-line, and `separator` says what starts a fresh one.

use bytes::{Bytes, BytesMut};

/// The longest partial line (or SSE event) held back.
pub(super) const MAX_HELD: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unit {
    /// NDJSON: a line ends at `\n`.
    Line,
    /// SSE: an event ends at a blank line (`\n\n` or `\n\r\n`).
    Event,
}

#[derive(Debug, Default)]
pub struct LineFramer {
    /// `None`: not a line stream, passed through as is.
    unit: Option<Unit>,
    held: BytesMut,
    /// The client has been sent part of a line (or event) it has not seen the end of.
    mid_unit: bool,
}

impl LineFramer {
    /// A framer for an answer with this `Content-Type`.
    pub fn for_content_type(content_type: Option<&[u8]>) -> LineFramer {
        let ct = content_type.unwrap_or_default();
        let essence = ct
            .split(|&b| b == b';')
            .next()
            .unwrap_or_default()
            .trim_ascii();
        let unit = if essence.eq_ignore_ascii_case(b"text/event-stream") {
            Some(Unit::Event)
        } else if essence.len() >= 6 && essence[essence.len() - 6..].eq_ignore_ascii_case(b"ndjson")
        {
            // application/x-ndjson (Ollama) and application/ndjson.
            Some(Unit::Line)
        } else {
            None
        };
        LineFramer {
            unit,
            ..LineFramer::default()
        }
    }

    /// Rewrites one body chunk on its way to the client.
    pub fn frame(&mut self, body: &mut Option<Bytes>, end_of_stream: bool) {
        let Some(unit) = self.unit else {
            return;
        };
        if end_of_stream && self.held.is_empty() {
            return;
        }
        let chunk = body.take().unwrap_or_default();
        if end_of_stream {
            // A complete answer may end without a newline: nothing is torn.
            *body = Some(self.take_held_with(&chunk));
            return;
        }
        if chunk.is_empty() {
            return;
        }
        match last_boundary_end(unit, &self.held, &chunk) {
            Some(end) if end == chunk.len() && self.held.is_empty() => {
                self.mid_unit = false;
                *body = Some(chunk);
            }
            Some(end) => {
                let whole = if self.held.is_empty() {
                    chunk.slice(..end)
                } else {
                    self.take_held_with(&chunk[..end])
                };
                self.mid_unit = false;
                *body = Some(self.hold(whole, &chunk[end..]));
            }
            None => {
                *body = Some(self.hold(Bytes::new(), &chunk)).filter(|b| !b.is_empty());
            }
        }
    }

    /// Adds `partial` to what is held and returns `ready`; past `MAX_HELD` everything
    /// held goes out with it instead.
    fn hold(&mut self, ready: Bytes, partial: &[u8]) -> Bytes {
        if self.held.len() + partial.len() <= MAX_HELD {
            self.held.extend_from_slice(partial);
            return ready;
        }
        self.mid_unit = true;
        let mut out = BytesMut::with_capacity(ready.len() + self.held.len() + partial.len());
        out.extend_from_slice(&ready);
        out.extend_from_slice(&self.held);
        out.extend_from_slice(partial);
        self.held.clear();
        out.freeze()
    }

    fn take_held_with(&mut self, rest: &[u8]) -> Bytes {
        if self.held.is_empty() {
            return Bytes::copy_from_slice(rest);
        }
        self.held.extend_from_slice(rest);
        self.held.split().freeze()
    }

    /// The answer broke off: drops the held fragment; returns its length.
    pub fn discard(&mut self) -> usize {
        let n = self.held.len();
        self.held.clear();
        n
    }

    /// What to send before a line of corral's own so that it starts fresh: nothing,
    /// unless part of an over-long line already went out.
    pub fn separator(&self) -> &'static [u8] {
        match (self.mid_unit, self.unit) {
            (true, Some(Unit::Line)) => b"\n",
            (true, Some(Unit::Event)) => b"\n\n",
            _ => b"",
        }
    }
}

/// Index in `chunk` just past its last line/event boundary. An SSE boundary may begin
/// in what is held (`held` ends with `\n`, the chunk starts with `\n`).
fn last_boundary_end(unit: Unit, held: &[u8], chunk: &[u8]) -> Option<usize> {
    match unit {
        Unit::Line => chunk.iter().rposition(|&b| b == b'\n').map(|i| i + 1),
        Unit::Event => {
            let byte_at = |i: isize| -> Option<u8> {
                if i >= 0 {
                    chunk.get(i as usize).copied()
                } else {
                    let back = held.len().checked_sub(i.unsigned_abs())?;
                    held.get(back).copied()
                }
            };
            let mut end = chunk.len();
            while let Some(i) = chunk[..end].iter().rposition(|&b| b == b'\n') {
                let i = i as isize;
                let blank = byte_at(i - 1) == Some(b'\n')
                    || (byte_at(i - 1) == Some(b'\r') && byte_at(i - 2) == Some(b'\n'));
                if blank {
                    return Some(i as usize + 1);
                }
                end = i as usize;
            }
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NDJSON: Option<&[u8]> = Some(b"application/x-ndjson");
    const SSE: Option<&[u8]> = Some(b"text/event-stream; charset=utf-8");

    /// Feeds `chunks`, then either a clean end or a failure; returns what the client got.
    fn run(ct: Option<&[u8]>, chunks: &[&[u8]], clean_end: bool) -> Vec<u8> {
        let mut f = LineFramer::for_content_type(ct);
        let mut out = Vec::new();
        for c in chunks {
            let mut body = Some(Bytes::copy_from_slice(c));
            f.frame(&mut body, false);
            out.extend_from_slice(body.as_deref().unwrap_or_default());
        }
        if clean_end {
            let mut body = None;
            f.frame(&mut body, true);
            out.extend_from_slice(body.as_deref().unwrap_or_default());
        } else {
            f.discard();
            out.extend_from_slice(f.separator());
            out.extend_from_slice(b"{\"error\":\"x\"}\n");
        }
        out
    }

    #[test]
    fn a_fragment_is_dropped_and_the_error_is_its_own_line() {
        let got = run(
            NDJSON,
            &[b"{\"a\":1}\n{\"b\":", b"2}\n{\"c\":\"trunc"],
            false,
        );
        assert_eq!(got, b"{\"a\":1}\n{\"b\":2}\n{\"error\":\"x\"}\n");
        for line in got.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            serde_json::from_slice::<serde_json::Value>(line).unwrap();
        }
    }

    #[test]
    fn rechunking_never_changes_a_complete_answer() {
        let body: &[u8] = b"{\"a\":1}\n{\"b\":2}\n{\"done\":true}";
        for split in 0..body.len() {
            let (x, y) = body.split_at(split);
            assert_eq!(run(NDJSON, &[x, y], true), body, "split at {split}");
        }
        let bytes: Vec<&[u8]> = body.chunks(1).collect();
        assert_eq!(run(NDJSON, &bytes, true), body);
    }

    #[test]
    fn whole_lines_pass_without_a_copy() {
        let mut f = LineFramer::for_content_type(NDJSON);
        let chunk = Bytes::from_static(b"{\"a\":1}\n{\"b\":2}\n");
        let mut body = Some(chunk.clone());
        f.frame(&mut body, false);
        assert_eq!(body.unwrap().as_ptr(), chunk.as_ptr());
    }

    #[test]
    fn sse_is_cut_at_events_even_when_the_blank_line_straddles_chunks() {
        let got = run(
            SSE,
            &[
                b"data: {\"a\":1}\n",
                b"\ndata: {\"b\":2}\n",
                b"\r\n",
                b"data: {\"c\"",
            ],
            false,
        );
        assert_eq!(
            got,
            b"data: {\"a\":1}\n\ndata: {\"b\":2}\n\r\n{\"error\":\"x\"}\n".as_slice()
        );
    }

    #[test]
    fn an_over_long_line_passes_through_and_the_error_starts_a_new_line() {
        let long = vec![b'x'; MAX_HELD + 10];
        let got = run(NDJSON, &[b"{\"a\":1}\n", &long[..100], &long[100..]], false);
        let mut want = b"{\"a\":1}\n".to_vec();
        want.extend_from_slice(&long);
        want.extend_from_slice(b"\n{\"error\":\"x\"}\n");
        assert_eq!(got, want);
    }

    #[test]
    fn other_answers_pass_untouched() {
        let got = run(Some(b"application/json"), &[b"{\"a\":", b"1}"], true);
        assert_eq!(got, b"{\"a\":1}");
    }
}
