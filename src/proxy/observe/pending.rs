//! The one JSON object that a read cut in two: its bytes are kept, in bounded memory,
//! until its closing brace arrives, and only then parsed (so a byte-at-a-time body costs
//! one parse per object, not one per read).
//!
//! To read an object larger than the bound — a long non-streamed answer, Ollama's
//! `context` token array — parts that cannot change what the observer learns are
//! replaced while copying: a string longer than [`LONG`] bytes becomes `"x"`, an array
//! holding only scalars that grows past [`LONG`] bytes becomes `[0]`. Both stay
//! non-empty and of the same type, which is all a probe looks at. A long key is
//! replaced too, harmlessly: every key the observer matches is spelled in at most 120
//! bytes, even with each character escaped.

/// Longest string or scalar array copied as is.
const LONG: usize = 256;

/// Bytes that end a run of bytes changing no state, inside a string and outside one.
static STRING_STOPS: [bool; 256] = stops(b"\"\\\n");
static VALUE_STOPS: [bool; 256] = stops(b"\"{}[]");

const fn stops(bytes: &[u8]) -> [bool; 256] {
    let mut table = [false; 256];
    let mut i = 0;
    while i < bytes.len() {
        table[bytes[i] as usize] = true;
        i += 1;
    }
    table
}

/// What a push of bytes did to the pending object.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Progress {
    /// Every byte was taken; the object is not finished.
    NeedMore,
    /// The object ended after this many bytes of the push.
    Complete(usize),
    /// The bytes cannot be JSON (a raw newline inside a string): the object is
    /// abandoned after this many bytes, which end with that newline.
    Broken(usize),
}

/// What is being left out while scanning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Omit {
    Nothing,
    /// The rest of an over-long string; `"x` was written in its place.
    String,
    /// The rest of an over-long scalar array opened at this depth; `[0` was written.
    Array(u32),
}

#[derive(Debug)]
pub(super) struct PendingObject {
    buf: Vec<u8>,
    cap: usize,
    active: bool,
    /// Past the cap: the object is scanned to its end but no longer kept.
    dropped: bool,
    /// Bytes of the object seen so far, kept or not.
    seen: usize,
    depth: u32,
    in_string: bool,
    escaped: bool,
    /// Where in `buf` the current string's opening quote is.
    string_start: usize,
    /// Where in `buf` the innermost open array starts, while it holds only scalars.
    scalar_array_start: Option<usize>,
    omit: Omit,
}

impl PendingObject {
    pub(super) fn new(cap: usize) -> PendingObject {
        PendingObject {
            buf: Vec::new(),
            cap,
            active: false,
            dropped: false,
            seen: 0,
            depth: 0,
            in_string: false,
            escaped: false,
            string_start: 0,
            scalar_array_start: None,
            omit: Omit::Nothing,
        }
    }

    pub(super) fn is_active(&self) -> bool {
        self.active
    }

    /// Bytes of the current object seen so far.
    pub(super) fn seen(&self) -> usize {
        self.seen
    }

    /// Begins an object; `bytes` must start with its `{`.
    pub(super) fn start(&mut self, bytes: &[u8]) -> Progress {
        debug_assert_eq!(bytes.first(), Some(&b'{'));
        self.buf.clear();
        self.active = true;
        self.dropped = false;
        self.seen = 0;
        self.depth = 0;
        self.in_string = false;
        self.escaped = false;
        self.scalar_array_start = None;
        self.omit = Omit::Nothing;
        self.push(bytes)
    }

    /// The finished object's (possibly shortened) bytes, or `None` when it outgrew the
    /// cap. Ends the object either way; hand the buffer back with [`Self::recycle`].
    pub(super) fn take(&mut self) -> Option<Vec<u8>> {
        self.active = false;
        (!self.dropped).then(|| std::mem::take(&mut self.buf))
    }

    /// Returns a buffer from [`Self::take`], keeping its allocation for the next object.
    pub(super) fn recycle(&mut self, mut buf: Vec<u8>) {
        buf.clear();
        self.buf = buf;
    }

    /// Gives up on the current object (end of body, or broken).
    pub(super) fn abandon(&mut self) {
        self.active = false;
        self.buf.clear();
    }

    pub(super) fn push(&mut self, bytes: &[u8]) -> Progress {
        self.push_verbatim(bytes)
            .unwrap_or_else(|| self.push_shortening(bytes))
    }

