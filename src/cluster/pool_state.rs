//! The replicated part of the pool and the pure function that applies commands to it.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::types::{Applied, Command};
use crate::config::BackendConfig;

/// A backend added at run time through the cluster (admin API or self-registration),
/// with its lease if it has one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DynamicBackend {
    #[serde(flatten)]
    pub backend: BackendConfig,
    /// Lease end (Unix ms); `None` = stays until removed.
    #[serde(default)]
    pub expires_at_ms: Option<u64>,
    /// Lease length, for heartbeats that give none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_ms: Option<u64>,
}

/// The replicated pool: dynamic backends by name and drain flags (which may also name
/// backends from the YAML file).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolState {
    pub backends: BTreeMap<String, DynamicBackend>,
    #[serde(default)]
    pub drained: BTreeSet<String>,
}

impl PoolState {
    /// Applies one command. Deterministic: the same commands in the same order give
    /// the same state on every replica.
    pub fn apply(&mut self, cmd: &Command) -> Applied {
        match cmd {
            Command::UpsertBackend(new) => {
                let old = self.backends.insert(new.backend.name.clone(), new.clone());
                Applied {
                    existed: old.is_some(),
                    changed: old.as_ref() != Some(new),
                    expired: Vec::new(),
                }
            }
            Command::RemoveBackend { name } => {
                let existed = self.backends.remove(name).is_some();
                let undrained = self.drained.remove(name);
                Applied {
                    existed,
                    changed: existed || undrained,
                    expired: Vec::new(),
                }
            }
            Command::Drain { name } => Applied {
                existed: self.backends.contains_key(name),
                changed: self.drained.insert(name.clone()),
                expired: Vec::new(),
            },
            Command::Undrain { name } => Applied {
                existed: self.backends.contains_key(name),
                changed: self.drained.remove(name),
                expired: Vec::new(),
            },
            Command::RenewLease {
                name,
                expires_at_ms,
            } => match self.backends.get_mut(name) {
                // Only a leased backend can be renewed; a permanent one stays permanent.
                Some(b) if b.expires_at_ms.is_some() => {
                    let changed = b.expires_at_ms != Some(*expires_at_ms);
                    b.expires_at_ms = Some(*expires_at_ms);
                    Applied {
                        existed: true,
                        changed,
                        expired: Vec::new(),
                    }
                }
                Some(_) => Applied {
                    existed: true,
                    changed: false,
                    expired: Vec::new(),
                },
                None => Applied::default(),
            },
            Command::ExpireLeases { now_ms } => {
                let expired: Vec<String> = self
                    .backends
                    .values()
                    .filter(|b| b.expires_at_ms.is_some_and(|t| t <= *now_ms))
                    .map(|b| b.backend.name.clone())
                    .collect();
                for name in &expired {
                    self.backends.remove(name);
                    self.drained.remove(name);
                }
                Applied {
                    existed: !expired.is_empty(),
                    changed: !expired.is_empty(),
                    expired,
                }
            }
        }
    }

    /// The earliest lease end, if any backend holds a lease.
    pub fn next_expiry(&self) -> Option<u64> {
        self.backends.values().filter_map(|b| b.expires_at_ms).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upsert(name: &str, lease: Option<u64>) -> Command {
        let backend =
            serde_json::json!({"name": name, "url": "http://127.0.0.1:1", "max_concurrency": 2});
        Command::UpsertBackend(DynamicBackend {
            backend: serde_json::from_value(backend).unwrap(),
            expires_at_ms: lease,
            ttl_ms: lease.map(|_| 100),
        })
    }

    #[test]
    fn the_log_format_is_flat() {
        // Entries already in a Raft log were written with the fields at the top level.
        let stored = r#"{"op":"upsert_backend","name":"a","url":"http://h:1","weight":2,"max_concurrency":3,"expires_at_ms":null}"#;
        let c: Command = serde_json::from_str(stored).unwrap();
        let Command::UpsertBackend(b) = &c else {
            panic!("{c:?}")
        };
        assert_eq!(
            (b.backend.weight, b.backend.url.authority.as_str()),
            (2, "h:1")
        );
        let again: serde_json::Value = serde_json::to_value(&c).unwrap();
        assert_eq!(
            again,
            serde_json::from_str::<serde_json::Value>(stored).unwrap()
        );
        let bad = stored.replace("\"a\"", "\"a b\"");
        assert!(serde_json::from_str::<Command>(&bad).is_err());
    }

    #[test]
    fn commands_are_idempotent() {
        let mut s = PoolState::default();
        let cmds = [
            upsert("a", None),
            upsert("b", Some(100)),
            Command::Drain { name: "a".into() },
            Command::RenewLease {
                name: "b".into(),
                expires_at_ms: 200,
            },
            Command::RemoveBackend { name: "x".into() },
        ];
        for c in &cmds {
            s.apply(c);
            let once = s.clone();
            // A retried write (its answer lost) applies the same command again.
            let r = s.apply(c);
            assert!(!r.changed, "{c:?} changed state the second time");
            assert_eq!(s, once);
        }
        assert_eq!(s.backends["b"].expires_at_ms, Some(200));
        assert!(s.drained.contains("a"));
    }

    #[test]
    fn leases_expire_by_the_time_in_the_command() {
        let mut s = PoolState::default();
        s.apply(&upsert("perm", None));
        s.apply(&upsert("lease", Some(1_000)));
        assert_eq!(s.next_expiry(), Some(1_000));
        let r = s.apply(&Command::ExpireLeases { now_ms: 999 });
        assert!(!r.changed);
        let r = s.apply(&Command::ExpireLeases { now_ms: 1_000 });
        assert_eq!(r.expired, vec!["lease".to_string()]);
        assert_eq!(s.backends.keys().collect::<Vec<_>>(), vec!["perm"]);
        // Renewing a permanent backend does not give it a lease.
        s.apply(&Command::RenewLease {
            name: "perm".into(),
            expires_at_ms: 5,
        });
        assert_eq!(s.backends["perm"].expires_at_ms, None);
    }
}
