//! Log output off the request path: every line (the access log included) is handed to
//! a writer thread through a bounded queue, and that thread writes to stderr in
//! batches. A request never waits on a slow terminal, pipe or disk; when the queue is
//! full a line is dropped rather than stalling the proxy, and the drops are counted in
//! `corral_log_lines_dropped_total`.

use std::io::BufWriter;
use std::sync::{Mutex, OnceLock};

use tracing_appender::non_blocking::{ErrorCounter, NonBlockingBuilder, WorkerGuard};

/// Lines waiting for the writer thread; past this a line is dropped. At ~300 bytes a
/// line this bounds the queue's memory to a few tens of MiB.
const QUEUED_LINES: usize = 65_536;
/// Lines are written in batches of up to this many bytes: one `write` per batch
/// instead of one per line (which also wakes any inotify watch on the log file once
/// per batch, not once per request).
const BATCH_BYTES: usize = 64 * 1024;

/// Flushes the writer thread when dropped; kept until the process exits.
static GUARD: Mutex<Option<WorkerGuard>> = Mutex::new(None);
static DROPPED: OnceLock<ErrorCounter> = OnceLock::new();

/// Installs the process's tracing subscriber: `RUST_LOG` filter (default `info`),
/// text or JSON lines on stderr.
pub fn init(json: bool) {
    let (writer, guard) = NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(QUEUED_LINES)
        .thread_name("corral-log")
        .finish(BufWriter::with_capacity(BATCH_BYTES, std::io::stderr()));
    let _ = DROPPED.set(writer.error_counter());
    *GUARD.lock().unwrap_or_else(|p| p.into_inner()) = Some(guard);
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(writer);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// Writes out every queued line. Call before the process exits: `std::process::exit`
/// runs no destructors, and a static's never run.
pub fn flush() {
    drop(GUARD.lock().unwrap_or_else(|p| p.into_inner()).take());
}

/// Lines dropped because the writer thread fell behind (0 before `init`).
pub fn dropped_lines() -> u64 {
    DROPPED.get().map_or(0, |c| c.dropped_lines() as u64)
}
