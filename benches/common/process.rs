//! Process helpers the process-spawning benchmarks share: kill-on-drop children,
//! polling with a deadline, ephemeral loopback ports, finding an installed tool and the
//! results directory.

use std::future::Future;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

/// A child process, killed when dropped so that a panic or an early return never leaves
/// a simulator or proxy listening behind the benchmark.
pub struct Proc {
    child: Child,
    name: String,
    log: Option<PathBuf>,
}

impl Proc {
    pub fn new(child: Child, name: impl Into<String>, log: Option<PathBuf>) -> Proc {
        Proc {
            child,
            name: name.into(),
            log,
        }
    }

    /// The end of the process's log, to explain a failed start.
    pub fn log_tail(&self) -> String {
        let Some(text) = self
            .log
            .as_ref()
            .and_then(|p| std::fs::read_to_string(p).ok())
        else {
            return String::new();
        };
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    /// `Err` with the exit status if the process is already gone.
    pub fn check_alive(&mut self) -> Result<(), String> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => Err(format!(
                "{} exited early ({status})\n{}",
                self.name,
                self.log_tail()
            )),
            Err(e) => Err(format!("{}: cannot check process: {e}", self.name)),
        }
    }

    // The routing benchmark never samples its processes.
    #[allow(dead_code)]
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits up to `deadline` for the process to exit on its own (after a signal the
    /// caller sent); `true` if it did.
    #[allow(dead_code)]
    pub fn wait_exit(&mut self, deadline: Duration) -> bool {
        let started = Instant::now();
        while started.elapsed() < deadline {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `check` every 25 ms until it yields `Some`, or fails with `what` once
/// `deadline` has passed. The only way the benches wait for another process.
pub async fn poll<T, F, Fut>(what: &str, deadline: Duration, mut check: F) -> Result<T, String>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let started = Instant::now();
    loop {
        if let Some(value) = check().await {
            return Ok(value);
        }
        if started.elapsed() > deadline {
            return Err(format!("timed out after {deadline:?} waiting for {what}"));
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// A loopback port free right now. The proxies take a fixed address in their config,
/// so the port is bound, read and released; a collision in between is possible but
/// would show up as a failed start, not as a wrong measurement.
pub fn free_port() -> Result<u16, String> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("bind an ephemeral loopback port: {e}"))
}

/// An installed program: `$ENV_VAR`, else `name` on `PATH`, else Debian's `/usr/sbin`
/// (not on a non-root user's `PATH`).
pub fn find_program(name: &str, env_var: &str) -> Option<PathBuf> {
    if let Some(explicit) = std::env::var_os(env_var) {
        return Some(PathBuf::from(explicit));
    }
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .map(|dir| dir.join(name));
    on_path
        .chain([Path::new("/usr/sbin").join(name)])
        .find(|candidate| candidate.is_file())
}

/// `target/bench-results`, wherever the target directory is: the bench binary lives in
/// `<target>/<profile>/deps/`.
pub fn results_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .or_else(|| {
            let exe = std::env::current_exe().ok()?;
            let deps = exe.parent()?;
            (deps.file_name()? == "deps").then(|| deps.parent()?.parent().map(Path::to_path_buf))?
        })
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    target.join("bench-results")
}
