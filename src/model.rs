//! Model names as routing keys: Ollama treats `llama3` and `llama3:latest` as one model
//! and compares names case-insensitively.

use std::fmt;

/// A normalized model name (`name:tag`, lower case).
/// A set of model names. Routing asks "does this box list the model?" of every
/// candidate on every request: xxh3 hashes a name several times faster than the
/// default SipHash, and the names come from the fleet's own `/api/tags`.
pub type ModelSet = std::collections::HashSet<ModelName, xxhash_rust::xxh3::Xxh3Builder>;

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ModelName(String);

impl ModelName {
    pub fn new(raw: &str) -> ModelName {
        let raw = raw.trim();
        // The tag belongs to the last path segment: `registry:5000/ns/model` has no tag.
        let tagged = raw.rsplit('/').next().unwrap_or(raw).contains(':');
        // One allocation: this runs for every request that names a model.
        let mut name = String::with_capacity(raw.len() + if tagged { 0 } else { 7 });
        name.push_str(raw);
        name.make_ascii_lowercase();
        if !tagged {
            name.push_str(":latest");
        }
        ModelName(name)
    }

    /// `new`, except that a blank name is no model at all.
    pub fn parse(raw: &str) -> Option<ModelName> {
        (!raw.trim().is_empty()).then(|| ModelName::new(raw))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The part after the last `:` of the last segment (`latest`, `7b`, ...).
    pub fn tag(&self) -> &str {
        self.0.rsplit_once(':').map_or("latest", |(_, tag)| tag)
    }

    /// The namespace segment, `library` for official models (`/v1/models`' `owned_by`).
    pub fn namespace(&self) -> &str {
        let without_tag = self.0.rsplit_once(':').map_or(self.0.as_str(), |(n, _)| n);
        let mut segments = without_tag.rsplit('/');
        segments.next();
        segments.next().unwrap_or("library")
    }
}

impl fmt::Display for ModelName {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::ModelName;

    #[test]
    fn latest_is_implied() {
        assert_eq!(ModelName::new("llama3"), ModelName::new("llama3:latest"));
        assert_eq!(ModelName::new("Llama3:8B").as_str(), "llama3:8b");
        assert_eq!(
            ModelName::new("registry:5000/ns/model").as_str(),
            "registry:5000/ns/model:latest"
        );
        assert_eq!(
            ModelName::new("hf.co/u/r:Q4_K_M").as_str(),
            "hf.co/u/r:q4_k_m"
        );
        assert_eq!(ModelName::parse("  "), None);
        assert_eq!(
            ModelName::parse("Qwen2.5:7B")
                .map(|m| m.tag().to_string())
                .as_deref(),
            Some("7b")
        );
        assert_eq!(ModelName::new("llama3").namespace(), "library");
        assert_eq!(
            ModelName::new("hf.co/bartowski/x:q4").namespace(),
            "bartowski"
        );
    }
}
