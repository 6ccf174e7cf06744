//! Property tests: arbitrary bytes in arbitrary reads never panic, and a valid answer —
//! NDJSON, SSE or one pretty-printed value, in any spelling — reads the same however it
//! is cut into reads, and reads right.

use proptest::prelude::*;
use proptest::sample::Index;
use serde_json::{json, Value};

use super::spell::Speller;
use super::{observe, observe_bytewise, observe_cut, FinalStats, Outcome};

#[derive(Debug, Clone, Copy)]
enum Kind {
    OllamaStream { chat: bool },
    OllamaWhole { chat: bool },
    OpenAiStream,
    OpenAiWhole,
}

#[derive(Debug, Clone)]
struct Answer {
    kind: Kind,
    tokens: Vec<String>,
    /// load, prompt tokens, prompt ns, completion tokens, completion ns.
    numbers: [u32; 5],
    usage: bool,
    /// Length of Ollama's `context` token array on the final object.
    context: usize,
    seed: u64,
    /// Leading whitespace or blank lines before the first byte.
    lead: bool,
}

fn token() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        Just(" ".to_string()),
        Just("\"quoted\" \\ back/slash".to_string()),
        Just("line\nbreak\r\ttab".to_string()),
        Just("é ✓ 🦀".to_string()),
        Just("{\"done\": true}".to_string()),
        Just("data: [DONE]\n\n".to_string()),
        "[a-z ]{0,12}",
        "\\PC{0,8}",
        Just("long ".repeat(80)),
    ]
}

fn answer() -> impl Strategy<Value = Answer> {
    let kind = prop_oneof![
        any::<bool>().prop_map(|chat| Kind::OllamaStream { chat }),
        any::<bool>().prop_map(|chat| Kind::OllamaWhole { chat }),
        Just(Kind::OpenAiStream),
        Just(Kind::OpenAiWhole),
    ];
    (
        kind,
        prop::collection::vec(token(), 0..8),
        any::<[u32; 5]>(),
        any::<bool>(),
        prop_oneof![Just(0usize), 1..50usize, 300..3000usize],
        any::<u64>(),
        any::<bool>(),
    )
        .prop_map(
            |(kind, tokens, numbers, usage, context, seed, lead)| Answer {
                kind,
                tokens,
                numbers,
                usage,
                context,
                seed,
                lead,
            },
        )
}

fn ollama_object(chat: bool, text: &str, done: Option<&Answer>) -> Value {
    let mut object = json!({"model": "llama3", "created_at": "2025-01-01T00:00:00Z"});
    if chat {
        object["message"] = json!({"role": "assistant", "content": text});
    } else {
        object["response"] = json!(text);
    }
    object["done"] = json!(done.is_some());
    if let Some(answer) = done {
        let [load, prompt, prompt_ns, completion, completion_ns] = answer.numbers;
        object["done_reason"] = json!("stop");
        object["total_duration"] = json!(load as u64 + prompt_ns as u64);
        object["load_duration"] = json!(load);
        object["prompt_eval_count"] = json!(prompt);
        object["prompt_eval_duration"] = json!(prompt_ns);
        object["eval_count"] = json!(completion);
        object["eval_duration"] = json!(completion_ns);
        if answer.context > 0 && !chat {
            object["context"] = json!((0..answer.context).collect::<Vec<_>>());
        }
    }
    object
}

fn usage(answer: &Answer) -> Value {
    let [_, prompt, _, completion, _] = answer.numbers;
    json!({"prompt_tokens": prompt, "completion_tokens": completion,
           "total_tokens": prompt as u64 + completion as u64})
}

fn openai_chunk(text: &str, finish: Option<&str>) -> Value {
    json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "model": "llama3",
           "choices": [{"index": 0, "delta": {"role": "assistant", "content": text},
                        "finish_reason": finish}]})
}

