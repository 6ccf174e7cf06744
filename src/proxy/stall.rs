//! Idle timeout between response chunks.
//!
//! Pingora has one per-read upstream timeout, and it must be long because Ollama sends
//! no header until the model is loaded and the prompt evaluated. Once the header is in,
//! silence means a stuck backend, so this watch shuts the upstream socket down after
//! `idle` without data; Pingora then sees the stream break and the client gets an error
//! line. The watch owns a duplicate of the socket's descriptor, so it can never act on
//! a descriptor number the process has since reused for another connection.

use std::net::{Shutdown, TcpStream};
use std::os::fd::{BorrowedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

// tokio's clock, so the watch follows a paused test clock like its own sleeps do.
use tokio::time::Instant;

struct Shared {
    start: Instant,
    /// Milliseconds after `start` of the last chunk.
    last_ms: AtomicU64,
    /// `None` once disarmed; the lock makes "disarm" and "fire" mutually exclusive so the
    /// socket is never shut down after the response completed.
    socket: Mutex<Option<TcpStream>>,
    fired: AtomicBool,
}

pub struct StallWatch {
    shared: Arc<Shared>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl StallWatch {
    /// Watches the upstream connection `fd` (a TCP socket owned by Pingora).
    pub fn new(fd: RawFd) -> Option<StallWatch> {
        // SAFETY: Pingora passes the fd of a live connection and keeps it open for the
        // duration of the callback; we only duplicate it.
        let owned = unsafe { BorrowedFd::borrow_raw(fd) }
            .try_clone_to_owned()
            .ok()?;
        Some(StallWatch {
            shared: Arc::new(Shared {
                start: Instant::now(),
                last_ms: AtomicU64::new(0),
                socket: Mutex::new(Some(TcpStream::from(owned))),
                fired: AtomicBool::new(false),
            }),
            task: None,
        })
    }

    /// Starts the clock: from now on, `idle` without a `touch` breaks the connection.
    pub fn arm(&mut self, idle: Duration) {
        self.touch();
        let shared = self.shared.clone();
        self.task = Some(tokio::spawn(async move {
            loop {
                let last = Duration::from_millis(shared.last_ms.load(Ordering::Relaxed));
                let deadline = shared.start + last + idle;
                tokio::time::sleep_until(deadline).await;
                let last = Duration::from_millis(shared.last_ms.load(Ordering::Relaxed));
                if shared.start.elapsed() >= last + idle {
                    let mut socket = shared.socket.lock().unwrap_or_else(|p| p.into_inner());
                    if let Some(s) = socket.take() {
                        shared.fired.store(true, Ordering::Relaxed);
                        let _ = s.shutdown(Shutdown::Both);
                    }
                    return;
                }
            }
        }));
    }

    /// Records data from the backend.
    pub fn touch(&self) {
        let ms = self.shared.start.elapsed().as_millis() as u64;
        self.shared.last_ms.store(ms, Ordering::Relaxed);
    }

    /// Stops watching; after this returns the socket is never touched.
    pub fn disarm(&mut self) {
        let mut socket = self.shared.socket.lock().unwrap_or_else(|p| p.into_inner());
        socket.take();
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }

    /// Whether the watch broke the connection.
    pub fn fired(&self) -> bool {
        self.shared.fired.load(Ordering::Relaxed)
    }
}

impl Drop for StallWatch {
    fn drop(&mut self) {
        self.disarm();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::fd::AsRawFd;

    #[tokio::test]
    async fn breaks_a_silent_connection_and_spares_a_disarmed_one() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let mut silent = TcpStream::connect(addr).unwrap();
        let _peer1 = listener.accept().unwrap();
        let mut watch = StallWatch::new(silent.as_raw_fd()).unwrap();
        watch.arm(Duration::from_millis(50));
        // The read returns (EOF) only because the watch shut the socket down.
        let mut buf = [0u8; 8];
        silent
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let n = tokio::task::spawn_blocking(move || silent.read(&mut buf))
            .await
            .unwrap();
        assert_eq!(n.unwrap(), 0);
        assert!(watch.fired());
    }

    #[tokio::test(start_paused = true)]
    async fn a_disarmed_watch_never_fires() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut kept = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (mut peer, _) = listener.accept().unwrap();
        let mut watch = StallWatch::new(kept.as_raw_fd()).unwrap();
        watch.arm(Duration::from_millis(50));
        watch.disarm();
        // Far past the idle time: an armed watch would have shut the socket down.
        tokio::time::advance(Duration::from_secs(10)).await;
        tokio::task::yield_now().await;
        assert!(!watch.fired());
        std::io::Write::write_all(&mut peer, b"x").unwrap();
        let mut one = [0u8; 1];
        kept.read_exact(&mut one).unwrap();
        assert_eq!(&one, b"x");
    }
}
