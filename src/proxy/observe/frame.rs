//! One JSON object of a backend's answer, read by meaning: the few fields the observer
//! needs are deserialized straight from the bytes (keys unescaped by serde, any order,
//! any whitespace), everything else is skipped without building a tree. Every field is
//! lenient: a value of an unexpected type reads as absent instead of failing the frame.

use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// What one frame says. Ollama's final chunk carries `done: true` and the counts;
/// OpenAI's carries a `finish_reason` and, when asked or not streamed, `usage`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Generated text, thinking or a tool call, in Ollama's or OpenAI's shape.
    pub content: bool,
    /// `done: true`.
    pub done: bool,
    /// Some choice has a non-empty `finish_reason`.
    pub finished: bool,
    /// An `error` member with a value.
    pub error: bool,
    pub load_duration: u64,
    pub prompt_eval_count: u64,
    pub prompt_eval_duration: u64,
    pub eval_count: u64,
    pub eval_duration: u64,
    pub usage: Option<Usage>,
}

/// OpenAI's token counts.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
}

/// How a frame's content fields are read: [`Presence`] looks at them, [`IgnoredAny`]
/// skips them unread once the first content has been seen.
pub trait ContentProbe: de::DeserializeOwned {
    /// Content is not looked at: messages and deltas are skipped whole.
    const SKIPS: bool = false;
    fn found(&self) -> bool;
}

impl ContentProbe for IgnoredAny {
    const SKIPS: bool = true;

    fn found(&self) -> bool {
        false
    }
}

/// A frame read with content probe `C`.
pub struct Probed<C>(pub Frame, PhantomData<C>);

impl<'de, C: ContentProbe> Deserialize<'de> for Probed<C> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer
            .deserialize_map(FrameVisitor::<C>(PhantomData))
            .map(|frame| Probed(frame, PhantomData))
    }
}

/// Object keys the observer cares about, matched after unescaping.
enum Key {
    Done,
    Response,
    Thinking,
    Message,
    Choices,
    Usage,
    Error,
    LoadDuration,
    PromptEvalCount,
    PromptEvalDuration,
    EvalCount,
    EvalDuration,
    Other,
}

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl Visitor<'_> for KeyVisitor {
            type Value = Key;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object key")
            }
            fn visit_str<E: de::Error>(self, key: &str) -> Result<Key, E> {
                Ok(match key {
                    "done" => Key::Done,
                    "response" => Key::Response,
                    "thinking" => Key::Thinking,
                    "message" => Key::Message,
                    "choices" => Key::Choices,
                    "usage" => Key::Usage,
                    "error" => Key::Error,
                    "load_duration" => Key::LoadDuration,
                    "prompt_eval_count" => Key::PromptEvalCount,
                    "prompt_eval_duration" => Key::PromptEvalDuration,
                    "eval_count" => Key::EvalCount,
                    "eval_duration" => Key::EvalDuration,
                    _ => Key::Other,
                })
            }
        }
        deserializer.deserialize_identifier(KeyVisitor)
    }
}

struct FrameVisitor<C>(PhantomData<C>);

impl<'de, C: ContentProbe> Visitor<'de> for FrameVisitor<C> {
    type Value = Frame;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Frame, A::Error> {
        let mut frame = Frame::default();
        while let Some(key) = map.next_key::<Key>()? {
            match key {
                Key::Done => frame.done = map.next_value::<Flag>()?.0,
                Key::Response | Key::Thinking => frame.content |= map.next_value::<C>()?.found(),
                Key::Message if C::SKIPS => {
                    map.next_value::<IgnoredAny>()?;
                }
                Key::Message => frame.content |= map.next_value::<MessageProbe<C>>()?.found,
                Key::Choices => {
                    let choices = map.next_value::<Choices<C>>()?;
                    frame.content |= choices.content;
                    frame.finished |= choices.finished;
                }
                Key::Usage => frame.usage = map.next_value::<UsageProbe>()?.0,
                Key::Error => frame.error = map.next_value::<Presence>()?.0,
                Key::LoadDuration => frame.load_duration = map.next_value::<Count>()?.0,
                Key::PromptEvalCount => frame.prompt_eval_count = map.next_value::<Count>()?.0,
                Key::PromptEvalDuration => {
                    frame.prompt_eval_duration = map.next_value::<Count>()?.0
                }
                Key::EvalCount => frame.eval_count = map.next_value::<Count>()?.0,
                Key::EvalDuration => frame.eval_duration = map.next_value::<Count>()?.0,
                Key::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(frame)
    }
}

fn drain_seq<'de, A: SeqAccess<'de>>(mut seq: A) -> Result<(), A::Error> {
    while seq.next_element::<IgnoredAny>()?.is_some() {}
    Ok(())
}

fn drain_map<'de, A: MapAccess<'de>>(mut map: A) -> Result<(), A::Error> {
    while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
    Ok(())
}

/// Implements the visitor methods for every JSON type a lenient reader does not
/// expect: each reads as `$absent` (containers are skipped to their end).
macro_rules! lenient_otherwise {
    ($absent:expr; $($skip:ident),*) => {
        $(lenient_otherwise!(@one $skip, $absent);)*
    };
    (@one unit, $absent:expr) => {
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> { Ok($absent) }
    };
    (@one bool, $absent:expr) => {
        fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> { Ok($absent) }
    };
    (@one numbers, $absent:expr) => {
        fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> { Ok($absent) }
        fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> { Ok($absent) }
        fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> { Ok($absent) }
    };
    (@one str, $absent:expr) => {
        fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> { Ok($absent) }
    };
    (@one seq, $absent:expr) => {
        fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
            drain_seq(seq).map(|()| $absent)
        }
    };
    (@one map, $absent:expr) => {
        fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
            drain_map(map).map(|()| $absent)
        }
    };
}

