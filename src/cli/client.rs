//! The admin API over HTTP, with errors turned into one line an operator can act on.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::Value;

use super::ClientOpts;
use crate::bounded_body::root_cause;

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("cannot reach the admin API at {url}: {why} (is corral running? see --api-url)")]
    Unreachable { url: String, why: String },
    #[error("unauthorized: missing or wrong admin token (--token or CORRAL_ADMIN_TOKEN)")]
    Unauthorized,
    /// The API's own error message (unknown backend, conflict, bad request ...).
    #[error("{0}")]
    Api(String),
    #[error("unexpected answer from the admin API: {0}")]
    Unexpected(String),
    /// An error answer without the admin API's `{"error","code"}` shape: most likely
    /// the Ollama port (corral's proxy, or an Ollama) rather than `admin.listen`.
    #[error(
        "{url} is not corral's admin API ({method} {path} answered {status}: {body}); \
         point --api-url at admin.listen (default http://127.0.0.1:11435), not the Ollama port"
    )]
    NotAdmin {
        url: String,
        method: Method,
        path: String,
        status: StatusCode,
        body: String,
    },
}

pub struct AdminClient {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl AdminClient {
    pub fn new(opts: &ClientOpts) -> Result<AdminClient, CliError> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| CliError::Unexpected(e.to_string()))?;
        let base = opts.api_url.trim_end_matches('/');
        let base = if base.contains("://") {
            base.to_string()
        } else {
            format!("http://{base}")
        };
        Ok(AdminClient {
            http,
            base,
            token: opts.token.clone().filter(|t| !t.is_empty()),
        })
    }

    pub async fn get(&self, path: &str) -> Result<Value, CliError> {
        self.call(Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: Option<Value>) -> Result<Value, CliError> {
        self.call(Method::POST, path, body).await
    }

    pub async fn delete(&self, path: &str) -> Result<Value, CliError> {
        self.call(Method::DELETE, path, None).await
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, CliError> {
        let url = format!("{}{path}", self.base);
        let mut req = self.http.request(method.clone(), &url);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.map_err(|e| CliError::Unreachable {
            url: self.base.clone(),
            why: root_cause(&e),
        })?;
        let status = resp.status();
        let text = resp.text().await.map_err(|e| CliError::Unreachable {
            url: self.base.clone(),
            why: root_cause(&e),
        })?;
        if status == StatusCode::UNAUTHORIZED {
            return Err(CliError::Unauthorized);
        }
        let value: Option<Value> = serde_json::from_str(&text).ok();
        if !status.is_success() {
            let api_error = value
                .as_ref()
                .filter(|v| v.get("code").is_some())
                .and_then(|v| v["error"].as_str());
            return Err(match api_error {
                Some(msg) => CliError::Api(msg.to_string()),
                None => CliError::NotAdmin {
                    url: self.base.clone(),
                    method,
                    path: path.to_string(),
                    status,
                    body: snippet(&text),
                },
            });
        }
        value.ok_or_else(|| CliError::Unexpected(format!("{path} did not answer JSON")))
    }
}

/// The start of a body, on one line, for an error message.
fn snippet(text: &str) -> String {
    let one_line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match one_line.char_indices().nth(80) {
        Some((cut, _)) => format!("{}…", &one_line[..cut]),
        None => one_line,
    }
}
