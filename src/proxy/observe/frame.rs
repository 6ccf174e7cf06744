//! One JSON object of a backend's answer, read by meaning: the few fields the observer
//! needs are deserialized straight from the bytes (keys unescaped by serde, any order,
//! any whitespace), everything else is skipped without building a tree. Every field is
//! lenient: a value of an unexpected type reads as absent instead of failing the frame.

use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, Visitor};

use super::lenient::{lenient_otherwise, Count, Flag, Presence};
use super::openai::{Choices, UsageProbe};

/// What one frame says. Ollama's final chunk carries `done: true` and the counts;
/// OpenAI's carries a `finish_reason` and, when asked or not streamed, `usage`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(super) struct Frame {
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
pub(super) struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
}

/// How a frame's content fields are read: [`Presence`] looks at them, [`IgnoredAny`]
/// skips them unread once the first content has been seen.
pub(super) trait ContentProbe: de::DeserializeOwned {
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
pub(super) struct Probed<C>(pub Frame, PhantomData<C>);

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

/// A chat message or an OpenAI delta: content, thinking/reasoning or tool calls.
pub(super) struct MessageProbe<C> {
    pub found: bool,
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
