//! OpenAI's parts of a frame: `choices` (content in a delta, message or text, and
//! whether a choice finished) and `usage`.

use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::frame::{ContentProbe, MessageProbe, Usage};
use super::lenient::{lenient_otherwise, Count, FinishReason};

/// OpenAI's `choices`, folded without collecting: any content, any finish.
pub(super) struct Choices<C> {
    pub content: bool,
    pub finished: bool,
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

/// `usage` as an object of counts; `null` or anything else is no usage.
pub(super) struct UsageProbe(pub Option<Usage>);

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
