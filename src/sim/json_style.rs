//! How the simulator spells the JSON it writes — the one place every body, stream line
//! and SSE event is serialized. `compact` is Ollama's own spelling (Go's
//! `encoding/json`); `spaced` puts a space after every `:` and `,` like Python's
//! `json.dumps`; `pretty` writes whole bodies indented over many lines and stream
//! lines spaced (an NDJSON object must stay on one line). Spaced and pretty also write
//! every object's keys in reverse, so `done` and the metrics come before the text:
//! a proxy must read answers by meaning, not by spelling.

use std::io;

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Serialize, Serializer};
use serde_json::ser::{Formatter, PrettyFormatter};
use serde_json::Value;

#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum JsonStyle {
    #[default]
    Compact,
    Spaced,
    Pretty,
}

impl JsonStyle {
    /// One line's worth: an NDJSON object (without its newline) or an SSE event's data.
    pub fn line(self, value: &impl Serialize) -> Vec<u8> {
        match self {
            JsonStyle::Compact => write(value, serde_json::ser::CompactFormatter),
            JsonStyle::Spaced | JsonStyle::Pretty => write_reversed(value, Spaced),
        }
    }

    /// A whole (non-streamed) body.
    pub fn document(self, value: &impl Serialize) -> Vec<u8> {
        match self {
            JsonStyle::Pretty => write_reversed(value, PrettyFormatter::new()),
            _ => self.line(value),
        }
    }

    /// An `application/json` answer, in place of axum's `Json`.
    pub fn response(self, status: StatusCode, value: &impl Serialize) -> Response {
        (
            status,
            [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
            self.document(value),
        )
            .into_response()
    }

    pub fn ok(self, value: &impl Serialize) -> Response {
        self.response(StatusCode::OK, value)
    }
}

/// A value that cannot be written (a map with non-string keys) becomes an error object,
/// as Ollama's handlers answer an encoding failure.
fn write(value: &impl Serialize, formatter: impl Formatter) -> Vec<u8> {
    let mut out = Vec::new();
    let mut serializer = serde_json::Serializer::with_formatter(&mut out, formatter);
    match value.serialize(&mut serializer) {
        Ok(()) => out,
        Err(error) => serde_json::to_vec(&serde_json::json!({ "error": error.to_string() }))
            .unwrap_or_default(),
    }
}

fn write_reversed(value: &impl Serialize, formatter: impl Formatter) -> Vec<u8> {
    match serde_json::to_value(value) {
        Ok(value) => write(&Reversed(&value), formatter),
        Err(error) => write(
            &serde_json::json!({ "error": error.to_string() }),
            formatter,
        ),
    }
}

/// Serializes a value with every object's keys in reverse order.
struct Reversed<'a>(&'a Value);

impl Serialize for Reversed<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Value::Object(map) => {
                let mut out = serializer.serialize_map(Some(map.len()))?;
                for (key, value) in map.iter().rev() {
                    out.serialize_entry(key, &Reversed(value))?;
                }
                out.end()
            }
            Value::Array(items) => {
                let mut out = serializer.serialize_seq(Some(items.len()))?;
                for item in items {
                    out.serialize_element(&Reversed(item))?;
                }
                out.end()
            }
            scalar => scalar.serialize(serializer),
        }
    }
}

/// Python's `json.dumps` default separators: `", "` and `": "`.
struct Spaced;

impl Formatter for Spaced {
    fn begin_array_value<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> io::Result<()> {
        if first {
            Ok(())
        } else {
            w.write_all(b", ")
        }
    }

    fn begin_object_key<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> io::Result<()> {
        if first {
            Ok(())
        } else {
            w.write_all(b", ")
        }
    }

    fn begin_object_value<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        w.write_all(b": ")
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn final_chunk() -> Value {
        json!({"model": "m", "message": {"role": "assistant", "content": ""},
               "done": true, "eval_count": 3, "context": [1, 2]})
    }

    #[test]
    fn compact_is_serde_json_unchanged() {
        let value = final_chunk();
        assert_eq!(
            JsonStyle::Compact.line(&value),
            serde_json::to_vec(&value).unwrap()
        );
        assert_eq!(
            JsonStyle::Compact.document(&value),
            JsonStyle::Compact.line(&value)
        );
    }

    #[test]
    fn spaced_writes_python_separators_with_keys_reversed() {
        let line = String::from_utf8(JsonStyle::Spaced.line(&final_chunk())).unwrap();
        assert_eq!(
            line,
            r#"{"context": [1, 2], "eval_count": 3, "done": true, "message": {"content": "", "role": "assistant"}, "model": "m"}"#
        );
        assert_eq!(JsonStyle::Spaced.document(&final_chunk()), line.as_bytes());
    }

    #[test]
    fn pretty_spans_lines_for_bodies_and_keeps_stream_lines_whole() {
        let value = final_chunk();
        let body = String::from_utf8(JsonStyle::Pretty.document(&value)).unwrap();
        assert!(body.lines().count() > 5, "{body}");
        assert!(body.contains("\n  \"done\": true,\n"), "{body}");
        let line = JsonStyle::Pretty.line(&value);
        assert!(!line.contains(&b'\n'));
        assert_eq!(line, JsonStyle::Spaced.line(&value));
        // Every style says the same thing.
        for style in [JsonStyle::Compact, JsonStyle::Spaced, JsonStyle::Pretty] {
            let read: Value = serde_json::from_slice(&style.document(&value)).unwrap();
            assert_eq!(read, value);
        }
    }
}
