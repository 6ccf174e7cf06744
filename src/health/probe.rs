//! One probe of one backend: is it answering, what version, which models are on disk
//! and which are loaded.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;

use crate::config::BackendUrl;
use crate::model::ModelName;
use crate::pool::Inventory;

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("cannot resolve {0}: {1}")]
    Resolve(String, String),
    #[error("{path}: {}", chain(.source))]
    Http {
        path: &'static str,
        source: reqwest::Error,
    },
    #[error("{path}: status {status}")]
    Status { path: &'static str, status: u16 },
    #[error("{path}: unexpected body: {why}")]
    Body { path: &'static str, why: String },
}

/// reqwest's Display stops at "error sending request"; the cause is in the chain.
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        next = cause.source();
    }
    out
}

pub struct Probe {
    pub addr: SocketAddr,
    pub inventory: Inventory,
}

pub async fn resolve(url: &BackendUrl) -> Result<SocketAddr, ProbeError> {
    let found = tokio::net::lookup_host((url.host.as_str(), url.port))
        .await
        .map_err(|e| ProbeError::Resolve(url.authority.clone(), e.to_string()))?
        .next();
    found.ok_or_else(|| ProbeError::Resolve(url.authority.clone(), "no address".into()))
}

async fn get_json(
    client: &reqwest::Client,
    addr: SocketAddr,
    url: &BackendUrl,
    path: &'static str,
    timeout: Duration,
) -> Result<Value, ProbeError> {
    // Connect to the resolved address but present the backend's own Host.
    let resp = client
        .get(format!("http://{addr}{path}"))
        .header("Host", url.authority.as_str())
        .timeout(timeout)
        .send()
        .await
        .map_err(|source| ProbeError::Http { path, source })?;
    let status = resp.status().as_u16();
    if status != 200 {
        return Err(ProbeError::Status { path, status });
    }
    resp.json().await.map_err(|e| ProbeError::Body {
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

fn names(entries: &[Value]) -> std::collections::HashSet<ModelName> {
    entries
        .iter()
        .filter_map(crate::proxy::entry_name)
        .map(ModelName::new)
        .collect()
}

/// Probes `/api/version`, `/api/tags` and `/api/ps` at once; all three must answer.
pub async fn probe(
    client: &reqwest::Client,
    url: &BackendUrl,
    timeout: Duration,
) -> Result<Probe, ProbeError> {
    let addr = resolve(url).await?;
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
