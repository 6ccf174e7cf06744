//! The whole-body deadline for request bodies (`timeouts.client_body`).
//!
//! Pingora times each body read on its own, so an uploader sending a byte a second
//! never trips it and holds its backend slot as long as it likes. Here the body as a
//! whole must arrive within the limit, counted from the end of its header: reads corral
//! makes itself (sniffing, fleet operations) run under the deadline, and while Pingora
//! forwards the rest, every chunk is checked and the next read may wait only until the
//! deadline. A client that misses it is answered 408.
//!
//! Blob uploads (`/api/blobs/*`) are GB-size and legitimately slow; they keep only the
//! per-read timeout (`timeouts.client`).

use std::time::Duration;

use bytes::Bytes;
use pingora::proxy::Session;
use pingora::{Error, ErrorType, Result};
use tokio::time::Instant;

use super::endpoint::Endpoint;

/// When a request's body must be complete.
#[derive(Debug, Clone, Copy)]
pub struct BodyDeadline {
    at: Instant,
    limit: Duration,
}

impl BodyDeadline {
    /// The deadline of a request whose header arrived at `started`; `None` for blobs.
    pub fn for_request(
        endpoint: &Endpoint,
        started: std::time::Instant,
        limit: Duration,
    ) -> Option<BodyDeadline> {
        (*endpoint != Endpoint::Blob).then(|| BodyDeadline {
            at: Instant::from_std(started) + limit,
            limit,
        })
    }

    /// Moves the deadline out by time the body was not being read through no fault of
    /// the client's (waiting in the admission queue).
    pub fn postpone(&mut self, by: Duration) {
        self.at += by;
    }

    pub fn passed(&self) -> bool {
        Instant::now() >= self.at
    }

    /// What the client is told.
    pub fn message(&self) -> String {
        format!(
            "request body not received within {} (timeouts.client_body)",
            humantime::format_duration(self.limit)
        )
    }

    /// A 408, and the error is the client's.
    pub fn expired(&self) -> Box<Error> {
        Error::explain(ErrorType::HTTPStatus(408), self.message()).into_down()
    }

    /// The read timeout for the next body read: the per-read one, cut at the deadline.
    pub fn next_read_timeout(&self, per_read: Duration) -> Duration {
        per_read.min(self.at.saturating_duration_since(Instant::now()))
    }
}

/// Reads the next request body chunk within the deadline. Read errors are the client's
/// (a broken framing, a closed connection), so they are marked as such.
pub(super) async fn read_body_chunk(
    session: &mut Session,
    deadline: Option<BodyDeadline>,
) -> Result<Option<Bytes>> {
    let read = session.read_request_body();
    let result = match deadline {
        None => read.await,
        Some(d) => match tokio::time::timeout_at(d.at, read).await {
            Ok(r) => r,
            Err(_) => return Err(d.expired()),
        },
    };
    result.map_err(Error::into_down)
}

/// Checks a chunk Pingora read while forwarding the body, and shortens the next read's
/// timeout to what is left.
pub(super) fn check_forwarded_chunk(
    session: &mut Session,
    deadline: Option<BodyDeadline>,
    end_of_stream: bool,
    per_read: Duration,
) -> Result<()> {
    let Some(d) = deadline else {
        return Ok(());
    };
    if end_of_stream {
        return Ok(());
    }
    if d.passed() {
        return Err(d.expired());
    }
    session
        .as_downstream_mut()
        .set_read_timeout(Some(d.next_read_timeout(per_read)));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn blobs_have_no_deadline_and_others_expire_as_408() {
        let now = std::time::Instant::now();
        let limit = Duration::from_secs(60);
        assert!(BodyDeadline::for_request(&Endpoint::Blob, now, limit).is_none());
        let d = BodyDeadline::for_request(&Endpoint::Chat, now, limit).unwrap();
        assert!(!d.passed());
        let e = d.expired();
        assert_eq!(*e.etype(), ErrorType::HTTPStatus(408));
        assert_eq!(*e.esource(), pingora::ErrorSource::Downstream);
    }

    #[tokio::test(start_paused = true)]
    async fn the_last_read_may_wait_only_until_the_deadline() {
        let d = BodyDeadline {
            at: Instant::now() + Duration::from_secs(5),
            limit: Duration::from_secs(5),
        };
        let per_read = Duration::from_secs(60);
        assert_eq!(d.next_read_timeout(per_read), Duration::from_secs(5));
        tokio::time::advance(Duration::from_secs(4)).await;
        assert_eq!(d.next_read_timeout(per_read), Duration::from_secs(1));
        assert_eq!(
            d.next_read_timeout(Duration::from_millis(300)),
            Duration::from_millis(300)
        );
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(d.passed());
        assert_eq!(d.next_read_timeout(per_read), Duration::ZERO);
        let mut queued = d;
        queued.postpone(Duration::from_secs(10));
        assert!(!queued.passed());
        assert_eq!(queued.next_read_timeout(per_read), Duration::from_secs(9));
    }
}
