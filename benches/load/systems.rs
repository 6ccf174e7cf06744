//! The systems under load, each started fresh in front of one backend with two
//! workers/threads: direct (no proxy), corral with its default configuration (access
//! log on, to a file) and with the access log off, bare Pingora (`examples/
//! bare_pingora.rs`) with Pingora's defaults and tuned as corral is (mimalloc, work
//! stealing off), nginx and HAProxy. Each runs in its own temporary directory (config,
//! pid file, logs) on an ephemeral loopback port.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::process::{free_port, poll, Proc};
use crate::procfs;
use crate::tools::Tools;

/// How long a process gets to come up on a busy 2-core machine.
pub const STARTUP: Duration = Duration::from_secs(30);

/// Every proxy's worker processes or threads.
pub const WORKERS: usize = 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum System {
    Direct,
    /// corral as shipped: `RUST_LOG` unset, so the access log is on.
    Corral,
    CorralNoLog,
    /// Pingora's defaults: the system allocator, a work-stealing runtime.
    BarePingora,
    /// The engine with corral's two settings (mimalloc, `work_stealing: false`), so
    /// corral's own cost is read against an engine configured like it.
    BareTuned,
    Nginx,
    Haproxy,
}

impl System {
    pub const ALL: [System; 7] = [
        System::Direct,
        System::Corral,
        System::CorralNoLog,
        System::BarePingora,
        System::BareTuned,
        System::Nginx,
        System::Haproxy,
    ];

    pub fn id(self) -> &'static str {
        match self {
            System::Direct => "direct",
            System::Corral => "corral",
            System::CorralNoLog => "corral-nolog",
            System::BarePingora => "bare",
            System::BareTuned => "bare-tuned",
            System::Nginx => "nginx",
            System::Haproxy => "haproxy",
        }
    }

    /// Column heading in the tables.
    pub fn label(self) -> &'static str {
        match self {
            System::Direct => "direct",
            System::Corral => "corral (default, log on)",
            System::CorralNoLog => "corral, access log off",
            System::BarePingora => "bare Pingora",
            System::BareTuned => "bare Pingora, tuned",
            System::Nginx => "nginx",
            System::Haproxy => "HAProxy",
        }
    }

    pub fn from_id(id: &str) -> Result<System, String> {
        System::ALL
            .into_iter()
            .find(|s| s.id() == id)
            .ok_or_else(|| {
                let known: Vec<&str> = System::ALL.iter().map(|s| s.id()).collect();
                format!("unknown system {id:?} (known: {})", known.join(", "))
            })
    }
}

/// A system ready for load; dropping it stops it and removes its files.
pub struct Running {
    pub addr: SocketAddr,
    /// The process whose tree is measured; `None` for direct.
    proc: Option<Proc>,
    /// The signal that stops it at once: Pingora's SIGTERM is a graceful shutdown that
    /// waits out a grace period, its SIGINT is the fast one.
    stop_signal: libc::c_int,
    _dir: Option<tempfile::TempDir>,
}

impl Running {
    pub fn pid(&self) -> Option<u32> {
        self.proc.as_ref().map(Proc::pid)
    }

    /// `Err` if the proxy died (its log explains why).
    pub fn check_alive(&mut self) -> Result<(), String> {
        self.proc.as_mut().map_or(Ok(()), Proc::check_alive)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(proc) = &mut self.proc {
            stop_tree(proc, self.stop_signal);
        }
    }
}

/// Stops a process and whatever it forked: `sig` first (nginx's master then stops its
/// workers, which a SIGKILLed master would leave running on the port), SIGKILL for
/// anything left after a short wait.
pub fn stop_tree(proc: &mut Proc, sig: libc::c_int) {
    let pids = procfs::tree(proc.pid());
    signal(proc.pid(), sig);
    if !proc.wait_exit(Duration::from_secs(3)) {
        signal(proc.pid(), libc::SIGKILL);
    }
    for pid in pids.into_iter().filter(|&p| p != proc.pid()) {
        signal(pid, libc::SIGKILL);
    }
}

fn signal(pid: u32, sig: libc::c_int) {
    if let Ok(pid) = libc::pid_t::try_from(pid) {
        // SAFETY: kill only sends a signal to a process this bench started.
        unsafe { libc::kill(pid, sig) };
    }
}

fn spawn(mut command: Command, name: &str, log: &Path) -> Result<Proc, String> {
    let log_file =
        std::fs::File::create(log).map_err(|e| format!("create {}: {e}", log.display()))?;
    let stdout = log_file
        .try_clone()
        .map_err(|e| format!("{}: {e}", log.display()))?;
    let child = command
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(log_file)
        .spawn()
        .map_err(|e| format!("spawn {name}: {e}"))?;
    Ok(Proc::new(child, name, Some(log.to_path_buf())))
}