    /// The common case, a line cut in two: scans without copying and, when nothing
    /// needs shortening or dropping, copies the object's bytes in one go. `None` when
    /// something does (or the bytes are broken): nothing has changed then.
    fn push_verbatim(&mut self, bytes: &[u8]) -> Option<Progress> {
        if self.omit != Omit::Nothing || self.dropped {
            return None;
        }
        let base = self.buf.len();
        let (mut depth, mut in_string, mut escaped) = (self.depth, self.in_string, self.escaped);
        let (mut string_start, mut array_start) = (self.string_start, self.scalar_array_start);
        let too_long = |start: usize, len: usize| len - start > LONG;
        let mut end = None;
        let mut i = 0;
        while i < bytes.len() {
            if !escaped {
                let stops = if in_string {
                    &STRING_STOPS
                } else {
                    &VALUE_STOPS
                };
                i += bytes[i..]
                    .iter()
                    .position(|&b| stops[usize::from(b)])
                    .unwrap_or(bytes.len() - i);
            }
            if (in_string && too_long(string_start, base + i))
                || array_start.is_some_and(|start| too_long(start, base + i))
            {
                return None;
            }
            let Some(&b) = bytes.get(i) else { break };
            i += 1;
            let len = base + i;
            if in_string {
                match b {
                    _ if escaped => escaped = false,
                    b'\\' => escaped = true,
                    b'"' => in_string = false,
                    _ => return None, // a raw newline: broken
                }
                if in_string && too_long(string_start, len) {
                    return None;
                }
            } else {
                match b {
                    b'"' => {
                        in_string = true;
                        string_start = len - 1;
                    }
                    b'{' | b'[' => {
                        depth += 1;
                        array_start = (b == b'[').then_some(len - 1);
                    }
                    _ => {
                        depth = depth.saturating_sub(1);
                        array_start = None;
                        if depth == 0 {
                            end = Some(i);
                            break;
                        }
                    }
                }
            }
            if array_start.is_some_and(|start| too_long(start, len)) {
                return None;
            }
        }
        let taken = end.unwrap_or(bytes.len());
        if base + taken > self.cap {
            return None;
        }
        self.buf.extend_from_slice(&bytes[..taken]);
        (self.depth, self.in_string, self.escaped) = (depth, in_string, escaped);
        (self.string_start, self.scalar_array_start) = (string_start, array_start);
        self.seen += taken;
        Some(end.map_or(Progress::NeedMore, Progress::Complete))
    }

    /// Copies what must be kept, shortening or dropping as it goes.
    fn push_shortening(&mut self, bytes: &[u8]) -> Progress {
        let mut i = 0;
        while i < bytes.len() {
            // Bytes that change no state are taken as a run.
            let run = if self.in_string {
                if self.escaped {
                    0
                } else {
                    memchr::memchr3(b'"', b'\\', b'\n', &bytes[i..]).unwrap_or(bytes.len() - i)
                }
            } else {
                bytes[i..]
                    .iter()
                    .position(|&b| matches!(b, b'"' | b'{' | b'}' | b'[' | b']'))
                    .unwrap_or(bytes.len() - i)
            };
            self.keep_run(&bytes[i..i + run]);
            i += run;
            let Some(&b) = bytes.get(i) else { break };
            i += 1;
            if self.in_string {
                if self.escaped {
                    self.escaped = false;
                } else if b == b'\n' {
                    self.seen += i;
                    self.abandon();
                    return Progress::Broken(i);
                } else if b == b'\\' {
                    self.escaped = true;
                } else {
                    self.in_string = false;
                    if self.omit == Omit::String {
                        self.omit = Omit::Nothing;
                    }
                }
                self.keep_run(&[b]);
                continue;
            }
            match b {
                b'"' => {
                    self.in_string = true;
                    self.string_start = self.buf.len();
                }
                b'{' | b'[' => {
                    self.depth += 1;
                    if self.omit == Omit::Nothing {
                        self.scalar_array_start = (b == b'[').then_some(self.buf.len());
                    }
                }
                _ => {
                    self.depth = self.depth.saturating_sub(1);
                    self.scalar_array_start = None;
                    if self.omit == Omit::Array(self.depth + 1) {
                        self.omit = Omit::Nothing;
                    }
                }
            }
            self.keep_run(&[b]);
            if self.depth == 0 {
                self.seen += i;
                return Progress::Complete(i);
            }
        }
        self.seen += bytes.len();
        Progress::NeedMore
    }

    /// Copies a run, but no more of it than it takes to find the current string or
    /// scalar array too long; the rest of it is then left out.
    fn keep_run(&mut self, run: &[u8]) {
        let room = |start: usize| (LONG + 1).saturating_sub(self.buf.len().saturating_sub(start));
        let mut take = run.len();
        if self.in_string {
            take = take.min(room(self.string_start));
        }
        if let Some(start) = self.scalar_array_start {
            take = take.min(room(start));
        }
        self.keep(&run[..take]);
        self.limit();
        self.keep(&run[take..]);
    }

    /// Copies bytes that are not being left out, up to the cap.
    fn keep(&mut self, bytes: &[u8]) {
        if self.dropped || self.omit_active() {
            return;
        }
        if self.buf.len() + bytes.len() > self.cap {
            self.dropped = true;
            self.buf.clear();
            return;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Omitting is in force for a string only while inside it; a closing quote was
    /// already accounted for by the caller.
    fn omit_active(&self) -> bool {
        match self.omit {
            Omit::Nothing => false,
            Omit::String => self.in_string,
            Omit::Array(_) => true,
        }
    }

    /// Replaces the current string or scalar array once it is longer than [`LONG`].
    fn limit(&mut self) {
        if self.omit != Omit::Nothing || self.dropped {
            return;
        }
        if self.in_string && self.buf.len().saturating_sub(self.string_start) > LONG {
            self.buf.truncate(self.string_start);
            self.buf.extend_from_slice(b"\"x");
            self.omit = Omit::String;
        }
        if let Some(start) = self.scalar_array_start {
            if self.buf.len().saturating_sub(start) > LONG {
                self.buf.truncate(start);
                self.buf.extend_from_slice(b"[0");
                self.omit = Omit::Array(self.depth);
                self.scalar_array_start = None;
            }
        }
    }
}
