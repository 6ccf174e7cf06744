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
    /// The upstream connection, owned by Pingora; duplicated only when the watch starts.
    fd: RawFd,
    /// Set once the answer's header is in: how long the backend may stay silent.
    idle: Option<Duration>,
    running: Option<Running>,
}

/// A started watch: its own handle on the socket and the timer task.
struct Running {
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl StallWatch {
    /// Will watch the upstream connection `fd` (a TCP socket owned by Pingora, open as
    /// long as the request uses it). Nothing runs until `arm`.
    pub fn new(fd: RawFd) -> StallWatch {
        StallWatch {
            fd,
            idle: None,
            running: None,
        }
    }

    /// Starts the clock: from now on, `idle` without a `touch` breaks the connection.
    pub fn arm(&mut self, idle: Duration) {
        self.idle = Some(idle);
        self.start(idle);
    }

    /// As `arm`, but only from the first chunk that does not end the answer: an answer
    /// that arrives whole with its header (every non-streamed one) then costs no timer
    /// task and no descriptor.
    pub fn arm_on_next_chunk(&mut self, idle: Duration) {
        self.idle = Some(idle);
    }

    fn start(&mut self, idle: Duration) {
        if self.running.is_some() {
            return;
        }
        // SAFETY: `fd` is the connection the current request is using; Pingora keeps it
        // open while the request's callbacks run. We only duplicate it, so the watch
        // never acts on a descriptor number the process has since reused.
        let Ok(owned) = unsafe { BorrowedFd::borrow_raw(self.fd) }.try_clone_to_owned() else {
            return;
        };
        let shared = Arc::new(Shared {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
            socket: Mutex::new(Some(TcpStream::from(owned))),
            fired: AtomicBool::new(false),
        });
        let watched = shared.clone();
        let task = tokio::spawn(async move {
            let shared = watched;
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
        });
        self.running = Some(Running { shared, task });
    }

    /// Records data from the backend (and starts a watch `arm_on_next_chunk` deferred).
    pub fn touch(&mut self) {
        match &self.running {
            Some(r) => {
                let ms = r.shared.start.elapsed().as_millis() as u64;
                r.shared.last_ms.store(ms, Ordering::Relaxed);
            }
            None => {
                if let Some(idle) = self.idle {
                    self.start(idle);
                }
            }
        }
    }

    /// Stops watching; after this returns the socket is never touched.
    pub fn disarm(&mut self) {
        self.idle = None;
        if let Some(r) = self.running.take() {
            let mut socket = r.shared.socket.lock().unwrap_or_else(|p| p.into_inner());
            socket.take();
            r.task.abort();
        }
    }

    /// Whether the watch broke the connection.
    pub fn fired(&self) -> bool {
        self.running
            .as_ref()
            .is_some_and(|r| r.shared.fired.load(Ordering::Relaxed))
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
        let mut watch = StallWatch::new(silent.as_raw_fd());
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
        let mut watch = StallWatch::new(kept.as_raw_fd());
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
