//! Readers of one JSON value that never fail on its type: a value of a type they do
//! not expect reads as absent, and containers are skipped to their end.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::frame::ContentProbe;

pub(super) fn drain_seq<'de, A: SeqAccess<'de>>(mut seq: A) -> Result<(), A::Error> {
    while seq.next_element::<IgnoredAny>()?.is_some() {}
    Ok(())
}

pub(super) fn drain_map<'de, A: MapAccess<'de>>(mut map: A) -> Result<(), A::Error> {
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
        fn visit_unit<E: ::serde::de::Error>(self) -> Result<Self::Value, E> { Ok($absent) }
    };
    (@one bool, $absent:expr) => {
        fn visit_bool<E: ::serde::de::Error>(self, _: bool) -> Result<Self::Value, E> { Ok($absent) }
    };
    (@one numbers, $absent:expr) => {
        fn visit_u64<E: ::serde::de::Error>(self, _: u64) -> Result<Self::Value, E> { Ok($absent) }
        fn visit_i64<E: ::serde::de::Error>(self, _: i64) -> Result<Self::Value, E> { Ok($absent) }
        fn visit_f64<E: ::serde::de::Error>(self, _: f64) -> Result<Self::Value, E> { Ok($absent) }
    };
    (@one str, $absent:expr) => {
        fn visit_str<E: ::serde::de::Error>(self, _: &str) -> Result<Self::Value, E> { Ok($absent) }
    };
    (@one seq, $absent:expr) => {
        fn visit_seq<A: ::serde::de::SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
            $crate::proxy::observe::lenient::drain_seq(seq).map(|()| $absent)
        }
    };
    (@one map, $absent:expr) => {
        fn visit_map<A: ::serde::de::MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
            $crate::proxy::observe::lenient::drain_map(map).map(|()| $absent)
        }
    };
}
pub(super) use lenient_otherwise;

/// `true` only for the JSON literal `true`.
pub(super) struct Flag(pub bool);

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
pub(super) struct Count(pub u64);

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
pub(super) struct Presence(pub bool);

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

/// A non-empty string: the choice is finished (`stop`, `length`, `tool_calls`, ...).
pub(super) struct FinishReason(pub bool);

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
