//! Serving an axum router on the admin and cluster peer ports with the bounds the proxy
//! port has (`axum::serve` has none): the whole request header within `header`
//! (hyper's `header_read_timeout`, which also closes a kept-alive connection that long
//! idle), and at most `max_connections` connections at once — one more is closed as
//! soon as it is accepted. `whole_body` bounds request bodies in size and time; the
//! router places it (after authentication, so a stranger's body is never buffered).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::api_error::ApiError;
use crate::bounded_body::Size;
use crate::config::TimeoutConfig;
use crate::log_limit::LogLimit;

/// How long a shutdown waits for open connections to finish their request.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub header: Duration,
    pub body: Duration,
    pub max_body: usize,
    pub max_connections: usize,
}

impl Limits {
    /// The proxy port's header and body deadlines, with this size and connection cap.
    pub fn new(timeouts: &TimeoutConfig, max_body: usize, max_connections: usize) -> Limits {
        Limits {
            header: timeouts.header,
            body: timeouts.client_body,
            max_body,
            max_connections,
        }
    }
}

/// Serves `app` on `listener` until `stop` resolves; `name` labels the log lines.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    name: &'static str,
    stop: impl Future<Output = ()>,
) {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header);
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let refusals = LogLimit::new();
    let graceful = GracefulShutdown::new();
    tokio::pin!(stop);
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            () = &mut stop => break,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of descriptors and the like: back off instead of spinning.
                tracing::warn!(listener = name, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            if let Some(skipped) = refusals.admit() {
                tracing::warn!(
                    listener = name,
                    similar_not_logged = skipped,
                    "{} connections open, the cap: closing a new one",
                    limits.max_connections
                );
            }
            continue;
        };
        let service = TowerToHyperService::new(app.clone());
        let conn = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(listener = name, error = %e, "connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    if tokio::time::timeout(SHUTDOWN_WAIT, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::debug!(listener = name, "connections still open at shutdown");
    }
}

/// Buffers each request body of `router`, refusing it past `max_body` (413) or when it
/// has not arrived within `body` (408).
pub fn limit_bodies<S>(router: Router<S>, limits: Limits) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    router.layer(axum::middleware::from_fn_with_state(limits, whole_body))
}

async fn whole_body(State(limits): State<Limits>, req: Request, next: Next) -> Response {
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("request body larger than {}", Size(limits.max_body)),
        )
        .into_response()
    };
    let declared = req
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limits.max_body as u64) {
        return too_large();
    }
    let (parts, body) = req.into_parts();
    let read = axum::body::to_bytes(body, limits.max_body);
    let bytes = match tokio::time::timeout(limits.body, read).await {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(e)) if is_length_limit(&e) => return too_large(),
        Ok(Err(e)) => return ApiError::bad_request(format!("request body: {e}")).into_response(),
        Err(_) => {
            return ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "body_timeout",
                format!(
                    "request body not received within {}",
                    humantime::format_duration(limits.body)
                ),
            )
            .into_response()
        }
    };
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

fn is_length_limit(e: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if err.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = err.source();
    }
    false
}
