//! The `clients:` section: the keys clients present as `Authorization: Bearer KEY`,
//! each with a name (its label in metrics and logs), optional limits, a priority in
//! the admission queue and an optional allow-list of models. Absent = the proxy port is
//! open, as before keys existed.
//!
//! Keys are resolved when the file is read (`${VAR}`, `key_file`) and indexed by their
//! SHA-256, so finding the key a request presents is one hash and one map lookup, never
//! a scan of string compares whose timing depends on how much of a key matched.

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;

use globset::{Glob, GlobSet, GlobSetBuilder};
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::model::ModelName;
use crate::secret::Secret;

/// Shortest key accepted: a key is a password that anyone on the network may guess at.
const MIN_KEY_LEN: usize = 8;

/// Where a key's requests wait in the admission queue relative to other keys'.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    /// Served first among waiters.
    #[default]
    Interactive,
    /// Served when no interactive request waits, or once it has waited long (aging).
    Batch,
}

impl Priority {
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Interactive => "interactive",
            Priority::Batch => "batch",
        }
    }
}

/// The configured keys, indexed by the SHA-256 of each key.
#[derive(Debug, Clone)]
pub struct ClientsConfig {
    pub keys: Vec<ClientKey>,
    by_digest: HashMap<[u8; 32], usize>,
}

impl PartialEq for ClientsConfig {
    fn eq(&self, other: &ClientsConfig) -> bool {
        self.keys == other.keys
    }
}

impl ClientsConfig {
    /// The index (in `keys`) of the key `presented` is, if any: its digest finds the
    /// candidate, and the secret itself confirms it in constant time.
    pub fn find(&self, presented: &str) -> Option<usize> {
        let i = *self.by_digest.get(&digest(presented.trim()))?;
        self.keys[i].key.matches(presented).then_some(i)
    }
}

fn digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// One client key and what it may do.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientKey {
    pub name: String,
    pub key: Secret,
    /// Requests in flight at once, queued ones included.
    pub max_concurrency: Option<usize>,
    pub requests_per_minute: Option<u32>,
    /// Prompt + completion tokens, as the answers' final chunks report them.
    pub tokens_per_minute: Option<u64>,
    pub priority: Priority,
    /// `None`: every model.
    pub models: Option<ModelGlobs>,
}

impl ClientKey {
    /// Whether this key may use `model`.
    pub fn allows(&self, model: &ModelName) -> bool {
        self.models.as_ref().is_none_or(|g| g.matches(model))
    }
}

/// A `models` allow-list: globs over normalized model names (`name:tag`, lower case).
#[derive(Clone)]
pub struct ModelGlobs {
    patterns: Vec<String>,
    set: GlobSet,
}

impl ModelGlobs {
    /// A pattern without a tag also matches the name with `:latest`, as Ollama reads
    /// `llama3` as `llama3:latest`.
    fn new(patterns: Vec<String>) -> Result<ModelGlobs, String> {
        let mut builder = GlobSetBuilder::new();
        for p in &patterns {
            let lower = p.trim().to_ascii_lowercase();
            if lower.is_empty() {
                return Err("a model pattern is empty".into());
            }
            let glob = |g: &str| Glob::new(g).map_err(|e| format!("model pattern '{p}': {e}"));
            builder.add(glob(&lower)?);
            if !lower.rsplit('/').next().unwrap_or(&lower).contains(':') {
                builder.add(glob(&format!("{lower}:latest"))?);
            }
        }
        let set = builder.build().map_err(|e| e.to_string())?;
        Ok(ModelGlobs { patterns, set })
    }

    pub fn matches(&self, model: &ModelName) -> bool {
        self.set.is_match(model.as_str())
    }

    pub fn patterns(&self) -> &[String] {
        &self.patterns
    }
}

impl PartialEq for ModelGlobs {
    fn eq(&self, other: &ModelGlobs) -> bool {
        self.patterns == other.patterns
    }
}

impl fmt::Debug for ModelGlobs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(&self.patterns).finish()
    }
}

