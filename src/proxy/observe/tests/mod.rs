//! The observer against each spelling of the same answers: compact, spaced, reordered,
//! escaped, pretty-printed, NDJSON and SSE in every line-end style, split at every byte.

mod props;
mod spell;

use bytes::Bytes;

use super::{FinalStats, StreamObserver};

/// What a whole body taught the observer, and at which byte the first content was
/// known (one past the byte whose read completed it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Outcome {
    saw_content: bool,
    saw_done: bool,
    saw_error: bool,
    stats: Option<FinalStats>,
    frames: u64,
    skipped_bytes: u64,
    first_content_at: Option<usize>,
}

/// Feeds `body` cut at `cuts` (byte offsets, any order, duplicates allowed).
pub(super) fn observe_cut(body: &[u8], cuts: &[usize]) -> Outcome {
    let mut points: Vec<usize> = cuts.iter().map(|&c| c.min(body.len())).collect();
    points.push(0);
    points.push(body.len());
    points.sort_unstable();
    points.dedup();
    let mut o = StreamObserver::default();
    let mut first_content_at = None;
    for pair in points.windows(2) {
        if o.feed(&Bytes::copy_from_slice(&body[pair[0]..pair[1]])) {
            assert!(first_content_at.is_none(), "first content reported twice");
            first_content_at = Some(pair[1]);
        }
    }
    o.finish();
    Outcome {
        saw_content: o.saw_content,
        saw_done: o.saw_done,
        saw_error: o.saw_error,
        stats: o.stats,
        frames: o.frames,
        skipped_bytes: o.skipped_bytes,
        first_content_at,
    }
}

pub(super) fn observe(body: &[u8]) -> Outcome {
    observe_cut(body, &[])
}

/// One byte per read: the first-content position is exact.
pub(super) fn observe_bytewise(body: &[u8]) -> Outcome {
    let cuts: Vec<usize> = (1..body.len()).collect();
    observe_cut(body, &cuts)
}

/// The same outcome whole, byte by byte, and (for the first-content read) at the same
/// byte. Returns the byte-by-byte outcome.
fn same_at_every_split(body: &[u8]) -> Outcome {
    let exact = observe_bytewise(body);
    let whole = observe(body);
    assert_eq!(
        Outcome {
            first_content_at: exact.first_content_at.map(|_| body.len()),
            ..exact.clone()
        },
        whole,
        "whole vs byte-by-byte"
    );
    for cut in 1..body.len() {
        let split = observe_cut(body, &[cut]);
        let expected_at = exact
            .first_content_at
            .map(|at| if at <= cut { cut } else { body.len() });
        assert_eq!(
            split,
            Outcome {
                first_content_at: expected_at,
                ..exact.clone()
            },
            "cut at {cut}"
        );
    }
    exact
}

fn stats(
    load: u64,
    prompt: u64,
    prompt_ns: u64,
    completion: u64,
    completion_ns: u64,
) -> FinalStats {
    FinalStats {
        load_ns: load,
        prompt_tokens: prompt,
        prompt_ns,
        completion_tokens: completion,
        completion_ns,
    }
}

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
    o.feed(&Bytes::from_static(
        b"ue,\"load_duration\":5,\"prompt_eval_count\":7,\"eval_count\":3,\"eval_duration\":9}\n",
    ));
    assert!(o.saw_done);
    assert_eq!(o.stats, Some(stats(5, 7, 0, 3, 9)));
    assert_eq!((o.frames, o.skipped_bytes), (3, 0));
}

