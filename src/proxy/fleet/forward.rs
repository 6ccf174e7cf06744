//! One box's part of a fleet operation: send the request, then read the answer line by
//! line within the configured deadlines and size limits. Whatever the box does (never
//! answer, answer forever, answer garbage), this ends with a verdict for that box —
//! given only after the box was re-probed, and with its last line held back until
//! then, so that whoever acts on "done" finds the change in corral's view.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::mpsc;

use super::lines::{LineTooLong, Lines};
use super::refresh::Refresh;
use crate::bounded_body::{next_chunk, read_capped, root_cause, BodyError, Size};
use crate::config::TimeoutConfig;

/// A whole answer (delete, copy, a pull with `"stream": false`) is one small JSON
/// object or nothing; a few MiB is far beyond any real one.
pub(super) const MAX_WHOLE_ANSWER: usize = 4 * 1024 * 1024;
/// One line of pull progress is a few hundred bytes.
pub(super) const MAX_PROGRESS_LINE: usize = 64 * 1024;
/// An error answer is read only for its `"error"` message.
const MAX_ERROR_ANSWER: usize = 64 * 1024;

/// How a box's answer is read.
#[derive(Debug, Clone, Copy)]
pub(super) struct Limits {
    /// Until the response header: connect plus `timeouts.first_byte`. The client is
    /// shared, so the connect phase cannot get its own reloadable deadline.
    pub header: Duration,
    /// Between two chunks of the body (`timeouts.idle`).
    pub idle: Duration,
    pub max_line: usize,
    /// The whole body; `None` for streamed progress, which may run as long as a pull
    /// does (each line stays bounded, and nothing is kept).
    pub max_total: Option<usize>,
}

impl Limits {
    pub(super) fn new(timeouts: &TimeoutConfig, streamed: bool) -> Limits {
        Limits {
            header: timeouts.connect + timeouts.first_byte,
            idle: timeouts.idle,
            max_line: if streamed {
                MAX_PROGRESS_LINE
            } else {
                MAX_WHOLE_ANSWER
            },
            max_total: (!streamed).then_some(MAX_WHOLE_ANSWER),
        }
    }
}

/// Why a box's part failed; the client reads this as `backend 'NAME': <this>`.
#[derive(Debug, thiserror::Error)]
pub(super) enum BoxFailure {
    #[error("no answer within {}", humantime::format_duration(*.0))]
    NoAnswer(Duration),
    #[error("{0}")]
    Request(String),
    /// The box's own `"error"` message, or its status when it gave none.
    #[error("{0}")]
    Refused(String),
    #[error("answer stalled: nothing for {}", humantime::format_duration(*.0))]
    Stalled(Duration),
    #[error("connection lost mid-answer: {0}")]
    Lost(String),
    #[error("answer larger than {0}")]
    TooLarge(Size),
    #[error(transparent)]
    LineTooLong(#[from] LineTooLong),
    #[error("answered something that is not a JSON object: {0:?}")]
    NotJson(String),
}

/// What a box's task reports, tagged with the box's name.
pub(super) enum Event {
    /// One line of its answer, as it arrived (only when streaming).
    Line(Value),
    /// Its verdict: the last line it answered (if any), or why it failed.
    Done(Result<Option<Value>, BoxFailure>),
}

pub(super) type Events = mpsc::Sender<(Arc<str>, Event)>;

/// Where a box's lines and verdict go.
pub(super) struct Reporter {
    pub name: Arc<str>,
    /// Forward each line as it arrives rather than only the verdict.
    pub stream: bool,
    pub events: Events,
    /// Re-probes the box once it has answered, before its verdict is reported.
    pub refresh: Refresh,
}

impl Reporter {
    /// Runs `request` and reports; a closed channel (the client left) ends it early.
    pub(super) async fn run(self, request: reqwest::RequestBuilder, limits: Limits) {
        let mut last = None;
        let verdict = self.answer(request, limits, &mut last).await;
        self.refresh.run().await;
        if let (true, Some(line)) = (self.stream, &last) {
            let _ = self
                .events
                .send((self.name.clone(), Event::Line(line.clone())))
                .await;
        }
        let verdict = verdict.map(|()| last);
        let _ = self.events.send((self.name, Event::Done(verdict))).await;
    }

    /// Reads the box's answer; `last` ends holding its last line, which is the one
    /// line not passed on yet.
    async fn answer(
        &self,
        request: reqwest::RequestBuilder,
        limits: Limits,
        last: &mut Option<Value>,
    ) -> Result<(), BoxFailure> {
        let mut resp = tokio::time::timeout(limits.header, request.send())
            .await
            .map_err(|_| BoxFailure::NoAnswer(limits.header))?
            .map_err(|e| BoxFailure::Request(root_cause(&e)))?;
        let status = resp.status();
        if !status.is_success() {
            let body = read_capped(resp, MAX_ERROR_ANSWER, Some(limits.idle)).await;
            let message = body
                .ok()
                .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
                .and_then(|v| v.get("error").and_then(Value::as_str).map(str::to_string))
                .unwrap_or_else(|| format!("status {status}"));
            return Err(BoxFailure::Refused(message));
        }
        let mut lines = Lines::new(limits.max_line);
        let mut total = 0usize;
        while let Some(chunk) = next_chunk(&mut resp, Some(limits.idle))
            .await
            .map_err(body_failure)?
        {
            total += chunk.len();
            if let Some(max) = limits.max_total.filter(|&max| total > max) {
                return Err(BoxFailure::TooLarge(Size(max)));
            }
            lines.push(&chunk);
            while let Some(line) = lines.next_line()? {
                self.take_line(&line, last).await?;
            }
        }
        self.take_line(&lines.finish(), last).await
    }

    /// Parses one line (blank lines are skipped) and keeps it as `last`; when
    /// streaming, the line it replaces is passed on.
    async fn take_line(&self, line: &[u8], last: &mut Option<Value>) -> Result<(), BoxFailure> {
        if line.trim_ascii().is_empty() {
            return Ok(());
        }
        let value = match serde_json::from_slice::<Value>(line) {
            Ok(v @ Value::Object(_)) => v,
            _ => return Err(BoxFailure::NotJson(snippet(line))),
        };
        if let (true, Some(previous)) = (self.stream, last.replace(value)) {
            let line = (self.name.clone(), Event::Line(previous));
            if self.events.send(line).await.is_err() {
                return Err(BoxFailure::Lost("nobody is listening any more".into()));
            }
        }
        Ok(())
    }
}

fn body_failure(e: BodyError) -> BoxFailure {
    match e {
        BodyError::Stalled(idle) => BoxFailure::Stalled(idle),
        BodyError::TooLarge(size) => BoxFailure::TooLarge(size),
        BodyError::Http(e) => BoxFailure::Lost(root_cause(&e)),
    }
}

/// The start of what a box answered, enough to recognise it in an error message.
fn snippet(line: &[u8]) -> String {
    let text = String::from_utf8_lossy(line);
    match text.char_indices().nth(60) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.into_owned(),
    }
}
