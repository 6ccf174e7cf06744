//! Reads what routing needs from the first bytes of a JSON body, without consuming
//! the body: the model, and the conversation's anchor (system prompt + first user
//! message, or the prompt's head) that affinity hashes.
//!
//! serde_json parses the prefix through seed visitors that record the wanted fields
//! and stop the parse early once everything is known. An end-of-input error means
//! "read another chunk".

use std::fmt;

use bytes::Bytes;
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

/// How much of a prompt identifies a conversation: enough to tell conversations apart,
/// short enough that a client trimming its context does not move the conversation.
const PROMPT_HEAD: usize = 512;

/// What was learned about a request body so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Facts {
    pub model: Option<String>,
    /// System prompt (from a `system`/`instructions` field or the first system message).
    pub system: Option<String>,
    /// First user message, or the head of `prompt`/`input`.
    pub anchor: Option<String>,
}

impl Facts {
    /// A stable key for the conversation, or `None` when the body names no anchor.
    /// `model` is the normalized name, so `llama3` and `llama3:latest` agree.
    pub fn conversation_key(&self, model: &str) -> Option<u64> {
        let anchor = self.anchor.as_deref()?;
        let mut h = xxhash_rust::xxh3::Xxh3::new();
        h.update(model.as_bytes());
        h.update(b"\0");
        h.update(self.system.as_deref().unwrap_or("").as_bytes());
        h.update(b"\0");
        h.update(anchor.as_bytes());
        Some(h.digest())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sniff {
    /// Everything routing wants was found, or the whole prefix was read.
    Complete(Facts),
    /// The prefix is valid so far but ends before everything was found.
    NeedMore(Facts),
    /// Not a JSON object.
    NotJson(String),
}

/// Marker error that ends the parse once everything is known.
const STOP: &str = "corral: sniff complete";

struct Finder<'k> {
    model_keys: &'k [&'k str],
    facts: Facts,
    /// The anchor came from `messages`, where any system message precedes it; a
    /// `prompt` may be followed by a `system` field, so those bodies are read on.
    anchored_by_messages: bool,
}

impl Finder<'_> {
    fn done(&self) -> bool {
        self.facts.model.is_some() && self.anchored_by_messages
    }
}

fn head(s: &str) -> String {
    let mut end = s.len().min(PROMPT_HEAD);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

fn text_of(v: &Value) -> String {
    match v {
        Value::String(s) => head(s),
        // OpenAI content parts and the like: their JSON text identifies them.
        other => head(&other.to_string()),
    }
}

impl<'de> DeserializeSeed<'de> for &mut Finder<'_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for &mut Finder<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<String>()? {
            let key = key.as_str();
            if self.model_keys.contains(&key) && self.facts.model.is_none() {
                if let Value::String(s) = map.next_value::<Value>()? {
                    self.facts.model = Some(s);
                }
            } else if key == "messages" {
                map.next_value_seed(Messages {
                    facts: &mut self.facts,
                    anchored: &mut self.anchored_by_messages,
                })?;
            } else if matches!(key, "prompt" | "input") && self.facts.anchor.is_none() {
                self.facts.anchor = first_user_text(&map.next_value::<Value>()?);
            } else if matches!(key, "system" | "instructions") && self.facts.system.is_none() {
                self.facts.system = Some(text_of(&map.next_value::<Value>()?));
            } else {
                map.next_value::<IgnoredAny>()?;
            }
            if self.done() {
                return Err(de::Error::custom(STOP));
            }
        }
        Ok(())
    }
}

/// `prompt`/`input` is a string, or (OpenAI responses) a list of messages.
fn first_user_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(head(s)),
        Value::Array(items) => items
            .iter()
            .find(|m| m.get("role").and_then(Value::as_str) == Some("user"))
            .or(items.first())
            .map(|m| text_of(m.get("content").unwrap_or(m))),
        _ => None,
    }
}

/// Walks `messages` only as far as the first user message.
struct Messages<'f> {
    facts: &'f mut Facts,
    anchored: &'f mut bool,
}

impl<'de> DeserializeSeed<'de> for Messages<'_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

#[derive(serde::Deserialize)]
struct Message {
    #[serde(default)]
    role: String,
    #[serde(default)]
    content: Value,
}

impl<'de> Visitor<'de> for Messages<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a list of messages")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while self.facts.anchor.is_none() {
            let Some(m) = seq.next_element::<Message>()? else {
                return Ok(());
            };
            match m.role.as_str() {
                "system" | "developer" if self.facts.system.is_none() => {
                    self.facts.system = Some(text_of(&m.content));
                }
                "user" => {
                    self.facts.anchor = Some(text_of(&m.content));
                    *self.anchored = true;
                }
                _ => {}
            }
        }
        if self.facts.model.is_some() {
            return Err(de::Error::custom(STOP));
        }
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(())
    }
}

