//! Watches a response go by without changing it: when the first token came, whether
//! the stream reached its final `done` chunk, and the metrics that chunk carries. Only
//! an incomplete trailing line is ever copied (to join it with the next chunk).

use bytes::Bytes;
use serde_json::Value;

/// Longest partial line kept between chunks; a longer line is not inspected.
const MAX_PARTIAL: usize = 64 * 1024;

/// Ollama's final-chunk metrics (durations in nanoseconds).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FinalStats {
    pub load_ns: u64,
    pub prompt_tokens: u64,
    pub prompt_ns: u64,
    pub completion_tokens: u64,
    pub completion_ns: u64,
}

#[derive(Debug, Default)]
pub struct StreamObserver {
    partial: Vec<u8>,
    /// A line with generated content was seen (time to first token is taken then).
    pub saw_content: bool,
    /// The stream's final chunk (`done: true`, or SSE `[DONE]`) was seen.
    pub saw_done: bool,
    pub stats: Option<FinalStats>,
}

impl StreamObserver {
    /// Feeds one body chunk; returns true when this chunk held the first content.
    pub fn feed(&mut self, chunk: &Bytes) -> bool {
        let had_content = self.saw_content;
        let mut rest: &[u8] = chunk;
        while let Some(nl) = rest.iter().position(|&b| b == b'\n') {
            let (line, tail) = rest.split_at(nl);
            rest = &tail[1..];
            if self.partial.is_empty() {
                self.inspect(line);
            } else {
                let mut joined = std::mem::take(&mut self.partial);
                joined.extend_from_slice(line);
                self.inspect(&joined);
            }
        }
        if !rest.is_empty() {
            if self.partial.len() + rest.len() <= MAX_PARTIAL {
                self.partial.extend_from_slice(rest);
            } else {
                self.partial.clear();
            }
        }
        !had_content && self.saw_content
    }

    /// End of body: a final line without a newline (non-streamed answers) counts too.
    pub fn finish(&mut self) {
        let last = std::mem::take(&mut self.partial);
        if !last.is_empty() {
            self.inspect(&last);
        }
    }

    fn inspect(&mut self, line: &[u8]) {
        let line = line.strip_prefix(b"data: ").unwrap_or(line);
        let line = line.trim_ascii();
        if line.is_empty() {
            return;
        }
        if line == b"[DONE]" {
            self.saw_done = true;
            return;
        }
        // Cheap byte checks first: most lines are single tokens and need no parse
        // once the first content has been seen.
        let maybe_final =
            contains(line, b"\"done\":true") || contains(line, b"\"finish_reason\":\"");
        if self.saw_content && !maybe_final {
            return;
        }
        let Ok(v) = serde_json::from_slice::<Value>(line) else {
            return;
        };
        if !self.saw_content && has_content(&v) {
            self.saw_content = true;
        }
        if v.get("done") == Some(&Value::Bool(true)) {
            self.saw_done = true;
            self.stats = Some(final_stats(&v));
        }
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn non_empty(v: Option<&Value>) -> bool {
    match v {
        Some(Value::String(s)) => !s.is_empty(),
        Some(Value::Array(a)) => !a.is_empty(),
        Some(Value::Null) | None => false,
        Some(_) => true,
    }
}

/// Generated text or a tool call, in Ollama's or OpenAI's shape.
fn has_content(v: &Value) -> bool {
    let msg = v.get("message");
    let delta = v.pointer("/choices/0/delta");
    non_empty(v.get("response"))
        || non_empty(v.get("thinking"))
        || [msg, delta].into_iter().flatten().any(|m| {
            non_empty(m.get("content"))
                || non_empty(m.get("thinking"))
                || non_empty(m.get("tool_calls"))
        })
        || non_empty(v.pointer("/choices/0/text"))
}

fn final_stats(v: &Value) -> FinalStats {
    let n = |k: &str| v.get(k).and_then(Value::as_u64).unwrap_or(0);
    FinalStats {
        load_ns: n("load_duration"),
        prompt_tokens: n("prompt_eval_count"),
        prompt_ns: n("prompt_eval_duration"),
        completion_tokens: n("eval_count"),
        completion_ns: n("eval_duration"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ndjson_first_content_and_final_stats_across_split_chunks() {
        let mut o = StreamObserver::default();
        assert!(!o.feed(&Bytes::from_static(
            b"{\"message\":{\"role\":\"assistant\",\"content\":\"\"},\"done\":false}\n"
        )));
        assert!(o.feed(&Bytes::from_static(
            b"{\"message\":{\"content\":\"Hi\"},\"done\":false}\n{\"done\":tr"
        )));
        assert!(!o.saw_done);
        o.feed(&Bytes::from_static(b"ue,\"load_duration\":5,\"prompt_eval_count\":7,\"eval_count\":3,\"eval_duration\":9}\n"));
        assert!(o.saw_done);
        let s = o.stats.unwrap();
        assert_eq!(
            (
                s.load_ns,
                s.prompt_tokens,
                s.completion_tokens,
                s.completion_ns
            ),
            (5, 7, 3, 9)
        );
    }

    #[test]
    fn non_streamed_answer_without_newline() {
        let mut o = StreamObserver::default();
        o.feed(&Bytes::from_static(
            b"{\"response\":\"all of it\",\"done\":true,\"eval_count\":4}",
        ));
        assert!(!o.saw_done);
        o.finish();
        assert!(o.saw_done && o.saw_content);
    }

    #[test]
    fn openai_sse() {
        let mut o = StreamObserver::default();
        assert!(o.feed(&Bytes::from_static(
            b"data: {\"choices\":[{\"delta\":{\"content\":\"x\"}}]}\n\n"
        )));
        o.feed(&Bytes::from_static(b"data: [DONE]\n\n"));
        assert!(o.saw_done);
    }
}
