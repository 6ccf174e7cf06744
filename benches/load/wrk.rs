//! Non-streaming load: wrk with one thread POSTing a small `/api/chat` body, and its
//! summary (requests, errors, latency percentiles up to p99.9) printed by a Lua `done`
//! hook in a line this module parses.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde::Serialize;

use crate::backends::CHAT_REQUEST;

const MARK: &str = "LOADBENCH";

/// The Lua script: the POST and the summary line (latencies in microseconds).
pub fn script() -> String {
    format!(
        r#"wrk.method = "POST"
wrk.body = '{CHAT_REQUEST}'
wrk.headers["Content-Type"] = "application/json"
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("{MARK} requests=%d duration_us=%d connect=%d read=%d write=%d status=%d timeout=%d p50_us=%d p99_us=%d p999_us=%d\n",
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99), latency:percentile(99.9)))
end
"#
    )
}

#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct WrkResult {
    pub requests: u64,
    pub duration_s: f64,
    pub rps: f64,
    /// Connect, read, write and timeout errors plus non-2xx answers.
    pub errors: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
}

/// Runs wrk for `duration` at `conns` connections; the process is killed if it runs
/// far past its duration.
pub async fn run(
    wrk: &Path,
    script: &Path,
    addr: SocketAddr,
    conns: usize,
    duration: Duration,
) -> Result<WrkResult, String> {
    let secs = duration.as_secs().max(1);
    let mut command = tokio::process::Command::new(wrk);
    command
        .args([
            "-t1",
            &format!("-c{conns}"),
            &format!("-d{secs}s"),
            "--timeout",
            "10s",
            "-s",
        ])
        .arg(script)
        .arg(format!("http://{addr}/api/chat"))
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    let limit = duration + Duration::from_secs(30);
    let output = tokio::time::timeout(limit, command.output())
        .await
        .map_err(|_| format!("wrk ran past {limit:?}"))?
        .map_err(|e| format!("wrk: {e}"))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout
        .lines()
        .find(|l| l.starts_with(MARK))
        .ok_or_else(|| {
            format!(
                "wrk printed no summary ({}): {}{}",
                output.status,
                stdout.trim(),
                String::from_utf8_lossy(&output.stderr).trim()
            )
        })?;
    parse(line)
}

fn parse(line: &str) -> Result<WrkResult, String> {
    let field = |key: &str| -> Result<f64, String> {
        line.split_whitespace()
            .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
            .and_then(|v| v.parse::<f64>().ok())
            .ok_or_else(|| format!("wrk summary without {key}: {line}"))
    };
    let requests = field("requests")?;
    let duration_s = field("duration_us")? / 1e6;
    let errors = ["connect", "read", "write", "status", "timeout"]
        .iter()
        .map(|k| field(k))
        .sum::<Result<f64, String>>()?;
    Ok(WrkResult {
        requests: requests as u64,
        duration_s,
        rps: if duration_s > 0.0 {
            requests / duration_s
        } else {
            0.0
        },
        errors: errors as u64,
        p50_ms: field("p50_us")? / 1e3,
        p99_ms: field("p99_us")? / 1e3,
        p999_ms: field("p999_us")? / 1e3,
    })
}
