//! Client keys on the proxy port: who the request is (401 without a valid key), whether
//! its key may use the model (403) and is within its limits (429 + `Retry-After`), each
//! refusal in the endpoint family's error shape; and, when the request ends, what it
//! used. Without a `clients:` section nothing here applies. The key itself is never
//! logged and never forwarded to a backend.

use std::time::Instant;

use pingora::proxy::Session;
use pingora::Result;

use crate::clients::{retry_after_secs, Refused};

use super::endpoint::Endpoint;
use super::{respond, CorralProxy, RequestCtx};

/// Fleet-answered routes a client without a key may still call: the health checks of
/// the `ollama` CLI and of load balancers. Model lists need a key.
fn open_without_key(endpoint: &Endpoint) -> bool {
    matches!(endpoint, Endpoint::Root | Endpoint::Version)
}

impl CorralProxy {
    /// Finds the request's client key. Returns `true` when the request was answered
    /// (401) and must go no further.
    pub(super) async fn authenticate(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<bool> {
        let Some(clients) = self.pool.load().clients.clone() else {
            return Ok(false);
        };
        let header = session
            .req_header()
            .headers
            .get(http::header::AUTHORIZATION)
            .map(|v| v.as_bytes());
        let missing = header.is_none();
        ctx.client = clients.authenticate(header);
        if ctx.client.is_some() || open_without_key(&ctx.endpoint) {
            return Ok(false);
        }
        let message = if missing {
            "missing API key: send it as Authorization: Bearer KEY \
             (OLLAMA_API_KEY for the ollama clients, api_key for the OpenAI SDK)"
        } else {
            "invalid API key"
        };
        // The body was not read: the connection cannot carry another request.
        session.set_keepalive(None);
        ctx.status = 401;
        let openai = ctx.endpoint.is_openai();
        let body = respond::coded_error_body(
            openai,
            message,
            "invalid_request_error",
            Some("invalid_api_key"),
        );
        let headers = [("WWW-Authenticate", "Bearer".to_string())];
        respond::write_response(session, 401, JSON, body, &headers).await?;
        Ok(true)
    }

    /// Applies the key's model allow-list and limits to a request about to be routed.
    /// Returns `true` when the request was refused (403 or 429) and answered.
    pub(super) async fn limit_client(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<bool> {
        let Some(client) = ctx.client.as_ref() else {
            return Ok(false);
        };
        let checked = match (ctx.model_key.as_ref(), ctx.model.as_deref()) {
            (Some(key), Some(named)) => client.check_model(key, named),
            _ => Ok(()),
        }
        .and_then(|()| client.admit(Instant::now()));
        let refused = match checked {
            Ok(guard) => {
                ctx.client_guard = Some(guard);
                return Ok(false);
            }
            Err(r) => r,
        };
        session.set_keepalive(None);
        let openai = ctx.endpoint.is_openai();
        let message = refused.to_string();
        let (status, body, retry_after) = match &refused {
            Refused::Model { .. } => (
                403,
                respond::coded_error_body(
                    openai,
                    &message,
                    "invalid_request_error",
                    Some("model_not_allowed"),
                ),
                None,
            ),
            _ => {
                let retry = refused.retry_after().map_or_else(
                    || self.pool.load().config.routing.retry_after.as_secs().max(1),
                    retry_after_secs,
                );
                (
                    429,
                    respond::coded_error_body(
                        openai,
                        &message,
                        refused.limit_kind(),
                        Some("rate_limit_exceeded"),
                    ),
                    Some(retry),
                )
            }
        };
        ctx.status = status;
        let headers: Vec<(&'static str, String)> = retry_after
            .map(|s| ("Retry-After", s.to_string()))
            .into_iter()
            .collect();
        respond::write_response(session, status, JSON, body, &headers).await?;
        Ok(true)
    }
}

const JSON: &str = "application/json; charset=utf-8";

/// Books a finished request to its client key: the request by status, and the tokens
/// its answer reported (which also debit the key's `tokens_per_minute`).
pub(super) fn settle(ctx: &mut RequestCtx, status: u16) {
    let Some(client) = ctx.client.as_ref() else {
        return;
    };
    crate::metrics::global().client_request(client.name(), status);
    if let Some(stats) = ctx.observer.stats.as_ref() {
        client.record_tokens(stats.prompt_tokens, stats.completion_tokens, Instant::now());
    }
    // Its in-flight count ends with the request, not when the context is dropped.
    ctx.client_guard = None;
}
