//! Log output off the request path. A request formats its line (the access log
//! formats itself, see `proxy::access_line`) and appends it to a shared in-memory
//! batch: no system call and no thread wake-up per line. A writer thread writes the
//! batch to stderr every `FLUSH_EVERY`, or sooner once it passes `FLUSH_AT` bytes —
//! the way nginx's `access_log ... buffer= flush=` works. When stderr cannot keep up
//! and the batch reaches `MAX_BATCH`, further lines are dropped instead of stalling
//! requests, and counted in `corral_log_lines_dropped_total`.
//!
//! tracing-appender's non-blocking writer was measured first: it wakes its thread
//! for every line (a futex wake and a `write` per request), and that thread took
//! about 11 % of corral's CPU at 12k requests/s; this writer's thread takes under 1 %.
//! Batching by time also means a log file kept next to the config file wakes the
//! config watcher at most ten times a second.

use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::thread::JoinHandle;
use std::time::Duration;

use tracing_subscriber::fmt::MakeWriter;

/// How long a line may wait in memory before it reaches stderr.
const FLUSH_EVERY: Duration = Duration::from_millis(100);
/// A batch this large is written at once rather than at the next tick.
const FLUSH_AT: usize = 64 * 1024;
/// Past this many bytes waiting (stderr blocked or far too slow), lines are dropped.
const MAX_BATCH: usize = 8 * 1024 * 1024;

struct Shared {
    batch: Mutex<Vec<u8>>,
    /// Signalled when the batch passes `FLUSH_AT`, and at shutdown.
    ready: Condvar,
    stopping: AtomicBool,
    dropped: AtomicU64,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Vec<u8>> {
        self.batch.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds a whole line to the batch, or counts it dropped when the batch is full.
    fn append(&self, line: &[u8]) {
        let mut batch = self.lock();
        if batch.len() + line.len() > MAX_BATCH {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        } else {
            batch.extend_from_slice(line);
            if batch.len() >= FLUSH_AT {
                self.ready.notify_one();
            }
        }
    }
}

/// The `MakeWriter` handed to tracing: every line goes into the shared batch.
#[derive(Clone)]
pub struct BatchWriter(Arc<Shared>);

impl Write for BatchWriter {
    fn write(&mut self, line: &[u8]) -> io::Result<usize> {
        self.0.append(line);
        // A dropped line is reported through the metric, never as an error: tracing
        // would print the error to stderr, which is the stream that is behind.
        Ok(line.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for BatchWriter {
    type Writer = BatchWriter;

    fn make_writer(&'a self) -> BatchWriter {
        self.clone()
    }
}

/// Writes batches to `out` until told to stop, then writes what is left.
fn write_batches(shared: Arc<Shared>, mut out: impl Write) {
    let mut spare = Vec::with_capacity(FLUSH_AT);
    loop {
        let stopping = {
            let batch = shared.lock();
            let (mut batch, _) = shared
                .ready
                .wait_timeout_while(batch, FLUSH_EVERY, |b| {
                    b.len() < FLUSH_AT && !shared.stopping.load(Ordering::Relaxed)
                })
                .unwrap_or_else(|p| p.into_inner());
            std::mem::swap(&mut *batch, &mut spare);
            shared.stopping.load(Ordering::Relaxed)
        };
        if !spare.is_empty() {
            // Nowhere to report a failed write to stderr; the next batch tries again.
            let _ = out.write_all(&spare);
            let _ = out.flush();
            spare.clear();
            if spare.capacity() > 4 * FLUSH_AT {
                spare.shrink_to(FLUSH_AT);
            }
        }
        if stopping {
            return;
        }
    }
}

struct Installed {
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

static INSTALLED: OnceLock<Installed> = OnceLock::new();

/// Whether `init` chose JSON lines (`--log-json`).
static JSON: AtomicBool = AtomicBool::new(false);

/// Whether log lines are JSON, as `init` was told.
pub fn json() -> bool {
    JSON.load(Ordering::Relaxed)
}

/// Writes one whole line (newline included) formatted outside tracing, the same way
/// tracing's lines go: into the batch, or straight to stderr before `init`.
pub fn write_line(line: &[u8]) {
    match INSTALLED.get() {
        Some(installed) => installed.shared.append(line),
        None => {
            let _ = io::stderr().write_all(line);
        }
    }
}

/// Installs the process's tracing subscriber: `RUST_LOG` filter (default `info`),
/// text or JSON lines on stderr through the batch writer.
pub fn init(json: bool) {
    JSON.store(json, Ordering::Relaxed);
    let shared = Arc::new(Shared {
        batch: Mutex::new(Vec::with_capacity(FLUSH_AT)),
        ready: Condvar::new(),
        stopping: AtomicBool::new(false),
        dropped: AtomicU64::new(0),
    });
    let writer_shared = shared.clone();
    let thread = std::thread::Builder::new()
        .name("corral-log".into())
        .spawn(move || write_batches(writer_shared, io::stderr()));
    let Ok(thread) = thread else {
        // No thread, no batching: write each line as it comes.
        init_with(json, io::stderr);
        return;
    };
    let writer = BatchWriter(shared.clone());
    let _ = INSTALLED.set(Installed {
        shared,
        thread: Mutex::new(Some(thread)),
    });
    init_with(json, writer);
}

fn init_with<W>(json: bool, writer: W)
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(io::IsTerminal::is_terminal(&io::stderr()))
        .with_writer(writer);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// Writes out every waiting line and stops the writer thread. Call before the process
/// exits (`std::process::exit` runs no destructors). Lines logged afterwards stay in
/// memory.
pub fn flush() {
    let Some(installed) = INSTALLED.get() else {
        return;
    };
    installed.shared.stopping.store(true, Ordering::Relaxed);
    installed.shared.ready.notify_one();
    let thread = installed
        .thread
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take();
    if let Some(t) = thread {
        let _ = t.join();
    }
}

/// Lines dropped because stderr fell behind (0 before `init`).
pub fn dropped_lines() -> u64 {
    INSTALLED
        .get()
        .map_or(0, |i| i.shared.dropped.load(Ordering::Relaxed))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shared() -> Arc<Shared> {
        Arc::new(Shared {
            batch: Mutex::new(Vec::new()),
            ready: Condvar::new(),
            stopping: AtomicBool::new(false),
            dropped: AtomicU64::new(0),
        })
    }

    /// A `Write` the test can read back.
    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl Write for Sink {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn lines_reach_the_output_in_order_and_stop_writes_the_rest() {
        let shared = shared();
        let sink = Sink::default();
        let out = sink.clone();
        let s = shared.clone();
        let thread = std::thread::spawn(move || write_batches(s, out));
        let mut w = BatchWriter(shared.clone());
        for i in 0..1000 {
            w.write_all(format!("line {i}\n").as_bytes()).unwrap();
        }
        shared.stopping.store(true, Ordering::Relaxed);
        shared.ready.notify_one();
        thread.join().unwrap();
        let text = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 1000);
        assert_eq!(lines[0], "line 0");
        assert_eq!(lines[999], "line 999");
    }

    #[test]
    fn a_full_batch_drops_whole_lines_and_counts_them() {
        let shared = shared();
        let mut w = BatchWriter(shared.clone());
        let line = vec![b'x'; 1024];
        // No writer thread: nothing drains the batch.
        for _ in 0..(MAX_BATCH / 1024 + 10) {
            assert_eq!(w.write(&line).unwrap(), 1024);
        }
        assert_eq!(shared.lock().len(), MAX_BATCH);
        assert_eq!(shared.dropped.load(Ordering::Relaxed), 10);
    }
}
