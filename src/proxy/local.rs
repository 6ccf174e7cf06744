//! What corral answers for the fleet as one: `/`, version, the merged model lists.

use std::collections::HashSet;
use std::time::UNIX_EPOCH;

use bytes::Bytes;
use pingora::proxy::Session;
use pingora::Result;
use serde_json::{json, Value};

use crate::config::ClientKey;
use crate::model::ModelName;
use crate::pool::RoutingTable;

use super::endpoint::Endpoint;
use super::{respond, CorralProxy};

/// The oldest version among healthy backends: a client checking for a feature must
/// not be promised one that some box lacks.
pub(super) fn fleet_version(table: &RoutingTable) -> String {
    table
        .backends
        .iter()
        .filter(|b| b.is_available())
        .filter_map(|b| b.state.inventory.load().version.clone())
        .min_by(|a, b| version_key(a).cmp(&version_key(b)))
        .unwrap_or_else(|| "0.0.0".to_string())
}

fn version_key(v: &str) -> Vec<u64> {
    v.split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap_or(0))
        .collect()
}

/// The union of the healthy backends' `/api/tags` (or `/api/ps`) entries, one per model.
pub(super) fn merged_models(table: &RoutingTable, resident: bool) -> Vec<Value> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for b in table.backends.iter().filter(|b| b.is_available()) {
        let inv = b.state.inventory.load();
        let entries = if resident {
            &inv.ps_json
        } else {
            &inv.tags_json
        };
        for entry in entries {
            let Some(name) = entry_name(entry) else {
                continue;
            };
            if seen.insert(ModelName::new(name)) {
                out.push(entry.clone());
            }
        }
    }
    out
}

pub fn entry_name(entry: &Value) -> Option<&str> {
    entry
        .get("name")
        .or_else(|| entry.get("model"))
        .and_then(Value::as_str)
}

pub(super) fn openai_model(entry: &Value) -> Option<Value> {
    let name = entry_name(entry)?;
    let created = entry
        .get("modified_at")
        .and_then(Value::as_str)
        .and_then(|s| humantime::parse_rfc3339_weak(s).ok())
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs());
    Some(json!({"id": name, "object": "model", "created": created, "owned_by": "library"}))
}

/// `/v1/models`: the models `allowed` passes.
pub(super) fn openai_models(table: &RoutingTable, allowed: impl Fn(&Value) -> bool) -> Value {
    let data: Vec<Value> = merged_models(table, false)
        .iter()
        .filter(|e| allowed(e))
        .filter_map(openai_model)
        .collect();
    json!({"object": "list", "data": data})
}

impl CorralProxy {
    /// Answers the fleet-wide endpoints from the probes' view of the backends.
    /// With a client key that has a `models` allow-list, the lists show only what
    /// the key may use.
    pub(super) async fn answer_locally(
        &self,
        session: &mut Session,
        endpoint: &Endpoint,
        only: Option<&ClientKey>,
    ) -> Result<()> {
        let table = self.pool.snapshot();
        let allowed = |e: &Value| {
            only.is_none_or(|k| entry_name(e).is_some_and(|n| k.allows(&ModelName::new(n))))
        };
        match endpoint {
            Endpoint::Root => {
                respond::write_response(
                    session,
                    200,
                    "text/plain; charset=utf-8",
                    Bytes::from_static(b"Ollama is running"),
                    &[],
                )
                .await
            }
            Endpoint::Version => {
                let version = fleet_version(&table);
                respond::write_json(session, 200, &json!({ "version": version })).await
            }
            Endpoint::Tags => {
                let mut models = merged_models(&table, false);
                models.retain(allowed);
                respond::write_json(session, 200, &json!({ "models": models })).await
            }
            Endpoint::Ps => {
                let mut models = merged_models(&table, true);
                models.retain(allowed);
                respond::write_json(session, 200, &json!({ "models": models })).await
            }
            Endpoint::OpenAiModels => {
                respond::write_json(session, 200, &openai_models(&table, allowed)).await
            }
            Endpoint::OpenAiModel(name) => {
                let wanted = ModelName::new(name);
                let found = merged_models(&table, false)
                    .into_iter()
                    .find(|e| entry_name(e).is_some_and(|n| ModelName::new(n) == wanted))
                    .filter(allowed);
                match found.as_ref().and_then(openai_model) {
                    Some(m) => respond::write_json(session, 200, &m).await,
                    None => {
                        let msg = format!("model '{name}' not found");
                        respond::write_error(session, true, 404, &msg, 0).await
                    }
                }
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_order_is_numeric() {
        assert!(version_key("0.9.10") > version_key("0.9.2"));
        assert!(version_key("0.12.0-rc1") > version_key("0.9.2"));
    }

    #[test]
    fn openai_model_shape() {
        let e = json!({"name": "llama3:latest", "modified_at": "2024-05-01T10:00:00Z"});
        let m = openai_model(&e).unwrap();
        assert_eq!(m["id"], "llama3:latest");
        assert_eq!(m["created"], 1714557600);
    }
}