#[test]
fn spaced_ndjson_reads_like_compact() {
    let compact = concat!(
        "{\"model\":\"m\",\"message\":{\"role\":\"assistant\",\"content\":\"Hi\"},\"done\":false}\n",
        "{\"model\":\"m\",\"message\":{\"role\":\"assistant\",\"content\":\"\"},\"done\":true,",
        "\"load_duration\":5,\"prompt_eval_count\":7,\"prompt_eval_duration\":8,",
        "\"eval_count\":3,\"eval_duration\":9}\n"
    );
    let spaced = concat!(
        "{\"model\": \"m\", \"message\": {\"role\": \"assistant\", \"content\": \"Hi\"}, \"done\": false}\n",
        " { \"done\" :\ttrue , \"eval_duration\" : 9, \"eval_count\": 3 ,\"prompt_eval_duration\":8,",
        "\"prompt_eval_count\" : 7 , \"load_duration\": 5, \"message\" : { \"content\" : \"\" } } \r\n"
    );
    let a = same_at_every_split(compact.as_bytes());
    let b = same_at_every_split(spaced.as_bytes());
    assert!(a.saw_content && a.saw_done);
    assert_eq!(a.stats, Some(stats(5, 7, 8, 3, 9)));
    assert_eq!(
        (a.saw_content, a.saw_done, a.stats),
        (b.saw_content, b.saw_done, b.stats)
    );
    assert_eq!((b.frames, b.skipped_bytes), (2, 0));
}

#[test]
fn escaped_keys_and_values_are_read_unescaped() {
    // `done` and `eval_count` spelled with escapes, content a single escaped space.
    let body = concat!(
        "{\"response\":\"\\u0020\",\"d\\u006fne\":false}\n",
        "{\"response\":\"\",\"\\u0064one\":true,\"eval_\\u0063ount\":4,\"response\":\"\\\"\"}\n"
    );
    let o = same_at_every_split(body.as_bytes());
    assert_eq!(o.first_content_at, Some(body.find('\n').unwrap()));
    assert!(o.saw_done);
    assert_eq!(o.stats.map(|s| s.completion_tokens), Some(4));
}

#[test]
fn empty_content_is_no_content() {
    let body = b"{\"response\":\"\",\"message\":{\"content\":\"\",\"tool_calls\":[]},\"done\":false}\n{\"message\":null,\"done\":true}";
    let o = same_at_every_split(body);
    assert!(!o.saw_content && o.saw_done);
    assert_eq!(o.first_content_at, None);
}

#[test]
fn tool_calls_thinking_and_reasoning_count_as_content() {
    for body in [
        &br#"{"message":{"content":"","tool_calls":[{"function":{"name":"f"}}]}}"#[..],
        br#"{"message":{"thinking":"hmm"}}"#,
        br#"{"thinking":"hmm","response":""}"#,
        br#"{"choices":[{"delta":{"reasoning":"hmm"}}]}"#,
        br#"{"choices":[{"index":0,"text":"x","finish_reason":null}]}"#,
    ] {
        assert!(
            observe(body).saw_content,
            "{}",
            String::from_utf8_lossy(body)
        );
    }
}

#[test]
fn pretty_printed_single_answer_over_many_lines() {
    let answer = serde_json::json!({
        "done": true,
        "eval_duration": 9,
        "eval_count": 3,
        "message": {"content": "all of it", "role": "assistant"},
        "prompt_eval_count": 7,
        "model": "m",
    });
    let pretty = serde_json::to_string_pretty(&answer).unwrap();
    assert!(pretty.lines().count() > 5);
    let o = same_at_every_split(pretty.as_bytes());
    assert!(o.saw_content && o.saw_done);
    assert_eq!(o.stats, Some(stats(0, 7, 0, 3, 9)));
    assert_eq!((o.frames, o.skipped_bytes), (1, 0));
    // Known at the closing brace, before the body ends.
    assert_eq!(o.first_content_at, Some(pretty.len()));
}

