//! Watches a response go by without changing it: when the first token came, whether
//! the stream reached its final chunk, and the statistics that chunk carries.
//!
//! Answers are read by meaning, not spelling: any JSON whitespace, key order or string
//! escape, split across reads at any byte. A body whose first non-blank byte is `{` is
//! read as a sequence of JSON objects — an NDJSON stream (Ollama) and one answer
//! pretty-printed over many lines are both that. Anything else is read as Server-Sent
//! Events (OpenAI streaming): `data:` with or without a space, LF, CRLF or CR line
//! ends, an event's data lines joined.
//!
//! Whole objects are parsed in place, into small typed probes (no `Value` tree), and
//! once the first content has been seen content is skipped unread. Only what a read
//! cut in two is copied, in at most [`MAX_PARTIAL`] bytes — long strings and number
//! arrays shortened on the way (see `pending`), so a long answer still fits. Past the
//! bound the object or SSE line is skipped and reading resumes after it.

mod frame;
mod lenient;
mod openai;
mod pending;
mod sse;
#[cfg(test)]
mod tests;

use bytes::Bytes;
use serde::de::IgnoredAny;

use frame::{ContentProbe, Frame, Probed};
use lenient::Presence;
use pending::{PendingObject, Progress};

/// Most bytes kept of an object, SSE line or SSE event that a read cut in two.
const MAX_PARTIAL: usize = 64 * 1024;

/// The final chunk's metrics (durations in nanoseconds). An OpenAI `usage` object
/// fills only the token counts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FinalStats {
    pub load_ns: u64,
    pub prompt_tokens: u64,
    pub prompt_ns: u64,
    pub completion_tokens: u64,
    pub completion_ns: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// Nothing but whitespace so far.
    Unknown,
    Json,
    Sse,
}

#[derive(Debug)]
pub struct StreamObserver {
    /// An object with generated content was seen (time to first token is taken then):
    /// non-empty `response`/`thinking`, `message` or an OpenAI choice's `delta`/`message`
    /// with `content`, `thinking`, `reasoning` or `tool_calls`, or a choice's `text`.
    pub saw_content: bool,
    /// The answer's final object was seen: Ollama's `done: true`, an OpenAI choice with
    /// a `finish_reason`, or SSE `data: [DONE]`.
    pub saw_done: bool,
    /// From Ollama's `done: true` object, else from the last OpenAI `usage` object.
    pub stats: Option<FinalStats>,
    /// An object with an `error` member was seen (Ollama's error line after a 200).
    pub saw_error: bool,
    /// Objects read: JSON objects, SSE data events, `[DONE]`. With `skipped_bytes`
    /// this tells "the answer was well-formed but lacked something" (frames > 0,
    /// nothing skipped) from "the body was not the protocol at all".
    pub frames: u64,
    /// Bytes that could not be read as the protocol: text that is not JSON, values
    /// that are not objects, unknown SSE fields, objects or lines over the buffer
    /// bound, and an object the body ended inside of.
    pub skipped_bytes: u64,
    framing: Framing,
    /// Whitespace before the framing is known: it means nothing to JSON but is part
    /// of the first line to SSE.
    lead: Vec<u8>,
    /// JSON: the object a read cut in two.
    pending: PendingObject,
    /// JSON: after bytes that are not JSON, the rest of their line is skipped.
    skip_line: bool,
    sse: sse::SseState,
}

impl Default for StreamObserver {
    fn default() -> Self {
        StreamObserver {
            saw_content: false,
            saw_done: false,
            stats: None,
            saw_error: false,
            frames: 0,
            skipped_bytes: 0,
            framing: Framing::Unknown,
            lead: Vec::new(),
            pending: PendingObject::new(MAX_PARTIAL),
            skip_line: false,
            sse: sse::SseState::default(),
        }
    }
}

/// JSON's whitespace (not `u8::is_ascii_whitespace`, which adds form feed).
fn is_json_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

/// Whether serde_json stopped at the end of `input`. When skipping a number it does
/// not call that end of input: `1e`, `1.` and `-` at the end of a read are reported
/// as invalid numbers, though the next read may complete them.
fn at_end(input: &[u8], error: &serde_json::Error) -> bool {
    let line_start = memchr::memrchr(b'\n', input).map_or(0, |i| i + 1);
    let line = 1 + memchr::memchr_iter(b'\n', &input[..line_start]).count();
    (error.line(), error.column()) == (line, input.len() - line_start)
}

impl StreamObserver {
    /// Feeds one body chunk; returns true when this chunk held the first content.
    pub fn feed(&mut self, chunk: &Bytes) -> bool {
        let had_content = self.saw_content;
        self.feed_bytes(chunk);
        !had_content && self.saw_content
    }

