//! Shared secrets — the admin token and the cluster's peer secret: `${VAR}` resolved
//! once when the config is read, compared in constant time, never printed.

use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// A secret value. `Debug` shows no part of it; equality is constant-time.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    /// A configured value: `${VAR}` takes it from the environment; either way it is
    /// trimmed and must not be empty.
    pub fn resolve(raw: &str) -> Result<Secret, String> {
        let raw = raw.trim();
        let value = match raw.strip_prefix("${").and_then(|r| r.strip_suffix('}')) {
            Some(var) => std::env::var(var)
                .ok()
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
                .ok_or_else(|| format!("names ${{{var}}}, which is not set or empty"))?,
            None => raw.to_string(),
        };
        Secret::new(value).ok_or_else(|| "is empty".to_string())
    }

    /// A secret read from elsewhere (a token file), trimmed; `None` when empty.
    pub fn new(value: impl Into<String>) -> Option<Secret> {
        let value = value.into();
        let trimmed = value.trim();
        (!trimmed.is_empty()).then(|| Secret(trimmed.to_string()))
    }

    /// The value, for sending it (a peer RPC's `Authorization` header).
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `given` is this secret. Both sides are hashed first so the comparison
    /// takes the same time whatever the length or content.
    pub fn matches(&self, given: &str) -> bool {
        let a = Sha256::digest(self.0.as_bytes());
        let b = Sha256::digest(given.trim().as_bytes());
        a.ct_eq(&b).into()
    }

    /// Whether an `Authorization` header value is `Bearer SECRET`.
    pub fn matches_bearer(&self, header: Option<&str>) -> bool {
        header
            .and_then(|h| {
                h.strip_prefix("Bearer ")
                    .or_else(|| h.strip_prefix("bearer "))
            })
            .is_some_and(|given| self.matches(given))
    }
}

impl PartialEq for Secret {
    fn eq(&self, other: &Secret) -> bool {
        self.matches(&other.0)
    }
}

impl Eq for Secret {}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

// Resolved while the scalar is visited, so a missing variable is reported at its line.
impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Secret, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Secret;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a secret, or ${VAR} to read it from the environment")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Secret, E> {
                Secret::resolve(s).map_err(E::custom)
            }
        }
        d.deserialize_str(V)
    }
}

#[cfg(test)]
mod tests {
    use super::Secret;

    #[test]
    fn resolves_from_the_environment() {
        std::env::set_var("CORRAL_TEST_SECRET_X", " from-env ");
        let s = Secret::resolve("${CORRAL_TEST_SECRET_X}").unwrap();
        assert_eq!(s.expose(), "from-env");
        let e = Secret::resolve("${CORRAL_TEST_SECRET_UNSET}").unwrap_err();
        assert!(
            e.contains("${CORRAL_TEST_SECRET_UNSET}, which is not set"),
            "{e}"
        );
        assert!(Secret::resolve("  ").is_err());
    }

    #[test]
    fn bearer_must_match_exactly() {
        let s = Secret::new("s3cret").unwrap();
        assert!(s.matches_bearer(Some("Bearer s3cret")));
        assert!(s.matches_bearer(Some("bearer s3cret")));
        assert!(!s.matches_bearer(Some("Bearer s3cre")));
        assert!(!s.matches_bearer(Some("Bearer s3cret2")));
        assert!(!s.matches_bearer(Some("s3cret")));
        assert!(!s.matches_bearer(None));
    }

    #[test]
    fn debug_never_shows_the_value() {
        let s = Secret::new("s3cret").unwrap();
        assert!(!format!("{s:?}").contains("s3cret"));
        assert_eq!(s, Secret::new("s3cret").unwrap());
        assert_ne!(s, Secret::new("other").unwrap());
    }
}