#[test]
fn lenient_types_do_not_lose_the_frame() {
    let body = br#"{"done":true,"eval_count":12.0,"prompt_eval_count":-1,"eval_duration":"9","load_duration":{"x":1},"message":[1]}"#;
    let o = observe(body);
    assert!(o.saw_done && !o.saw_content);
    assert_eq!(o.stats, Some(stats(0, 0, 0, 12, 0)));
    let not_done = observe(br#"{"done":"true"}"#);
    assert!(!not_done.saw_done);
    assert_eq!(not_done.frames, 1);
}

#[test]
fn duplicate_keys_take_the_last() {
    assert!(observe(br#"{"done":false,"done":true}"#).saw_done);
    assert!(!observe(br#"{"done":true,"done":false}"#).saw_done);
}

#[test]
fn error_line_is_seen_and_is_not_done() {
    let o =
        observe(b"{\"response\":\"a\",\"done\":false}\n{\"error\": \"model runner stopped\"}\n");
    assert!(o.saw_content && o.saw_error && !o.saw_done);
}

#[test]
fn openai_sse_all_line_ends_and_data_spellings() {
    let events = [
        r#"{"choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}"#,
        r#"{"choices":[{"index":0,"delta":{"content":"x"},"finish_reason":null}]}"#,
        r#"{"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#,
        r#"{"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":2,"total_tokens":7}}"#,
        "[DONE]",
    ];
    for eol in ["\n", "\r\n", "\r"] {
        for prefix in ["data: ", "data:"] {
            let mut body = format!(": keep-alive{eol}event: message{eol}");
            for event in events {
                body.push_str(&format!("id: 1{eol}{prefix}{event}{eol}{eol}"));
            }
            let o = same_at_every_split(body.as_bytes());
            assert!(o.saw_content && o.saw_done, "{eol:?} {prefix:?}");
            assert_eq!(o.stats, Some(stats(0, 5, 0, 2, 0)));
            assert_eq!((o.frames, o.skipped_bytes), (5, 0));
            let second = body.find("\"x\"").unwrap();
            let at = o.first_content_at.unwrap();
            assert!(at > second, "content known only when its event ends");
        }
    }
}

#[test]
fn sse_event_split_over_data_lines() {
    let body = "data: {\"choices\": [{\"delta\":\ndata:  {\"content\": \"hi\"},\r\ndata: \"finish_reason\": \"stop\"}]}\n\n";
    let o = same_at_every_split(body.as_bytes());
    assert!(o.saw_content && o.saw_done);
    assert_eq!(o.frames, 1);
}

#[test]
fn sse_last_event_without_blank_line_counts_at_the_end() {
    let mut o = StreamObserver::default();
    o.feed(&Bytes::from_static(
        b"data: {\"choices\":[{\"delta\":{\"content\":\"x\"}}]}\n\ndata: [DONE]",
    ));
    assert!(o.saw_content && !o.saw_done);
    o.finish();
    assert!(o.saw_done);
}

#[test]
fn openai_non_streamed_answer_is_final_with_usage() {
    let body = serde_json::to_string_pretty(&serde_json::json!({
        "id": "chatcmpl-1",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "hello"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 11, "completion_tokens": 4, "total_tokens": 15},
    }))
    .unwrap();
    let o = same_at_every_split(body.as_bytes());
    assert!(o.saw_content && o.saw_done);
    assert_eq!(o.stats, Some(stats(0, 11, 0, 4, 0)));
}

#[test]
fn garbage_and_non_objects_are_skipped_up_to_the_next_line() {
    let garbage = "not json\n[1,2]\n\"text\"\n42\n";
    let body = format!("{{\"response\":\"a\"}}\n{garbage}{{\"done\":true,\"eval_count\":1}}\n");
    let o = same_at_every_split(body.as_bytes());
    assert!(o.saw_content && o.saw_done);
    assert_eq!(o.frames, 2);
    assert_eq!(o.skipped_bytes, garbage.len() as u64);
}

#[test]
fn raw_newline_inside_a_string_resyncs_at_the_next_line() {
    let body = b"{\"response\":\"cut\n{\"done\":true}\n";
    for cut in 0..body.len() {
        let o = observe_cut(body, &[cut]);
        assert!(o.saw_done, "cut at {cut}");
    }
}

#[test]
fn object_larger_than_the_bound_is_read_through_its_long_parts() {
    // A long answer and Ollama's `context` token array: well over the bound.
    let context: Vec<u64> = (0..40_000).collect();
    let answer = serde_json::json!({
        "model": "m",
        "response": "word ".repeat(20_000),
        "context": context,
        "images": ["x".repeat(1000)],
        "done": true,
        "eval_count": 20_000,
    });
    let body = serde_json::to_vec(&answer).unwrap();
    assert!(body.len() > 3 * super::MAX_PARTIAL);
    for chunk in [1, 7, 4096] {
        let cuts: Vec<usize> = (chunk..body.len()).step_by(chunk).collect();
        let o = observe_cut(&body, &cuts);
        assert!(o.saw_content && o.saw_done, "reads of {chunk}");
        assert_eq!(o.stats.map(|s| s.completion_tokens), Some(20_000));
        assert_eq!(o.skipped_bytes, 0);
    }
}

#[test]
fn object_over_the_bound_after_shortening_is_skipped_then_reading_resumes() {
    // Many short members cannot be shortened.
    let mut big = String::from("{\"done\":true");
    while big.len() < super::MAX_PARTIAL + 10 {
        big.push_str(&format!(",\"k{}\":1", big.len()));
    }
    big.push_str("}\n");
    let body = format!("{big}{{\"response\":\"after\",\"done\":true}}\n");
    let cuts: Vec<usize> = (1000..body.len()).step_by(1000).collect();
    let o = observe_cut(body.as_bytes(), &cuts);
    assert!(o.saw_content && o.saw_done);
    assert_eq!(o.frames, 1);
    assert_eq!(o.skipped_bytes, big.trim_end().len() as u64);
}

#[test]
fn sse_line_over_the_bound_is_skipped_then_reading_resumes() {
    let long = format!(
        "data: {{\"pad\":\"{}\"}}\n\n",
        "x".repeat(super::MAX_PARTIAL)
    );
    let body = format!(
        "{long}data: {{\"choices\":[{{\"delta\":{{\"content\":\"y\"}}}}]}}\n\ndata: [DONE]\n\n"
    );
    for cuts in [vec![], vec![100], (1..body.len()).step_by(999).collect()] {
        let o = observe_cut(body.as_bytes(), &cuts);
        assert!(o.saw_content && o.saw_done);
        assert_eq!(o.frames, 2);
        assert!(o.skipped_bytes >= super::MAX_PARTIAL as u64);
    }
}

#[test]
fn whitespace_before_the_first_byte_does_not_change_the_framing() {
    let o = same_at_every_split(b"\n \r\n{\"response\":\"a\",\"done\":true}");
    assert!(o.saw_content && o.saw_done);
    let o = same_at_every_split(b"\n\r\ndata: [DONE]\n\n");
    assert!(o.saw_done);
}

#[test]
fn truncated_stream_is_not_done() {
    let cut_off = "{\"response\":\"b\",\"do";
    let body = format!("{{\"response\":\"a\",\"done\":false}}\n{cut_off}");
    let o = same_at_every_split(body.as_bytes());
    assert!(o.saw_content && !o.saw_done);
    assert_eq!(o.skipped_bytes, cut_off.len() as u64);
}

#[test]
fn numbers_cut_anywhere_in_skipped_fields() {
    // serde_json reports `1e`, `1.` and `-` at the end of a read as invalid numbers
    // when skipping a value; the next read completes them.
    let body = b"{\"created\":-1.5e+3,\"x\":[1E5,0.25,-0],\"done\":true,\"eval_count\":2e1}\n";
    let o = same_at_every_split(body);
    assert!(o.saw_done);
    assert_eq!(o.stats.map(|s| s.completion_tokens), Some(20));
    assert_eq!(o.skipped_bytes, 0);
}
