//! `keep_alive`: how long a model stays resident after its last request, parsed the
//! way Ollama parses it (seconds, Go-style duration strings, negative = forever).

use std::time::Duration;

use tokio::time::Instant;

/// How long a model stays resident after its last request (`keep_alive`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum KeepAlive {
    Forever,
    For(Duration),
}

impl KeepAlive {
    /// Ollama's default (`OLLAMA_KEEP_ALIVE` unset).
    pub(super) const DEFAULT: KeepAlive = KeepAlive::For(Duration::from_secs(5 * 60));

    /// Reads a request's `keep_alive`: seconds as a number, or a duration string
    /// (`"5m"`, `"1h30m"`, `"0"`); any negative value means forever.
    pub(super) fn from_json(value: &serde_json::Value) -> Result<Option<KeepAlive>, String> {
        let invalid = || format!("time: invalid duration {value}");
        match value {
            serde_json::Value::Null => Ok(None),
            serde_json::Value::Number(number) => {
                let seconds = number.as_f64().ok_or_else(invalid)?;
                Ok(Some(KeepAlive::from_seconds(seconds)))
            }
            serde_json::Value::String(text) => {
                let text = text.trim();
                if let Ok(seconds) = text.parse::<f64>() {
                    return Ok(Some(KeepAlive::from_seconds(seconds)));
                }
                if let Some(positive) = text.strip_prefix('-') {
                    return humantime::parse_duration(positive)
                        .map(|_| Some(KeepAlive::Forever))
                        .map_err(|_| invalid());
                }
                humantime::parse_duration(text)
                    .map(|duration| Some(KeepAlive::For(duration)))
                    .map_err(|_| invalid())
            }
            _ => Err(invalid()),
        }
    }

    fn from_seconds(seconds: f64) -> KeepAlive {
        if seconds < 0.0 {
            KeepAlive::Forever
        } else {
            KeepAlive::For(Duration::try_from_secs_f64(seconds).unwrap_or(Duration::MAX))
        }
    }

    pub(super) fn deadline(self, now: Instant) -> Option<Instant> {
        match self {
            KeepAlive::Forever => None,
            KeepAlive::For(duration) => now.checked_add(duration),
        }
    }

    pub(super) fn is_zero(self) -> bool {
        self == KeepAlive::For(Duration::ZERO)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keep_alive_parses_like_ollama() {
        let parse = |value| KeepAlive::from_json(&value);
        assert_eq!(parse(json!(null)), Ok(None));
        assert_eq!(parse(json!(0)), Ok(Some(KeepAlive::For(Duration::ZERO))));
        assert_eq!(parse(json!("0")), Ok(Some(KeepAlive::For(Duration::ZERO))));
        assert_eq!(parse(json!(-1)), Ok(Some(KeepAlive::Forever)));
        assert_eq!(parse(json!("-1m")), Ok(Some(KeepAlive::Forever)));
        assert_eq!(
            parse(json!("1h30m")),
            Ok(Some(KeepAlive::For(Duration::from_secs(5400))))
        );
        assert!(parse(json!("soon")).is_err());
        assert!(parse(json!([1])).is_err());
    }
}
