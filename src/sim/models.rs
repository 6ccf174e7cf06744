//! What the simulated box has on disk: the catalog behind `/api/tags`, the uploaded
//! blobs behind `/api/blobs`, and the fake metadata (digest, size, family, parameter size) that makes the listings look real.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::SystemTime;

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::model::ModelName;

/// The `details` object Ollama attaches to every model listing.
#[derive(Debug, Clone, Serialize)]
pub(super) struct ModelDetails {
    pub parent_model: String,
    pub format: &'static str,
    pub family: String,
    pub families: Vec<String>,
    pub parameter_size: String,
    pub quantization_level: &'static str,
}

/// One model on disk.
#[derive(Debug, Clone)]
pub(super) struct ModelEntry {
    pub name: ModelName,
    /// Manifest digest, hex without the `sha256:` prefix (as `/api/tags` prints it).
    pub digest: String,
    pub size: u64,
    pub modified_at: SystemTime,
    pub details: ModelDetails,
    pub embedding_only: bool,
}

impl ModelEntry {
    /// Invents plausible metadata from the name alone, so `qwen2.5:7b` looks like a 7B qwen2.
    pub(super) fn fabricate(name: ModelName) -> ModelEntry {
        let embedding_only = looks_like_embedding(&name);
        let family = guess_family(&name, embedding_only);
        let parameters_billions = parameter_count_from_tag(name.tag())
            .unwrap_or(if embedding_only { 0.137 } else { 8.0 });
        let digest = hex_sha256(name.as_str().as_bytes());
        ModelEntry {
            // Q4_0 stores about 4.6 bits per parameter.
            size: (parameters_billions * 1e9 * 4.6 / 8.0).round() as u64,
            digest,
            modified_at: SystemTime::now(),
            details: ModelDetails {
                parent_model: String::new(),
                format: "gguf",
                families: vec![family.clone()],
                family,
                parameter_size: format_parameter_size(parameters_billions),
                quantization_level: if embedding_only { "F16" } else { "Q4_0" },
            },
            embedding_only,
            name,
        }
    }

    pub(super) fn parameter_count(&self) -> u64 {
        parameter_count_from_tag(&self.details.parameter_size.to_ascii_lowercase())
            .map_or(0, |billions| (billions * 1e9) as u64)
    }

    pub(super) fn context_length(&self) -> u64 {
        if self.embedding_only {
            2048
        } else {
            131_072
        }
    }
}

/// Whether the name reads like an embedding model's (`nomic-embed-text`, `bge-m3`).
fn looks_like_embedding(name: &ModelName) -> bool {
    ["embed", "minilm", "bge-", "mxbai"]
        .iter()
        .any(|marker| name.as_str().contains(marker))
}

fn guess_family(name: &ModelName, embedding_only: bool) -> String {
    if embedding_only {
        return "bert".to_string();
    }
    const FAMILIES: &[(&str, &str)] = &[
        ("qwen", "qwen2"),
        ("gemma", "gemma3"),
        ("phi", "phi3"),
        ("mistral", "llama"),
        ("deepseek", "qwen2"),
    ];
    FAMILIES
        .iter()
        .find(|(marker, _)| name.as_str().contains(marker))
        .map_or("llama", |(_, family)| family)
        .to_string()
}

/// Reads `7b`, `0.5b`, `135m`, `8x7b` style tags as a parameter count in billions.
fn parameter_count_from_tag(tag: &str) -> Option<f64> {
    let first = tag.split(['-', '_']).next()?;
    let (experts, size) = match first.split_once('x') {
        Some((experts, size)) => (experts.parse::<f64>().ok()?, size),
        None => (1.0, first),
    };
    if let Some(billions) = size.strip_suffix('b') {
        return billions.parse::<f64>().ok().map(|b| b * experts);
    }
    if let Some(millions) = size.strip_suffix('m') {
        return millions.parse::<f64>().ok().map(|m| m * experts / 1000.0);
    }
    None
}

fn format_parameter_size(billions: f64) -> String {
    if billions < 1.0 {
        format!("{}M", (billions * 1000.0).round())
    } else if billions.fract() == 0.0 {
        format!("{billions}B")
    } else {
        format!("{billions:.1}B")
    }
}

pub(super) fn hex_sha256(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

pub(super) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Models and blobs on the simulated disk.
#[derive(Default)]
pub(super) struct Catalog {
    models: Mutex<BTreeMap<ModelName, ModelEntry>>,
    /// Blob digests in `sha256:<hex>` form.
    blobs: Mutex<HashSet<String>>,
}

impl Catalog {
    pub(super) fn new(names: impl IntoIterator<Item = ModelName>) -> Catalog {
        let catalog = Catalog::default();
        for name in names {
            catalog.insert(ModelEntry::fabricate(name));
        }
        catalog
    }

    fn models(&self) -> MutexGuard<'_, BTreeMap<ModelName, ModelEntry>> {
        self.models.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn blobs(&self) -> MutexGuard<'_, HashSet<String>> {
        self.blobs.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn get(&self, name: &ModelName) -> Option<ModelEntry> {
        self.models().get(name).cloned()
    }

    pub(super) fn list(&self) -> Vec<ModelEntry> {
        self.models().values().cloned().collect()
    }

    pub(super) fn insert(&self, entry: ModelEntry) {
        self.models().insert(entry.name.clone(), entry);
    }

    pub(super) fn remove(&self, name: &ModelName) -> bool {
        self.models().remove(name).is_some()
    }

    /// Copies `source` to `destination`; false when the source does not exist.
    pub(super) fn copy(&self, source: &ModelName, destination: ModelName) -> bool {
        let mut models = self.models();
        let Some(mut entry) = models.get(source).cloned() else {
            return false;
        };
        entry.name = destination.clone();
        entry.modified_at = SystemTime::now();
        models.insert(destination, entry);
        true
    }

    pub(super) fn has_blob(&self, digest: &str) -> bool {
        self.blobs().contains(digest)
    }

    pub(super) fn add_blob(&self, digest: String) {
        self.blobs().insert(digest);
    }
}

/// Checks the `sha256:<64 hex>` form Ollama requires of blob digests.
pub(super) fn is_valid_digest(digest: &str) -> bool {
    digest.strip_prefix("sha256:").is_some_and(|hex| {
        hex.len() == 64
            && hex
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(raw: &str) -> ModelName {
        ModelName::parse(raw).expect("valid name")
    }

    #[test]
    fn metadata_follows_the_tag() {
        let qwen = ModelEntry::fabricate(name("qwen2.5:7b"));
        assert_eq!(qwen.details.family, "qwen2");
        assert_eq!(qwen.details.parameter_size, "7B");
        assert_eq!(qwen.digest.len(), 64);
        let small = ModelEntry::fabricate(name("qwen2.5:0.5b"));
        assert_eq!(small.details.parameter_size, "500M");
        let embed = ModelEntry::fabricate(name("nomic-embed-text"));
        assert!(embed.embedding_only);
    }

    #[test]
    fn digests_must_be_lowercase_sha256() {
        let good = format!("sha256:{}", hex_sha256(b"x"));
        assert!(is_valid_digest(&good));
        assert!(!is_valid_digest(&good.to_uppercase()));
        assert!(!is_valid_digest("sha256:abc"));
    }
}
