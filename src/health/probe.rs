//! One probe of one backend: is it answering, what version, which models are on disk
//! and which are loaded. Every step is bounded: the lookup and each request by the
//! probe timeout, each body by `MAX_PROBE_BODY`.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;

use crate::bounded_body::{read_capped, root_cause, BodyError, Size};
use crate::config::BackendUrl;
use crate::model::{ModelName, ModelSet};
use crate::pool::Inventory;

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("cannot resolve {0}: {1}")]
    Resolve(String, String),
    #[error("{path}: {}", root_cause(.source))]
    Http {
        path: &'static str,
        source: reqwest::Error,
    },
    #[error("{path}: status {status}")]
    Status { path: &'static str, status: u16 },
    #[error("{path}: body larger than {limit}")]
    TooLarge { path: &'static str, limit: Size },
    #[error("{path}: unexpected body: {why}")]
    Body { path: &'static str, why: String },
    #[error("probe unanswered after {}", humantime::format_duration(*.0))]
    Deadline(Duration),
}

/// A real `/api/tags` is a few hundred bytes per model; this fits thousands of models
/// and keeps a box listing 100,000 (or streaming forever) from costing memory.
pub(crate) const MAX_PROBE_BODY: usize = 4 * 1024 * 1024;

pub struct Probe {
    pub addr: SocketAddr,
    pub inventory: Inventory,
}

/// The backend's address; a lookup that does not answer within `timeout` fails (the
/// resolver thread is left to finish on its own: getaddrinfo cannot be cancelled).
pub(crate) async fn resolve(url: &BackendUrl, timeout: Duration) -> Result<SocketAddr, ProbeError> {
    let fail = |why: String| ProbeError::Resolve(url.authority.clone(), why);
    let lookup = tokio::net::lookup_host((url.host.as_str(), url.port));
    let within = humantime::format_duration(timeout);
    let found = tokio::time::timeout(timeout, lookup)
        .await
        .map_err(|_| fail(format!("no answer within {within}")))?
        .map_err(|e| fail(e.to_string()))?
        .next();
    found.ok_or_else(|| fail("no address".into()))
}

async fn get_json(
    client: &reqwest::Client,
    addr: SocketAddr,
    url: &BackendUrl,
    path: &'static str,
    timeout: Duration,
) -> Result<Value, ProbeError> {
    // Connect to the resolved address (plain HTTP) but present the backend's own Host.
    let resp = client
        .get(url.request_url(addr, path))
        .header("Host", url.authority.as_str())
        .timeout(timeout)
        .send()
        .await
        .map_err(|source| ProbeError::Http { path, source })?;
    let status = resp.status().as_u16();
    if status != 200 {
        return Err(ProbeError::Status { path, status });
    }
    let body = read_capped(resp, MAX_PROBE_BODY, None)
        .await
        .map_err(|e| match e {
            BodyError::TooLarge(limit) => ProbeError::TooLarge { path, limit },
            BodyError::Http(source) => ProbeError::Http { path, source },
            stalled @ BodyError::Stalled(_) => ProbeError::Body {
                path,
                why: stalled.to_string(),
            },
        })?;
    serde_json::from_slice(&body).map_err(|e| ProbeError::Body {
        path,
        why: e.to_string(),
    })
}

fn model_entries(v: &Value, path: &'static str) -> Result<Vec<Value>, ProbeError> {
    v.get("models")
        .and_then(Value::as_array)
        .cloned()
        .ok_or_else(|| ProbeError::Body {
            path,
            why: "no \"models\" list".into(),
        })
}

fn names(entries: &[Value]) -> ModelSet {
    entries
        .iter()
        .filter_map(crate::proxy::entry_name)
        .map(ModelName::new)
        .collect()
}

/// Probes `/api/version`, `/api/tags` and `/api/ps` at once; all three must answer.
/// The lookup and the requests (bodies included) each get `timeout`, so a probe takes
/// at most twice that; the deadline around the whole is a backstop, so that no step
/// can hold the probe round however the box or its DNS behaves.
pub async fn probe(
    client: &reqwest::Client,
    url: &BackendUrl,
    timeout: Duration,
) -> Result<Probe, ProbeError> {
    let deadline = 3 * timeout;
    tokio::time::timeout(deadline, probe_unbounded(client, url, timeout))
        .await
        .map_err(|_| ProbeError::Deadline(deadline))?
}

async fn probe_unbounded(
    client: &reqwest::Client,
    url: &BackendUrl,
    timeout: Duration,
) -> Result<Probe, ProbeError> {
    let addr = resolve(url, timeout).await?;
    let (version, tags, ps) = tokio::join!(
        get_json(client, addr, url, "/api/version", timeout),
        get_json(client, addr, url, "/api/tags", timeout),
        get_json(client, addr, url, "/api/ps", timeout),
    );
    let version = version?
        .get("version")
        .and_then(Value::as_str)
        .map(str::to_string);
    let tags_json = model_entries(&tags?, "/api/tags")?;
    let ps_json = model_entries(&ps?, "/api/ps")?;
    Ok(Probe {
        addr,
        inventory: Inventory {
            version,
            models: names(&tags_json),
            resident: names(&ps_json),
            tags_json,
            ps_json,
        },
    })
}