// Cross-field checks run inside the mapping's visitor, so their errors point at the
// key's entry rather than the file's start.
impl<'de> Deserialize<'de> for ClientsConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ClientsConfig;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("the clients section (keys: [...])")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<ClientsConfig, A::Error> {
                let raw = RawClients::deserialize(de::value::MapAccessDeserializer::new(map))?;
                let by_digest = raw
                    .keys
                    .iter()
                    .enumerate()
                    .map(|(i, k)| (digest(k.key.expose()), i))
                    .collect();
                Ok(ClientsConfig {
                    keys: raw.keys,
                    by_digest,
                })
            }
        }
        d.deserialize_map(V)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawClients {
    /// An empty list is valid and lets nobody in: revoking the last key by a reload
    /// must not leave the port open (nor be refused, keeping the old keys valid).
    #[serde(deserialize_with = "unique_keys")]
    keys: Vec<ClientKey>,
}

fn unique_keys<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<ClientKey>, D::Error> {
    struct KeysVisitor;
    impl<'de> Visitor<'de> for KeysVisitor {
        type Value = Vec<ClientKey>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a list of client keys")
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(Vec::new())
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut out: Vec<ClientKey> = Vec::new();
            while let Some(k) = seq.next_element::<ClientKey>()? {
                if let Some(o) = out.iter().find(|o| o.name == k.name) {
                    return Err(de::Error::custom(format!(
                        "duplicate client name '{}'",
                        o.name
                    )));
                }
                if let Some(o) = out.iter().find(|o| o.key == k.key) {
                    return Err(de::Error::custom(format!(
                        "client '{}' has the same key as client '{}'",
                        k.name, o.name
                    )));
                }
                out.push(k);
            }
            Ok(out)
        }
    }
    d.deserialize_any(KeysVisitor)
}

impl<'de> Deserialize<'de> for ClientKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ClientKey;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a client key (name, key or key_file, limits)")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<ClientKey, A::Error> {
                let raw = RawKey::deserialize(de::value::MapAccessDeserializer::new(map))?;
                ClientKey::try_from(raw).map_err(de::Error::custom)
            }
        }
        d.deserialize_map(V)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKey {
    #[serde(deserialize_with = "client_name")]
    name: String,
    #[serde(default)]
    key: Option<Secret>,
    #[serde(default)]
    key_file: Option<PathBuf>,
    #[serde(default, deserialize_with = "some_positive_usize")]
    max_concurrency: Option<usize>,
    #[serde(default, deserialize_with = "some_positive_u32")]
    requests_per_minute: Option<u32>,
    #[serde(default, deserialize_with = "some_positive_u64")]
    tokens_per_minute: Option<u64>,
    #[serde(default)]
    priority: Priority,
    #[serde(default)]
    models: Option<Vec<String>>,
}

impl TryFrom<RawKey> for ClientKey {
    type Error = String;

    fn try_from(r: RawKey) -> Result<ClientKey, String> {
        let name = r.name;
        let key = match (r.key, r.key_file) {
            (Some(k), None) => k,
            (None, Some(path)) => {
                let text = std::fs::read_to_string(&path)
                    .map_err(|e| format!("client '{name}': key_file {}: {e}", path.display()))?;
                Secret::new(text).ok_or_else(|| {
                    format!("client '{name}': key_file {} is empty", path.display())
                })?
            }
            (Some(_), Some(_)) => {
                return Err(format!(
                    "client '{name}' has both key and key_file; use one"
                ))
            }
            (None, None) => return Err(format!("client '{name}' needs key or key_file")),
        };
        if key.len() < MIN_KEY_LEN {
            return Err(format!(
                "client '{name}': the key must be at least {MIN_KEY_LEN} characters"
            ));
        }
        let models = r
            .models
            .map(ModelGlobs::new)
            .transpose()
            .map_err(|e| format!("client '{name}': {e}"))?;
        Ok(ClientKey {
            name,
            key,
            max_concurrency: r.max_concurrency,
            requests_per_minute: r.requests_per_minute,
            tokens_per_minute: r.tokens_per_minute,
            priority: r.priority,
            models,
        })
    }
}

fn client_name<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    d.deserialize_str(super::de::StrVisitor(|n| {
        super::de::check_label_name("client", n)
    }))
}

fn some_positive_usize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<usize>, D::Error> {
    super::de::positive_usize(d).map(Some)
}

fn some_positive_u32<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    super::de::positive_u32(d).map(Some)
}

fn some_positive_u64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    super::de::positive_u64(d).map(Some)
}

#[cfg(test)]
mod tests {
    use crate::config::Config;
    use crate::model::ModelName;

    use super::Priority;

    const OK: &str = "clients:\n  keys:\n    - name: team-a\n      key: sk-team-a-0001\n      max_concurrency: 2\n      requests_per_minute: 60\n      tokens_per_minute: 1000\n      models: ['llama3*', 'phi3']\n    - name: batch\n      key: sk-batch-00001\n      priority: batch\n";