    /// End of body: an SSE event or line left open counts as ended; an object left
    /// open is skipped.
    pub fn finish(&mut self) {
        match self.framing {
            Framing::Json if self.pending.is_active() => {
                self.skipped_bytes += self.pending.seen() as u64;
                self.pending.abandon();
            }
            Framing::Sse => self.finish_sse(),
            // Nothing, or whitespace only.
            Framing::Json | Framing::Unknown => {}
        }
    }

    fn feed_bytes(&mut self, bytes: &[u8]) {
        match self.framing {
            Framing::Json => self.feed_json(bytes),
            Framing::Sse => self.feed_sse(bytes),
            Framing::Unknown => match bytes.iter().find(|&&b| !is_json_space(b)) {
                Some(b'{') => {
                    self.lead = Vec::new();
                    self.framing = Framing::Json;
                    self.feed_json(bytes);
                }
                Some(_) => {
                    self.framing = Framing::Sse;
                    let lead = std::mem::take(&mut self.lead);
                    self.feed_sse(&lead);
                    self.feed_sse(bytes);
                }
                None if self.lead.len() + bytes.len() <= MAX_PARTIAL => {
                    self.lead.extend_from_slice(bytes);
                }
                None => self.skipped_bytes += bytes.len() as u64,
            },
        }
    }

    fn feed_json(&mut self, mut input: &[u8]) {
        while !input.is_empty() {
            if self.skip_line {
                match memchr::memchr(b'\n', input) {
                    Some(i) => {
                        self.skipped_bytes += i as u64 + 1;
                        input = &input[i + 1..];
                        self.skip_line = false;
                    }
                    None => {
                        self.skipped_bytes += input.len() as u64;
                        return;
                    }
                }
            } else if self.pending.is_active() {
                let progress = self.pending.push(input);
                input = self.after_pending(input, progress);
            } else if self.saw_content {
                input = self.read_objects::<IgnoredAny>(input);
            } else {
                input = self.read_objects::<Presence>(input);
            }
        }
    }

    /// Reads whole objects straight from `input` (the cheap path: no copy). Returns
    /// what is left for the caller's loop: nothing, the rest after the object that
    /// held the first content (read on with the cheaper probe), or bytes to skip.
    fn read_objects<'a, C: ContentProbe>(&mut self, input: &'a [u8]) -> &'a [u8] {
        let probing = !self.saw_content;
        let mut objects = serde_json::Deserializer::from_slice(input).into_iter::<Probed<C>>();
        loop {
            match objects.next() {
                None => return &[],
                Some(Ok(probed)) => {
                    let frame: Frame = probed.0;
                    self.absorb(&frame);
                    if probing && self.saw_content {
                        return &input[objects.byte_offset()..];
                    }
                }
                Some(Err(error)) => {
                    let rest = &input[objects.byte_offset()..];
                    if rest.first() == Some(&b'{') && (error.is_eof() || at_end(input, &error)) {
                        let progress = self.pending.start(rest);
                        return self.after_pending(rest, progress);
                    }
                    // Not JSON, or not an object: resync at the next line.
                    self.skip_line = true;
                    return rest;
                }
            }
        }
    }

    /// Settles a push into the pending object; returns the bytes after it.
    fn after_pending<'a>(&mut self, input: &'a [u8], progress: Progress) -> &'a [u8] {
        match progress {
            Progress::NeedMore => &[],
            Progress::Complete(n) => {
                self.absorb_pending();
                &input[n..]
            }
            Progress::Broken(n) => {
                self.skipped_bytes += self.pending.seen() as u64;
                &input[n..]
            }
        }
    }

    fn absorb_pending(&mut self) {
        let seen = self.pending.seen() as u64;
        let Some(object) = self.pending.take() else {
            self.skipped_bytes += seen;
            return;
        };
        match self.parse_one(&object) {
            Some(frame) => self.absorb(&frame),
            None => self.skipped_bytes += seen,
        }
        self.pending.recycle(object);
    }

    /// Parses one complete JSON object (surrounding whitespace allowed).
    fn parse_one(&self, json: &[u8]) -> Option<Frame> {
        let frame = if self.saw_content {
            serde_json::from_slice::<Probed<IgnoredAny>>(json).map(|p| p.0)
        } else {
            serde_json::from_slice::<Probed<Presence>>(json).map(|p| p.0)
        };
        frame.ok()
    }

    fn absorb(&mut self, frame: &Frame) {
        self.frames += 1;
        self.saw_content |= frame.content;
        self.saw_error |= frame.error;
        if frame.done {
            self.saw_done = true;
            self.stats = Some(FinalStats {
                load_ns: frame.load_duration,
                prompt_tokens: frame.prompt_eval_count,
                prompt_ns: frame.prompt_eval_duration,
                completion_tokens: frame.eval_count,
                completion_ns: frame.eval_duration,
            });
        } else if let Some(usage) = frame.usage {
            self.stats = Some(FinalStats {
                prompt_tokens: usage.prompt_tokens,
                completion_tokens: usage.completion_tokens,
                ..FinalStats::default()
            });
        }
        if frame.finished {
            self.saw_done = true;
        }
    }
}