/// Parses as much of `prefix` as needed; `model_keys` are the fields naming the model.
pub fn sniff_body(prefix: &[u8], model_keys: &[&str]) -> Sniff {
    let mut finder = Finder {
        model_keys,
        facts: Facts::default(),
        anchored_by_messages: false,
    };
    let mut de = serde_json::Deserializer::from_slice(prefix);
    let result = (&mut finder).deserialize(&mut de);
    match result {
        _ if finder.done() => Sniff::Complete(finder.facts),
        Ok(()) => Sniff::Complete(finder.facts),
        Err(e) if e.is_eof() || number_cut_at_end(prefix) => Sniff::NeedMore(finder.facts),
        Err(e) => Sniff::NotJson(e.to_string()),
    }
}

/// Sniffs a body that arrives in chunks. Re-parsing the whole prefix on every chunk
/// would be quadratic in the number of chunks; this parses when the prefix has doubled
/// since the last parse, and on every chunk once it passes `eager_after` (where one
/// more read could overrun the retry buffer, so a verdict must come as soon as it can).
pub struct BodySniffer<'a> {
    fields: &'a [&'a str],
    /// The first chunk, not copied: usually the whole body.
    first: Bytes,
    /// Every chunk so far, once there is more than one.
    joined: Vec<u8>,
    /// Prefix length at the last parse.
    parsed: usize,
    /// Stop reading as soon as the model is known, before the conversation anchor.
    stop_at_model: bool,
    eager_after: usize,
    /// How many times the prefix was parsed.
    parses: u32,
}

impl<'a> BodySniffer<'a> {
    pub fn new(fields: &'a [&'a str], stop_at_model: bool, eager_after: usize) -> Self {
        BodySniffer {
            fields,
            first: Bytes::new(),
            joined: Vec::new(),
            parsed: 0,
            stop_at_model,
            eager_after,
            parses: 0,
        }
    }

    fn prefix(&self) -> &[u8] {
        if self.joined.is_empty() {
            &self.first
        } else {
            &self.joined
        }
    }

    /// Adds the next chunk; a verdict once one is reached.
    pub fn push(&mut self, chunk: Bytes) -> Option<Sniff> {
        if self.first.is_empty() && self.joined.is_empty() {
            self.first = chunk;
        } else {
            if self.joined.is_empty() {
                self.joined.extend_from_slice(&self.first);
            }
            self.joined.extend_from_slice(&chunk);
        }
        let len = self.prefix().len();
        if len < 2 * self.parsed && len <= self.eager_after {
            return None;
        }
        self.parsed = len;
        self.parses += 1;
        match sniff_body(self.prefix(), self.fields) {
            Sniff::NeedMore(facts) if facts.model.is_some() && self.stop_at_model => {
                Some(Sniff::Complete(facts))
            }
            Sniff::NeedMore(_) => None,
            other => Some(other),
        }
    }

    /// The body ended: the verdict on all of it.
    pub fn finish(self) -> Sniff {
        let len = self.prefix().len();
        if len == 0 {
            return Sniff::Complete(Facts::default());
        }
        let unfinished = || Sniff::NotJson("unexpected end of JSON input".into());
        if len == self.parsed {
            // Parsed as it is and found wanting (`push` returns any other verdict).
            return unfinished();
        }
        match sniff_body(self.prefix(), self.fields) {
            Sniff::NeedMore(facts) if facts.model.is_some() && self.stop_at_model => {
                Sniff::Complete(facts)
            }
            Sniff::NeedMore(_) => unfinished(),
            other => other,
        }
    }
}

