//! Errors a client causes — broken body framing, a body too slow, leaving early — are
//! not corral's failures: they are logged at WARN instead of
//! Pingora's ERROR, and at most one line a second (saying how many were left out), so a
//! misbehaving client cannot flood the log.

use std::sync::LazyLock;

use pingora::proxy::Session;
use pingora::{Error, ErrorSource, ErrorType};

use crate::log_limit::LogLimit;

/// Whether the client, not a backend or corral, caused `e`.
pub(super) fn is_client_fault(e: &Error) -> bool {
    *e.esource() == ErrorSource::Downstream
        || matches!(e.etype(), ErrorType::HTTPStatus(code) if (400..500).contains(code))
}

/// Logs a client's error at WARN, rate-limited.
pub(super) fn log(session: &Session, e: &Error) {
    static LIMIT: LazyLock<LogLimit> = LazyLock::new(LogLimit::new);
    let Some(skipped) = LIMIT.admit() else {
        return;
    };
    let req = session.req_header();
    tracing::warn!(
        method = %req.method,
        path = %req.uri.path(),
        client = session.client_addr().map(|a| a.to_string()).unwrap_or_default(),
        error = %e,
        similar_not_logged = skipped,
        "client error"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_faults_are_told_apart() {
        let down = Error::explain(ErrorType::ReadError, "x").into_down();
        assert!(is_client_fault(&down));
        assert!(is_client_fault(&Error::new(ErrorType::HTTPStatus(408))));
        assert!(!is_client_fault(&Error::new(ErrorType::HTTPStatus(502))));
        let up = Error::explain(ErrorType::ConnectRefused, "x").into_up();
        assert!(!is_client_fault(&up));
    }
}
