//! Configuration errors, rendered as `PATH:line:col: message` like a compiler would.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read the config file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{origin}:{line}:{column}: {message}")]
    Invalid {
        origin: String,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{origin}: {message}")]
    InvalidNoLocation { origin: String, message: String },
}

impl ConfigError {
    pub(super) fn from_yaml(origin: &str, e: serde_norway::Error) -> ConfigError {
        let text = e.to_string();
        match e.location() {
            Some(loc) => {
                // serde_norway appends " at line L column C"; we print the location first.
                let suffix = format!(" at line {} column {}", loc.line(), loc.column());
                let message = text
                    .strip_suffix(&suffix)
                    .map(str::to_string)
                    .unwrap_or_else(|| text.replace(&suffix, ""));
                ConfigError::Invalid {
                    origin: origin.to_string(),
                    line: loc.line(),
                    column: loc.column(),
                    message,
                }
            }
            None => ConfigError::InvalidNoLocation {
                origin: origin.to_string(),
                message: text,
            },
        }
    }
}
