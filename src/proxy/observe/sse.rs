//! Server-Sent Events as the WHATWG spec frames them: lines end in LF, CRLF or CR;
//! `field:value` with one optional space after the colon; `:` starts a comment; a
//! blank line ends the event, whose `data` lines are joined with `\n`. Each event's
//! data is one JSON object, or OpenAI's `[DONE]`.

use super::{StreamObserver, MAX_PARTIAL};

#[derive(Debug, Default)]
pub(super) struct SseState {
    /// The line a read cut in two.
    line: Vec<u8>,
    /// The current line outgrew the bound: the rest of it is skipped.
    line_dropped: bool,
    /// The last byte was a CR, so a LF right after it ends no further line.
    after_cr: bool,
    /// The current event's data lines, joined.
    data: Vec<u8>,
    has_data: bool,
    /// The current event lost a line or outgrew the bound: it is skipped whole.
    event_dropped: bool,
}

impl StreamObserver {
    pub(super) fn feed_sse(&mut self, mut input: &[u8]) {
        if self.sse.after_cr && !input.is_empty() {
            self.sse.after_cr = false;
            if input[0] == b'\n' {
                input = &input[1..];
            }
        }
        while let Some(i) = memchr::memchr2(b'\n', b'\r', input) {
            let text = &input[..i];
            let ended_by_cr = input[i] == b'\r';
            input = &input[i + 1..];
            if ended_by_cr {
                match input.first() {
                    Some(b'\n') => input = &input[1..],
                    None => self.sse.after_cr = true,
                    Some(_) => {}
                }
            }
            if self.sse.line.is_empty() && !self.sse.line_dropped {
                self.sse_line(text);
            } else {
                self.extend_line(text);
                let line = std::mem::take(&mut self.sse.line);
                if std::mem::take(&mut self.sse.line_dropped) {
                    self.sse.event_dropped = true;
                } else {
                    self.sse_line(&line);
                }
                self.sse.line = line;
                self.sse.line.clear();
            }
        }
        self.extend_line(input);
    }

    pub(super) fn finish_sse(&mut self) {
        if std::mem::take(&mut self.sse.line_dropped) {
            self.sse.event_dropped = true;
        } else if !self.sse.line.is_empty() {
            let line = std::mem::take(&mut self.sse.line);
            self.sse_line(&line);
        }
        self.sse.after_cr = false;
        self.dispatch_event();
    }

    fn extend_line(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        if self.sse.line_dropped {
            self.skipped_bytes += bytes.len() as u64;
        } else if self.sse.line.len() + bytes.len() > MAX_PARTIAL {
            self.skipped_bytes += (self.sse.line.len() + bytes.len()) as u64;
            self.sse.line.clear();
            self.sse.line_dropped = true;
        } else {
            self.sse.line.extend_from_slice(bytes);
        }
    }

    fn sse_line(&mut self, line: &[u8]) {
        if line.is_empty() {
            return self.dispatch_event();
        }
        if line.len() > MAX_PARTIAL {
            // As if it had come in pieces: the bound must not depend on the reads.
            self.skipped_bytes += line.len() as u64;
            self.sse.event_dropped = true;
            return;
        }
        let (field, value) = match memchr::memchr(b':', line) {
            Some(0) => return, // a comment
            Some(colon) => (&line[..colon], &line[colon + 1..]),
            None => (line, &[][..]),
        };
        let value = value.strip_prefix(b" ").unwrap_or(value);
        match field {
            b"data" => {
                let joined = self.sse.data.len() + usize::from(self.sse.has_data) + value.len();
                if self.sse.event_dropped || joined > MAX_PARTIAL {
                    self.skipped_bytes += value.len() as u64;
                    self.sse.event_dropped = true;
                    return;
                }
                if self.sse.has_data {
                    self.sse.data.push(b'\n');
                }
                self.sse.data.extend_from_slice(value);
                self.sse.has_data = true;
            }
            b"event" | b"id" | b"retry" => {}
            _ => self.skipped_bytes += line.len() as u64,
        }
    }

    fn dispatch_event(&mut self) {
        let had_data = std::mem::take(&mut self.sse.has_data);
        let data = std::mem::take(&mut self.sse.data);
        if std::mem::take(&mut self.sse.event_dropped) {
            self.skipped_bytes += data.len() as u64;
        } else if had_data {
            if data.trim_ascii() == b"[DONE]" {
                self.frames += 1;
                self.saw_done = true;
            } else {
                match self.parse_one(&data) {
                    Some(frame) => self.absorb(&frame),
                    None => self.skipped_bytes += data.len() as u64,
                }
            }
        }
        self.sse.data = data;
        self.sse.data.clear();
    }
}
