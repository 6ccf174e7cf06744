//! A total deadline for each request header on the proxy port (`timeouts.header`).
//!
//! Pingora reads a request header with a timeout per read call (60 s on a new
//! connection, the keep-alive time on a reused one), so a client that sends a byte a
//! second holds its connection forever. Every accepted connection is wrapped
//! in a `HeaderClock`, which fails the pending read once the header has taken longer
//! than the limit: counted from accept on a new connection, and from the first byte of
//! the next request on a kept-alive one (the wait before that byte is the keep-alive
//! idle time, `timeouts.client`). The proxy stops the clock as soon as a header is
//! parsed (`stop_header_clock`), so bodies and streamed answers are never cut by it;
//! `HeaderDeadlineApp` runs Pingora's HTTP/1 keep-alive loop itself so that it can
//! restart the clock between requests, after Pingora has drained the previous body.
//! On the TLS port it runs the handshake first, within the same deadline: the clock of
//! a TLS connection starts at accept, not after the handshake.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use pingora::apps::{HttpServerApp, ServerApp};
use pingora::protocols::http::ServerSession;
use pingora::protocols::raw_connect::ProxyDigest;
use pingora::protocols::tls::{SslDigest, TlsRef};
use pingora::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl, Stream,
    TimingDigest, UniqueID, UniqueIDType, ALPN,
};
use pingora::proxy::{HttpProxy, Session};
use pingora::server::ShutdownWatch;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
// tokio's clock, so unit tests can run it paused.
use tokio::time::{Instant, Sleep};

use super::CorralProxy;
use crate::pool::Pool;
use crate::tls::TlsPort;

/// The clock is stopped: a body or an answer is under way.
const STOPPED: u64 = u64::MAX;
/// Between requests on a kept-alive connection: starts at the next byte.
const AWAITING_FIRST_BYTE: u64 = u64::MAX - 1;

/// A connection whose request header must arrive whole within a limit.
pub(super) struct HeaderClock {
    inner: Stream,
    origin: Instant,
    limit: Duration,
    /// When the current header must be complete, in ms after `origin`, or one of the
    /// two states above. Atomic because the proxy stops it through a shared reference.
    deadline_ms: AtomicU64,
    /// Wakes a pending read at the deadline. In a `Mutex` only to make the stream
    /// `Sync` (Pingora requires it); polling goes through `get_mut`, without locking.
    timer: Mutex<Pin<Box<Sleep>>>,
}

impl HeaderClock {
    /// Wraps a connection accepted at `origin` (before its TLS handshake, if any).
    pub(super) fn since(inner: Stream, limit: Duration, origin: Instant) -> HeaderClock {
        HeaderClock {
            inner,
            origin,
            limit,
            deadline_ms: AtomicU64::new(millis(limit)),
            timer: Mutex::new(Box::pin(tokio::time::sleep_until(origin + limit))),
        }
    }

    /// The header is in: from now on reads are timed by Pingora's own timeouts only.
    pub(super) fn stop(&self) {
        self.deadline_ms.store(STOPPED, Ordering::Relaxed);
    }

    /// The previous request is done: the next header's clock starts at its first byte.
    pub(super) fn await_next_request(&self) {
        self.deadline_ms
            .store(AWAITING_FIRST_BYTE, Ordering::Relaxed);
    }

    fn now_ms(&self) -> u64 {
        millis(self.origin.elapsed())
    }

    fn timed_out(&self) -> io::Error {
        io::Error::new(
            io::ErrorKind::TimedOut,
            format!(
                "request header not complete within {}",
                humantime::format_duration(self.limit)
            ),
        )
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(STOPPED - 2)
}

/// The clock of the connection a proxied request came on, if it has one.
fn clock_of(session: &Session) -> Option<&HeaderClock> {
    let stream = session.as_downstream().stream()?;
    (**stream).as_any().downcast_ref::<HeaderClock>()
}

/// Called once the request header is parsed: the body and the answer have deadlines of
/// their own.
pub(super) fn stop_header_clock(session: &Session) {
    if let Some(clock) = clock_of(session) {
        clock.stop();
    }
}

impl AsyncRead for HeaderClock {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let deadline = this.deadline_ms.load(Ordering::Relaxed);
        if deadline == STOPPED {
            return Pin::new(&mut this.inner).poll_read(cx, buf);
        }
        let running = deadline != AWAITING_FIRST_BYTE;
        if running && this.now_ms() >= deadline {
            return Poll::Ready(Err(this.timed_out()));
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if !running && buf.filled().len() > before {
                    let start = this.now_ms().saturating_add(millis(this.limit));
                    this.deadline_ms.store(start, Ordering::Relaxed);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending if running => {
                let at = this.origin + Duration::from_millis(deadline);
                let timer = this.timer.get_mut().unwrap_or_else(|p| p.into_inner());
                if timer.deadline() != at {
                    timer.as_mut().reset(at);
                }
                match timer.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Err(this.timed_out())),
                    Poll::Pending => Poll::Pending,
                }
            }
            other => other,
        }
    }
}

impl AsyncWrite for HeaderClock {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

// Everything else Pingora asks of a connection is the wrapped one's.

#[async_trait]
impl Shutdown for HeaderClock {
    async fn shutdown(&mut self) {
        self.inner.shutdown().await
    }
}

impl UniqueID for HeaderClock {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl Ssl for HeaderClock {
    fn get_ssl(&self) -> Option<&TlsRef> {
        self.inner.get_ssl()
    }
    fn get_ssl_digest(&self) -> Option<Arc<SslDigest>> {
        self.inner.get_ssl_digest()
    }
    fn selected_alpn_proto(&self) -> Option<ALPN> {
        self.inner.selected_alpn_proto()
    }
}

impl GetTimingDigest for HeaderClock {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.inner.get_timing_digest()
    }
    fn get_read_pending_time(&self) -> Duration {
        self.inner.get_read_pending_time()
    }
    fn get_write_pending_time(&self) -> Duration {
        self.inner.get_write_pending_time()
    }
}

impl GetProxyDigest for HeaderClock {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        self.inner.get_proxy_digest()
    }
    fn set_proxy_digest(&mut self, digest: ProxyDigest) {
        self.inner.set_proxy_digest(digest)
    }
}