/// `true` only for the JSON literal `true`.
struct Flag(bool);

impl<'de> Deserialize<'de> for Flag {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct FlagVisitor;
        impl<'de> Visitor<'de> for FlagVisitor {
            type Value = Flag;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Flag, E> {
                Ok(Flag(v))
            }
            lenient_otherwise!(Flag(false); unit, numbers, str, seq, map);
        }
        deserializer.deserialize_any(FlagVisitor)
    }
}

/// A non-negative count or duration; anything else reads as 0.
struct Count(u64);

impl<'de> Deserialize<'de> for Count {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct CountVisitor;
        impl<'de> Visitor<'de> for CountVisitor {
            type Value = Count;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Count, E> {
                Ok(Count(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Count, E> {
                Ok(Count(u64::try_from(v).unwrap_or(0)))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Count, E> {
                // `12.0` and `1.2e3` are counts too; `as` saturates and maps NaN to 0.
                Ok(Count(if v > 0.0 { v as u64 } else { 0 }))
            }
            lenient_otherwise!(Count(0); unit, bool, str, seq, map);
        }
        deserializer.deserialize_any(CountVisitor)
    }
}

/// Whether a value says something: a non-empty string or array, any object, number or
/// boolean; `null` and `""` and `[]` say nothing.
pub struct Presence(pub bool);

impl ContentProbe for Presence {
    fn found(&self) -> bool {
        self.0
    }
}

impl<'de> Deserialize<'de> for Presence {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct PresenceVisitor;
        impl<'de> Visitor<'de> for PresenceVisitor {
            type Value = Presence;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Presence, E> {
                Ok(Presence(!v.is_empty()))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Presence, E> {
                Ok(Presence(false))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Presence, A::Error> {
                let any = seq.next_element::<IgnoredAny>()?.is_some();
                drain_seq(seq)?;
                Ok(Presence(any))
            }
            lenient_otherwise!(Presence(true); bool, numbers, map);
        }
        deserializer.deserialize_any(PresenceVisitor)
    }
}

/// A chat message or an OpenAI delta: content, thinking/reasoning or tool calls.
struct MessageProbe<C> {
    found: bool,
    probe: PhantomData<C>,
}

impl<C> MessageProbe<C> {
    fn new(found: bool) -> Self {
        MessageProbe {
            found,
            probe: PhantomData,
        }
    }
}

impl<'de, C: ContentProbe> Deserialize<'de> for MessageProbe<C> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct MessageVisitor<C>(PhantomData<C>);
        impl<'de, C: ContentProbe> Visitor<'de> for MessageVisitor<C> {
            type Value = MessageProbe<C>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut found = false;
                while let Some(key) = map.next_key::<MessageKey>()? {
                    match key {
                        MessageKey::Content => found |= map.next_value::<C>()?.found(),
                        MessageKey::Other => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(MessageProbe::new(found))
            }
            lenient_otherwise!(MessageProbe::new(false); unit, bool, numbers, str, seq);
        }
        deserializer.deserialize_any(MessageVisitor(PhantomData))
    }
}

enum MessageKey {
    Content,
    Other,
}

impl<'de> Deserialize<'de> for MessageKey {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl Visitor<'_> for KeyVisitor {
            type Value = MessageKey;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object key")
            }
            fn visit_str<E: de::Error>(self, key: &str) -> Result<MessageKey, E> {
                Ok(match key {
                    "content" | "thinking" | "reasoning" | "reasoning_content" | "tool_calls" => {
                        MessageKey::Content
                    }
                    _ => MessageKey::Other,
                })
            }
        }
        deserializer.deserialize_identifier(KeyVisitor)
    }
}