/// Whether a parse error is only a number cut by the end of the prefix: serde_json
/// reports `0.` or `1e-` at the end of input as an invalid number rather than as end of
/// input, but the next chunk may complete it. A digit appended tells the two apart.
fn number_cut_at_end(prefix: &[u8]) -> bool {
    if !prefix
        .last()
        .is_some_and(|b| matches!(b, b'.' | b'e' | b'E' | b'+' | b'-'))
    {
        return false;
    }
    let mut completed = prefix.to_vec();
    completed.push(b'0');
    !matches!(sniff_body(&completed, &[]), Sniff::NotJson(_))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MODEL: &[&str] = &["model"];

    fn model(s: Sniff) -> Option<String> {
        match s {
            Sniff::Complete(f) => f.model,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn finds_model_in_complete_and_partial_bodies() {
        let body = br#"{"model":"llama3","messages":[{"role":"user","content":"hi"}]}"#;
        assert_eq!(model(sniff_body(body, MODEL)).as_deref(), Some("llama3"));
        // Model after a nested value that contains the word.
        let late = br#"{"options":{"model":"no","x":[1,{"a":"}"}]},"model":"qwen\u0032"}"#;
        assert_eq!(model(sniff_body(late, MODEL)).as_deref(), Some("qwen2"));
    }

    #[test]
    fn chat_stops_at_the_first_user_message() {
        let body = br#"{"model":"m","messages":[{"role":"system","content":"be brief"},{"role":"user","content":"hello"},{"role":"assistant","content":"hi"},{"role":"user","content":"more"}"#;
        // The prefix is cut mid-array, yet everything needed is there.
        let Sniff::Complete(f) = sniff_body(body, MODEL) else {
            panic!()
        };
        assert_eq!(f.system.as_deref(), Some("be brief"));
        assert_eq!(f.anchor.as_deref(), Some("hello"));
    }

    #[test]
    fn later_turns_keep_the_conversation_key() {
        let turn1 = br#"{"model":"m","messages":[{"role":"user","content":"plan a trip"}]}"#;
        let turn3 = br#"{"model":"m","messages":[{"role":"user","content":"plan a trip"},{"role":"assistant","content":"ok"},{"role":"user","content":"to Rome"}]}"#;
        let other = br#"{"model":"m","messages":[{"role":"user","content":"write a poem"}]}"#;
        let key = |b: &[u8]| match sniff_body(b, MODEL) {
            Sniff::Complete(f) => f.conversation_key("m:latest"),
            s => panic!("{s:?}"),
        };
        assert_eq!(key(turn1), key(turn3));
        assert_ne!(key(turn1), key(other));
        assert!(key(turn1).is_some());
    }

    #[test]
    fn generate_and_openai_shapes_have_anchors() {
        let g = br#"{"model":"m","prompt":"why is the sky blue","system":"sys"}"#;
        let Sniff::Complete(f) = sniff_body(g, MODEL) else {
            panic!()
        };
        assert_eq!(f.anchor.as_deref(), Some("why is the sky blue"));
        let parts = br#"{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"hi"}]}]}"#;
        let Sniff::Complete(f) = sniff_body(parts, MODEL) else {
            panic!()
        };
        assert!(f.anchor.unwrap().contains("hi"));
        let resp =
            br#"{"model":"m","input":[{"role":"user","content":"q"}],"instructions":"be nice"}"#;
        let Sniff::Complete(f) = sniff_body(resp, MODEL) else {
            panic!()
        };
        assert_eq!(
            (f.anchor.as_deref(), f.system.as_deref()),
            (Some("q"), Some("be nice"))
        );
        // Embeddings: no conversation, still routable.
        let Sniff::Complete(f) = sniff_body(br#"{"model":"m","truncate":true}"#, MODEL) else {
            panic!()
        };
        assert_eq!(f.anchor, None);
    }

    #[test]
    fn every_prefix_needs_more() {
        let body = br#"{"stream":false,"options":{"a \"quoted\" {x}":1},"model":"m:1"}"#;
        for cut in 0..body.len() {
            let s = sniff_body(&body[..cut], MODEL);
            assert!(matches!(s, Sniff::NeedMore(_)), "cut {cut}: {s:?}");
        }
        assert_eq!(model(sniff_body(body, MODEL)).as_deref(), Some("m:1"));
    }

    #[test]
    fn a_chunk_ending_inside_a_number_needs_more() {
        let body = br#"{"options":{"temperature":0.5,"seed":-12e3},"model":"m"}"#;
        for cut in 0..body.len() {
            let s = sniff_body(&body[..cut], MODEL);
            assert!(matches!(s, Sniff::NeedMore(_)), "cut {cut}: {s:?}");
        }
        assert!(matches!(
            sniff_body(b"{\"n\": 1.}", MODEL),
            Sniff::NotJson(_)
        ));
    }

    #[test]
    fn absent_and_invalid() {
        assert_eq!(model(sniff_body(br#"{"prompt":"x"}"#, MODEL)), None);
        assert_eq!(model(sniff_body(br#"{"model":3}"#, MODEL)), None);
        assert!(matches!(
            sniff_body(b"model=llama3", MODEL),
            Sniff::NotJson(_)
        ));
        assert!(matches!(sniff_body(b"[1,2]", MODEL), Sniff::NotJson(_)));
        assert_eq!(
            model(sniff_body(
                br#"{"name":"a","model":"b"}"#,
                &["model", "name"]
            ))
            .as_deref(),
            Some("a")
        );
    }

    /// The proxy's loop over arriving chunks: the body cut at `cuts`, fed to a
    /// `BodySniffer` that parses at doublings up to half the body, then every chunk.
    fn sniff_chunks(body: &[u8], cuts: &[usize], keys: &[&str]) -> Sniff {
        let mut ends: Vec<usize> = cuts.iter().map(|c| c % (body.len() + 1)).collect();
        ends.push(body.len());
        ends.sort_unstable();
        ends.dedup();
        let mut sniffer = BodySniffer::new(keys, false, body.len() / 2);
        let mut start = 0;
        for end in ends {
            if end == start {
                continue;
            }
            let chunk = Bytes::copy_from_slice(&body[start..end]);
            start = end;
            if let Some(verdict) = sniffer.push(chunk) {
                return verdict;
            }
        }
        sniffer.finish()
    }

    #[test]
    fn a_body_in_one_byte_chunks_is_parsed_a_logarithmic_number_of_times() {
        let body = br#"{"messages":[{"role":"user","content":"a long conversation"}],"options":{"x":1},"model":"late"}"#;
        let mut sniffer = BodySniffer::new(MODEL, false, usize::MAX);
        let mut verdict = None;
        for b in body.iter() {
            verdict = sniffer.push(Bytes::copy_from_slice(&[*b]));
            if verdict.is_some() {
                break;
            }
        }
        // 1, 2, 4, ... bytes: one parse per doubling, not one per byte.
        let bound = usize::BITS - body.len().leading_zeros() + 1;
        assert!(sniffer.parses <= bound, "{} parses", sniffer.parses);
        let verdict = verdict.unwrap_or_else(|| sniffer.finish());
        assert_eq!(model(verdict).as_deref(), Some("late"));
    }

    #[test]
    fn stop_at_model_answers_before_the_anchor_and_a_cut_body_is_not_json() {
        let mut sniffer = BodySniffer::new(MODEL, true, usize::MAX);
        let v = sniffer.push(Bytes::from_static(br#"{"model":"m","messages":[{"ro"#));
        assert_eq!(model(v.expect("a verdict")).as_deref(), Some("m"));
        let mut sniffer = BodySniffer::new(MODEL, false, usize::MAX);
        assert!(sniffer
            .push(Bytes::from_static(br#"{"model":"m","mess"#))
            .is_none());
        assert!(matches!(sniffer.finish(), Sniff::NotJson(_)));
        assert!(matches!(
            BodySniffer::new(MODEL, false, 0).finish(),
            Sniff::Complete(_)
        ));
    }

    fn text() -> impl proptest::strategy::Strategy<Value = String> {
        proptest::string::string_regex("[a-zA-Z0-9 \"\\\\{}\\[\\]:,\u{e9}\u{1F600}]{0,40}")
            .expect("valid regex")
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config { cases: 512, ..Default::default() })]

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let _ = sniff_body(&bytes, &["model", "name"]);
        }

        /// Valid bodies (any key order, whitespace and escapes serde_json writes) give
        /// the same facts however the body is cut into chunks.
        #[test]
        fn rechunking_a_valid_body_never_changes_the_result(
            model in text(),
            system in proptest::option::of(text()),
            turns in proptest::collection::vec(("user|assistant|system", text()), 0..4),
            prompt in proptest::option::of(text()),
            model_first in proptest::bool::ANY,
            pretty in proptest::bool::ANY,
            cuts in proptest::collection::vec(0usize..4096, 0..6),
        ) {
            let mut body = serde_json::Map::new();
            let messages: Vec<Value> = turns
                .iter()
                .map(|(role, content)| serde_json::json!({"role": role, "content": content}))
                .collect();
            if model_first {
                body.insert("model".into(), model.clone().into());
            }
            body.insert("options".into(), serde_json::json!({"temperature": 0.5, "stop": ["}", "\""]}));
            if let Some(s) = &system {
                body.insert("system".into(), s.clone().into());
            }
            if !messages.is_empty() {
                body.insert("messages".into(), messages.into());
            }
            if let Some(p) = &prompt {
                body.insert("prompt".into(), p.clone().into());
            }
            if !model_first {
                body.insert("model".into(), model.clone().into());
            }
            let value = Value::Object(body);
            let bytes = if pretty {
                serde_json::to_vec_pretty(&value)
            } else {
                serde_json::to_vec(&value)
            }
            .expect("serializable");
            let whole = sniff_body(&bytes, MODEL);
            proptest::prop_assert!(matches!(whole, Sniff::Complete(_)), "{:?}", whole);
            proptest::prop_assert_eq!(sniff_chunks(&bytes, &cuts, MODEL), whole);
        }
    }
}