    #[test]
    fn parses_keys_and_finds_them_by_value() {
        let c = Config::parse(OK, "c.yaml").unwrap().clients.unwrap();
        assert_eq!(c.keys.len(), 2);
        assert_eq!(c.find("sk-team-a-0001"), Some(0));
        assert_eq!(c.find("sk-batch-00001"), Some(1));
        assert_eq!(c.find("sk-team-a-000"), None);
        assert_eq!(c.find(""), None);
        let a = &c.keys[0];
        assert_eq!(
            (a.max_concurrency, a.requests_per_minute),
            (Some(2), Some(60))
        );
        assert_eq!(a.priority, Priority::Interactive);
        assert_eq!(c.keys[1].priority, Priority::Batch);
        assert!(
            !format!("{c:?}").contains("sk-team-a"),
            "keys never printed"
        );
    }

    #[test]
    fn model_globs_read_names_as_ollama_does() {
        let c = Config::parse(OK, "c.yaml").unwrap().clients.unwrap();
        let a = &c.keys[0];
        for ok in ["llama3", "llama3:8b", "llama3.1:70b", "Phi3", "phi3:latest"] {
            assert!(a.allows(&ModelName::new(ok)), "{ok}");
        }
        for no in ["phi3:mini", "mistral", "codellama"] {
            assert!(!a.allows(&ModelName::new(no)), "{no}");
        }
        assert!(c.keys[1].allows(&ModelName::new("anything")));
    }

    #[test]
    fn errors_point_at_the_entry() {
        let e = |t: &str| Config::parse(t, "c.yaml").unwrap_err().to_string();
        let both = OK.replace(
            "key: sk-batch-00001",
            "key: sk-batch-00001\n      key_file: /x",
        );
        let msg = e(&both);
        assert!(msg.starts_with("c.yaml:9:"), "{msg}");
        assert!(msg.contains("both key and key_file"), "{msg}");
        let none = OK.replace("      key: sk-batch-00001\n", "");
        assert!(e(&none).contains("needs key or key_file"));
        let dup = OK.replace("name: batch", "name: team-a");
        let msg = e(&dup);
        assert!(msg.contains("duplicate client name 'team-a'"), "{msg}");
        let same = OK.replace("sk-batch-00001", "sk-team-a-0001");
        assert!(e(&same).contains("same key as client 'team-a'"));
        let zero = OK.replace("max_concurrency: 2", "max_concurrency: 0");
        let msg = e(&zero);
        assert!(msg.starts_with("c.yaml:5:"), "{msg}");
        let short = OK.replace("sk-batch-00001", "short");
        assert!(e(&short).contains("at least 8 characters"));
        let glob = OK.replace("'phi3'", "'phi[3'");
        assert!(e(&glob).contains("model pattern 'phi[3'"), "{}", e(&glob));
        let prio = OK.replace("priority: batch", "priority: urgent");
        assert!(e(&prio).starts_with("c.yaml:11:"), "{}", e(&prio));
        let name = OK.replace("name: batch", "name: 'b a d'");
        assert!(e(&name).contains("invalid client name"));
    }

    #[test]
    fn key_file_and_environment() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("k");
        std::fs::write(&f, "  from-a-file-123\n").unwrap();
        std::env::set_var("CORRAL_TEST_CLIENT_KEY", "from-the-env-123");
        let text = format!(
            "clients:\n  keys:\n    - {{name: f, key_file: '{}'}}\n    - {{name: e, key: '${{CORRAL_TEST_CLIENT_KEY}}'}}\n",
            f.display()
        );
        let c = Config::parse(&text, "c.yaml").unwrap().clients.unwrap();
        assert_eq!(c.find("from-a-file-123"), Some(0));
        assert_eq!(c.find("from-the-env-123"), Some(1));
        let missing = text.replace("/k'", "/gone'");
        let msg = Config::parse(&missing, "c.yaml").unwrap_err().to_string();
        assert!(
            msg.starts_with("c.yaml:3:") && msg.contains("key_file"),
            "{msg}"
        );
        // No keys at all: nobody gets in (not the port left open).
        let none = Config::parse("clients: {keys: []}", "c.yaml").unwrap();
        assert!(none.clients.unwrap().keys.is_empty());
        assert!(Config::parse("", "c.yaml").unwrap().clients.is_none());
    }
}