/// OpenAI's `choices`, folded without collecting: any content, any finish.
struct Choices<C> {
    content: bool,
    finished: bool,
    probe: PhantomData<C>,
}

impl<C> Choices<C> {
    fn new(content: bool, finished: bool) -> Self {
        Choices {
            content,
            finished,
            probe: PhantomData,
        }
    }
}

impl<'de, C: ContentProbe> Deserialize<'de> for Choices<C> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ChoicesVisitor<C>(PhantomData<C>);
        impl<'de, C: ContentProbe> Visitor<'de> for ChoicesVisitor<C> {
            type Value = Choices<C>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut all = Choices::new(false, false);
                while let Some(choice) = seq.next_element::<Choices<C>>()? {
                    all.content |= choice.content;
                    all.finished |= choice.finished;
                }
                Ok(all)
            }
            /// One choice.
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut choice = Choices::new(false, false);
                while let Some(key) = map.next_key::<ChoiceKey>()? {
                    match key {
                        ChoiceKey::Message | ChoiceKey::Text if C::SKIPS => {
                            map.next_value::<IgnoredAny>()?;
                        }
                        ChoiceKey::Message => {
                            choice.content |= map.next_value::<MessageProbe<C>>()?.found
                        }
                        ChoiceKey::Text => choice.content |= map.next_value::<C>()?.found(),
                        ChoiceKey::FinishReason => {
                            choice.finished = map.next_value::<FinishReason>()?.0
                        }
                        ChoiceKey::Other => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(choice)
            }
            lenient_otherwise!(Choices::new(false, false); unit, bool, numbers, str);
        }
        deserializer.deserialize_any(ChoicesVisitor(PhantomData))
    }
}

enum ChoiceKey {
    Message,
    Text,
    FinishReason,
    Other,
}

impl<'de> Deserialize<'de> for ChoiceKey {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl Visitor<'_> for KeyVisitor {
            type Value = ChoiceKey;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object key")
            }
            fn visit_str<E: de::Error>(self, key: &str) -> Result<ChoiceKey, E> {
                Ok(match key {
                    "delta" | "message" => ChoiceKey::Message,
                    "text" => ChoiceKey::Text,
                    "finish_reason" => ChoiceKey::FinishReason,
                    _ => ChoiceKey::Other,
                })
            }
        }
        deserializer.deserialize_identifier(KeyVisitor)
    }
}

/// A non-empty string: the choice is finished (`stop`, `length`, `tool_calls`, ...).
struct FinishReason(bool);

impl<'de> Deserialize<'de> for FinishReason {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ReasonVisitor;
        impl<'de> Visitor<'de> for ReasonVisitor {
            type Value = FinishReason;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<FinishReason, E> {
                Ok(FinishReason(!v.is_empty()))
            }
            lenient_otherwise!(FinishReason(false); unit, bool, numbers, seq, map);
        }
        deserializer.deserialize_any(ReasonVisitor)
    }
}

/// `usage` as an object of counts; `null` or anything else is no usage.
struct UsageProbe(Option<Usage>);

impl<'de> Deserialize<'de> for UsageProbe {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct UsageVisitor;
        impl<'de> Visitor<'de> for UsageVisitor {
            type Value = UsageProbe;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<UsageProbe, A::Error> {
                let mut usage = Usage::default();
                while let Some(key) = map.next_key::<UsageKey>()? {
                    match key {
                        UsageKey::Prompt => usage.prompt_tokens = map.next_value::<Count>()?.0,
                        UsageKey::Completion => {
                            usage.completion_tokens = map.next_value::<Count>()?.0
                        }
                        UsageKey::Other => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(UsageProbe(Some(usage)))
            }
            lenient_otherwise!(UsageProbe(None); unit, bool, numbers, str, seq);
        }
        deserializer.deserialize_any(UsageVisitor)
    }
}

enum UsageKey {
    Prompt,
    Completion,
    Other,
}

impl<'de> Deserialize<'de> for UsageKey {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl Visitor<'_> for KeyVisitor {
            type Value = UsageKey;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object key")
            }
            fn visit_str<E: de::Error>(self, key: &str) -> Result<UsageKey, E> {
                Ok(match key {
                    "prompt_tokens" => UsageKey::Prompt,
                    "completion_tokens" => UsageKey::Completion,
                    _ => UsageKey::Other,
                })
            }
        }
        deserializer.deserialize_identifier(KeyVisitor)
    }
}