impl GetSocketDigest for HeaderClock {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.inner.get_socket_digest()
    }
    fn set_socket_digest(&mut self, digest: SocketDigest) {
        self.inner.set_socket_digest(digest)
    }
}

#[async_trait]
impl Peek for HeaderClock {
    async fn try_peek(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        self.inner.try_peek(buf).await
    }
}

impl std::fmt::Debug for HeaderClock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeaderClock")
            .field("inner", &self.inner)
            .field("limit", &self.limit)
            .finish()
    }
}

/// The proxy application behind the listeners: Pingora's HTTP/1 connection loop with a
/// `HeaderClock` around each connection.
pub struct HeaderDeadlineApp {
    proxy: Arc<HttpProxy<CorralProxy>>,
    pool: Arc<Pool>,
    tls: Option<TlsPort>,
}

impl HeaderDeadlineApp {
    pub fn new(
        proxy: HttpProxy<CorralProxy>,
        pool: Arc<Pool>,
        tls: Option<TlsPort>,
    ) -> HeaderDeadlineApp {
        HeaderDeadlineApp {
            proxy: Arc::new(proxy),
            pool,
            tls,
        }
    }

    /// The connection as HTTP will read it: on the TLS port, after a handshake that
    /// must end within `limit` of accept; `None` when it failed (logged at debug: port
    /// scanners and plain-HTTP clients on the TLS port are routine).
    async fn secure(&self, stream: Stream, limit: Duration) -> Option<Stream> {
        let tls = match &self.tls {
            Some(tls) if tls.accepted(&stream) => tls,
            _ => return Some(stream),
        };
        match tokio::time::timeout(limit, tls.handshake(stream)).await {
            Ok(Ok(stream)) => Some(stream),
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "TLS handshake failed");
                None
            }
            Err(_) => {
                tracing::debug!(limit = ?limit, "TLS handshake not complete within timeouts.header");
                None
            }
        }
    }
}

#[async_trait]
impl ServerApp for HeaderDeadlineApp {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let accepted = Instant::now();
        let limit = self.pool.load().config.timeouts.header;
        let stream = self.secure(stream, limit).await?;
        let clock = HeaderClock::since(stream, limit, accepted);
        let mut session = ServerSession::new_http1(Box::new(clock));
        // As Pingora's loop does: keep-alive unless shutting down; the proxy sets the
        // configured keep-alive time per request.
        session.set_keepalive((!*shutdown.borrow()).then_some(60));
        session.set_keepalive_reuses_remaining(
            self.proxy
                .server_options()
                .and_then(|o| o.keepalive_request_limit),
        );
        let mut reused = self.proxy.process_new_http(session, shutdown).await;
        while let Some((stream, settings)) = reused.map(|r| r.consume()) {
            if let Some(clock) = (*stream).as_any().downcast_ref::<HeaderClock>() {
                clock.await_next_request();
            }
            let mut session = ServerSession::new_http1(stream);
            if let Some(settings) = settings {
                settings.apply_to_session(&mut session);
            }
            reused = self.proxy.process_new_http(session, shutdown).await;
        }
        None
    }

    async fn cleanup(&self) {
        // Tells kept-alive connections waiting for a request to stop.
        self.proxy.cleanup().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn clocked(limit: Duration) -> (HeaderClock, tokio::io::DuplexStream) {
        let (ours, theirs) = tokio::io::duplex(1024);
        (
            HeaderClock::since(Box::new(ours), limit, Instant::now()),
            theirs,
        )
    }

    #[tokio::test(start_paused = true)]
    async fn a_trickling_header_fails_at_the_deadline() {
        let (mut conn, mut client) = clocked(Duration::from_secs(10));
        let trickle = tokio::spawn(async move {
            for _ in 0..60 {
                if client.write_all(b"x").await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
        let start = Instant::now();
        let mut buf = [0u8; 64];
        let err = loop {
            match conn.read(&mut buf).await {
                Ok(n) => assert!(n > 0, "the client did not close"),
                Err(e) => break e,
            }
        };
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert_eq!(start.elapsed(), Duration::from_secs(10));
        trickle.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn a_stopped_clock_lets_a_slow_body_through() {
        let (mut conn, mut client) = clocked(Duration::from_secs(10));
        client.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        let mut buf = [0u8; 64];
        assert!(conn.read(&mut buf).await.unwrap() > 0);
        conn.stop();
        tokio::time::sleep(Duration::from_secs(30)).await;
        client.write_all(b"late").await.unwrap();
        assert_eq!(conn.read(&mut buf).await.unwrap(), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn between_requests_the_clock_starts_at_the_first_byte() {
        let (mut conn, mut client) = clocked(Duration::from_secs(10));
        conn.await_next_request();
        // Idle far longer than the limit: that is keep-alive time, not header time.
        tokio::time::sleep(Duration::from_secs(60)).await;
        client.write_all(b"G").await.unwrap();
        let mut buf = [0u8; 64];
        assert_eq!(conn.read(&mut buf).await.unwrap(), 1);
        let start = Instant::now();
        let err = conn.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert_eq!(start.elapsed(), Duration::from_secs(10));
    }
}