/// nginx in the foreground with its master process, everything under `prefix`.
pub fn spawn_nginx(
    bin: &Path,
    conf: &Path,
    prefix: &Path,
    log: &Path,
    name: &str,
) -> Result<Proc, String> {
    let mut command = Command::new(bin);
    command
        .arg("-c")
        .arg(conf)
        .arg("-p")
        .arg(prefix)
        // `-e` keeps nginx from opening its compiled-in /var/log path before the config
        // is read.
        .args(["-e", "stderr", "-g", "daemon off;"]);
    spawn(command, name, log)
}

pub async fn start(
    system: System,
    backend: SocketAddr,
    tools: &Tools,
    client: &reqwest::Client,
) -> Result<Running, String> {
    if system == System::Direct {
        let mut direct = Running {
            addr: backend,
            proc: None,
            stop_signal: libc::SIGTERM,
            _dir: None,
        };
        // The backend's own readiness: the first run may come right after its start.
        wait_ready(&mut direct, client).await?;
        return Ok(direct);
    }
    let dir = tempfile::tempdir().map_err(|e| format!("tempdir: {e}"))?;
    let port = free_port()?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let log = dir.path().join("stderr.log");
    let proc = match system {
        System::Direct => unreachable!("handled above"),
        System::Corral | System::CorralNoLog => {
            start_corral(system, port, backend, &tools.corral, dir.path(), &log)?
        }
        System::BarePingora | System::BareTuned => {
            let bin = if system == System::BareTuned {
                tools.bare_pingora_mimalloc.as_ref()
            } else {
                tools.bare_pingora.as_ref()
            }
            .ok_or_else(|| format!("{} is not built", system.label()))?;
            let mut command = Command::new(bin);
            command
                .arg(addr.to_string())
                .arg(backend.to_string())
                .arg(WORKERS.to_string());
            // The example reads only whether the variable is set.
            command.env_remove("BARE_TUNED");
            if system == System::BareTuned {
                command.env("BARE_TUNED", "1");
            }
            spawn(command, system.label(), &log)?
        }
        System::Nginx => {
            let bin = tools.nginx.as_ref().ok_or("nginx is not installed")?;
            let conf = dir.path().join("nginx.conf");
            write(&conf, &crate::configs::nginx(port, backend, dir.path()))?;
            spawn_nginx(bin, &conf, dir.path(), &log, "nginx")?
        }
        System::Haproxy => {
            let bin = tools.haproxy.as_ref().ok_or("haproxy is not installed")?;
            let conf = dir.path().join("haproxy.cfg");
            write(&conf, &crate::configs::haproxy(port, backend))?;
            let mut command = Command::new(bin);
            command.arg("-db").arg("-f").arg(&conf);
            spawn(command, "HAProxy", &log)?
        }
    };
    let mut running = Running {
        addr,
        proc: Some(proc),
        stop_signal: if matches!(system, System::BarePingora | System::BareTuned) {
            libc::SIGINT
        } else {
            libc::SIGTERM
        },
        _dir: Some(dir),
    };
    wait_ready(&mut running, client).await?;
    Ok(running)
}

fn write(path: &Path, text: &str) -> Result<(), String> {
    std::fs::write(path, text).map_err(|e| format!("write {}: {e}", path.display()))
}

fn start_corral(
    system: System,
    port: u16,
    backend: SocketAddr,
    bin: &Path,
    dir: &Path,
    log: &Path,
) -> Result<Proc, String> {
    // The config sits in a directory of its own: corral watches its config's
    // directory, and a log file beside it would wake the watcher on every line.
    let conf_dir = dir.join("conf");
    std::fs::create_dir(&conf_dir).map_err(|e| format!("mkdir {}: {e}", conf_dir.display()))?;
    let conf = conf_dir.join("corral.yaml");
    write(&conf, &crate::configs::corral(port, free_port()?, backend))?;
    let mut command = Command::new(bin);
    command.arg("serve").arg("--config").arg(&conf);
    // The default is no RUST_LOG at all (info: one access-log line per request, to
    // stderr, which goes to a file here as under a service manager).
    command.env_remove("RUST_LOG").env_remove("CORRAL_LOG_JSON");
    if system == System::CorralNoLog {
        command.env("RUST_LOG", "info,corral::access=off");
    }
    spawn(command, system.label(), log)
}

/// Ready means a chat request through the system gets the backend's answer: for
/// corral that includes its first health probe of the backend.
async fn wait_ready(running: &mut Running, client: &reqwest::Client) -> Result<(), String> {
    let url = format!("http://{}/api/chat", running.addr);
    let ready = poll("a chat answer through the proxy", STARTUP, || async {
        let r = client
            .post(&url)
            .header("content-type", "application/json")
            .body(crate::backends::CHAT_REQUEST)
            .send()
            .await
            .ok()?;
        r.status().is_success().then_some(())
    })
    .await;
    if let Err(e) = ready {
        let why = running
            .check_alive()
            .err()
            .or_else(|| running.proc.as_ref().map(Proc::log_tail))
            .unwrap_or_default();
        return Err(format!("{e}\n{why}"));
    }
    Ok(())
}
