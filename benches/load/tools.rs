//! The programs the benchmark drives — corral, the bare Pingora examples, nginx,
//! HAProxy and wrk — found on this machine, and each one's version for the report.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::Serialize;

use crate::process::find_program;

pub struct Tools {
    pub corral: PathBuf,
    pub bare_pingora: Option<PathBuf>,
    pub bare_pingora_mimalloc: Option<PathBuf>,
    pub nginx: Option<PathBuf>,
    pub haproxy: Option<PathBuf>,
    pub wrk: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Versions {
    pub corral: String,
    pub pingora: String,
    pub nginx: Option<String>,
    pub haproxy: Option<String>,
    pub wrk: Option<String>,
    pub kernel: Option<String>,
    pub cpus: usize,
}

impl Tools {
    pub fn discover(corral: &str) -> Tools {
        Tools {
            corral: PathBuf::from(corral),
            bare_pingora: example("bare_pingora", "BARE_PINGORA"),
            bare_pingora_mimalloc: example("bare_pingora_mimalloc", "BARE_PINGORA_MIMALLOC"),
            nginx: find_program("nginx", "NGINX"),
            haproxy: find_program("haproxy", "HAPROXY"),
            wrk: find_program("wrk", "WRK"),
        }
    }

    pub fn versions(&self) -> Versions {
        Versions {
            corral: first_line(&self.corral, "--version").unwrap_or_else(|| "?".into()),
            pingora: pingora_version(),
            nginx: self.nginx.as_deref().and_then(|p| first_line(p, "-v")),
            haproxy: self.haproxy.as_deref().and_then(|p| first_line(p, "-v")),
            wrk: self.wrk.as_deref().and_then(|p| first_line(p, "-v")),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .ok()
                .map(|s| s.trim().to_string()),
            cpus: std::thread::available_parallelism().map_or(0, usize::from),
        }
    }
}

/// An example (`examples/NAME.rs`) built in the same profile as this bench
/// (`cargo build --release --example NAME`, which `make bench-load` runs):
/// `<target>/release/examples/`, beside the bench's `deps/`; `env` names a variable
/// that points at the binary instead.
fn example(name: &str, env: &str) -> Option<PathBuf> {
    if let Some(explicit) = std::env::var_os(env) {
        return Some(PathBuf::from(explicit));
    }
    let exe = std::env::current_exe().ok()?;
    let candidate = exe.parent()?.parent()?.join("examples").join(name);
    candidate.is_file().then_some(candidate)
}

/// The first non-empty line a program prints for `flag`, on stdout or stderr (nginx
/// and wrk print their version on stderr; wrk exits non-zero).
fn first_line(program: &Path, flag: &str) -> Option<String> {
    let out = Command::new(program)
        .arg(flag)
        .stdin(Stdio::null())
        .output()
        .ok()?;
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .map(|l| l.split("Copyright").next().unwrap_or(l).trim().to_string())
}

/// The Pingora version corral and the bare proxy are built with, from Cargo.lock.
fn pingora_version() -> String {
    let lock = Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.lock");
    std::fs::read_to_string(lock)
        .ok()
        .and_then(|text| {
            let at = text.find("name = \"pingora\"\nversion = \"")?;
            let rest = &text[at + "name = \"pingora\"\nversion = \"".len()..];
            Some(rest[..rest.find('"')?].to_string())
        })
        .unwrap_or_else(|| "?".into())
}