/// SSE line ends: any of the three the spec allows, but never a CR followed by a LF
/// that was meant as a line end of its own (together they are one CRLF).
struct LineEnds {
    last_was_cr: bool,
}

impl LineEnds {
    fn pick(&mut self, speller: &mut Speller) -> &'static str {
        let end = match speller.next() % 3 {
            0 if self.last_was_cr => "\r\n",
            0 => "\n",
            1 => "\r\n",
            _ => "\r",
        };
        self.last_was_cr = end == "\r";
        end
    }
}

/// The body, and the outcome a correct reader reaches on it.
fn body(answer: &Answer) -> (Vec<u8>, Outcome) {
    let mut pick = Speller::new(answer.seed.rotate_left(17), false);
    let content = answer.tokens.iter().any(|t| !t.is_empty());
    let [load, prompt, prompt_ns, completion, completion_ns] = answer.numbers.map(u64::from);
    let ollama_stats = FinalStats {
        load_ns: load,
        prompt_tokens: prompt,
        prompt_ns,
        completion_tokens: completion,
        completion_ns,
    };
    let openai_stats = FinalStats {
        prompt_tokens: prompt,
        completion_tokens: completion,
        ..FinalStats::default()
    };
    let mut out = String::new();
    if answer.lead {
        // Spaces before `{` are JSON whitespace; before an SSE field they would make
        // a different field name.
        out.push_str(match answer.kind {
            Kind::OpenAiStream => "\r\n\n",
            _ => "\n \t\r\n",
        });
    }
    let (frames, stats) = match answer.kind {
        Kind::OllamaStream { chat } => {
            let mut speller = Speller::new(answer.seed, false);
            for text in &answer.tokens {
                out.push_str(&speller.spell(&ollama_object(chat, text, None)));
                out.push_str(if pick.one_in(2) { "\n" } else { "\r\n" });
            }
            out.push_str(&speller.spell(&ollama_object(chat, "", Some(answer))));
            if pick.one_in(2) {
                out.push('\n');
            }
            (answer.tokens.len() as u64 + 1, Some(ollama_stats))
        }
        Kind::OllamaWhole { chat } => {
            let whole = ollama_object(chat, &answer.tokens.concat(), Some(answer));
            out.push_str(&Speller::new(answer.seed, true).spell(&whole));
            (1, Some(ollama_stats))
        }
        Kind::OpenAiWhole => {
            let mut whole = json!({"id": "chatcmpl-1", "object": "chat.completion",
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": answer.tokens.concat()}}]});
            if answer.usage {
                whole["usage"] = usage(answer);
            }
            out.push_str(&Speller::new(answer.seed, true).spell(&whole));
            (1, answer.usage.then_some(openai_stats))
        }
        Kind::OpenAiStream => {
            let mut speller = Speller::new(answer.seed, true);
            let mut events: Vec<String> = answer
                .tokens
                .iter()
                .map(|text| speller.spell(&openai_chunk(text, None)))
                .collect();
            events.push(speller.spell(&openai_chunk("", Some("stop"))));
            if answer.usage {
                let mut last = openai_chunk("", None);
                last["choices"] = json!([]);
                last["usage"] = usage(answer);
                events.push(speller.spell(&last));
            }
            events.push("[DONE]".to_string());
            let frames = events.len() as u64;
            let mut ends = LineEnds { last_was_cr: false };
            let mut eol = |pick: &mut Speller| ends.pick(pick);
            for event in events {
                if pick.one_in(4) {
                    let end = eol(&mut pick);
                    out.push_str(&format!(": ping{end}"));
                }
                if pick.one_in(4) {
                    let (first, second) = (eol(&mut pick), eol(&mut pick));
                    out.push_str(&format!("event: chunk{first}id: 7{second}"));
                }
                // A JSON text with line breaks is sent as several data lines.
                for line in event.split('\n') {
                    let prefix = if pick.one_in(2) { "data:" } else { "data: " };
                    let end = eol(&mut pick);
                    out.push_str(&format!("{prefix}{line}{end}"));
                }
                let end = eol(&mut pick);
                out.push_str(end);
            }
            (frames, answer.usage.then_some(openai_stats))
        }
    };
    let expected = Outcome {
        saw_content: content,
        saw_done: true,
        saw_error: false,
        stats,
        frames,
        skipped_bytes: 0,
        first_content_at: None,
    };
    (out.into_bytes(), expected)
}

/// The end of the read holding byte `at - 1`, given reads cut at `cuts`.
fn read_end(at: usize, cuts: &[usize], len: usize) -> usize {
    cuts.iter()
        .map(|&c| c.min(len))
        .filter(|&c| c >= at)
        .chain([len])
        .min()
        .unwrap_or(len)
}

fn cuts(indices: &[Index], len: usize) -> Vec<usize> {
    indices.iter().map(|i| i.index(len + 1)).collect()
}

/// Reads `body` cut at `cut_at` and checks it against the byte-by-byte reading.
fn assert_same_as_bytewise(body: &[u8], cut_at: &[usize]) -> Result<Outcome, TestCaseError> {
    let exact = observe_bytewise(body);
    let cut = observe_cut(body, cut_at);
    let expected = Outcome {
        first_content_at: exact
            .first_content_at
            .map(|at| read_end(at, cut_at, body.len())),
        ..exact.clone()
    };
    prop_assert_eq!(cut, expected);
    Ok(exact)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    /// Any answer in any spelling: right, and the same however it is cut.
    #[test]
    fn valid_answers_read_right_at_any_split(
        answer in answer(),
        indices in prop::collection::vec(any::<Index>(), 0..40),
    ) {
        let (body, expected) = body(&answer);
        let whole = observe(&body);
        prop_assert_eq!(
            Outcome { first_content_at: None, ..whole.clone() },
            expected,
            "body: {}", String::from_utf8_lossy(&body)
        );
        let exact = assert_same_as_bytewise(&body, &cuts(&indices, body.len()))?;
        prop_assert_eq!(exact.saw_content, whole.saw_content);
    }

    /// A body cut short anywhere still reads the same however its reads are cut.
    #[test]
    fn truncated_answers_read_the_same_at_any_split(
        answer in answer(),
        end in any::<Index>(),
        indices in prop::collection::vec(any::<Index>(), 0..40),
    ) {
        let (body, _) = body(&answer);
        let body = &body[..end.index(body.len() + 1)];
        assert_same_as_bytewise(body, &cuts(&indices, body.len()))?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4096))]

    /// Arbitrary bytes, or a JSON/SSE opening followed by them, never panic.
    #[test]
    fn arbitrary_bytes_never_panic(
        prefix in prop_oneof![Just(&b""[..]), Just(&b"{"[..]), Just(&b"data: {"[..])],
        bytes in prop::collection::vec(any::<u8>(), 0..600),
        indices in prop::collection::vec(any::<Index>(), 0..20),
    ) {
        let body = [prefix, &bytes[..]].concat();
        let o = observe_cut(&body, &cuts(&indices, body.len()));
        prop_assert!(o.skipped_bytes <= body.len() as u64);
        prop_assert!(!o.saw_content || o.frames > 0);
    }

    /// Valid answers with bytes overwritten at random never panic either.
    #[test]
    fn damaged_answers_never_panic(
        answer in answer(),
        damage in prop::collection::vec((any::<Index>(), any::<u8>()), 1..8),
        indices in prop::collection::vec(any::<Index>(), 0..20),
    ) {
        let (mut body, _) = body(&answer);
        if !body.is_empty() {
            for (at, byte) in damage {
                let i = at.index(body.len());
                body[i] = byte;
            }
        }
        let o = observe_cut(&body, &cuts(&indices, body.len()));
        prop_assert!(o.skipped_bytes <= body.len() as u64);
    }
}
