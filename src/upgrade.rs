//! Zero-downtime binary upgrade. A new `corral serve --upgrade` takes every listening
//! socket of the running corral — proxy, admin and cluster peer ports — over a unix
//! socket, so no port is ever closed and no connection is refused: connections that
//! arrive while neither process accepts wait in the socket's backlog.
//!
//! The old side is Pingora's: on SIGQUIT it sends its listening-fd table (corral puts
//! the admin and peer sockets there too, under [`admin_key`] and [`cluster_key`]),
//! waits 5 s, stops accepting and finishes what is in flight. The new side is corral's
//! own, not Pingora's `Opt::upgrade`: Pingora would receive the sockets into a table
//! that only its services see once they start, while corral needs them before it
//! builds anything, since it binds (or here, adopts) every socket up front.

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::config::Config;

/// How long `serve --upgrade` waits for the old process to send its sockets.
const RECEIVE_WINDOW: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum UpgradeError {
    #[error("upgrade socket {path}: {source}")]
    Socket {
        path: String,
        source: std::io::Error,
    },
    #[error("upgrade socket {0}: not a UTF-8 path")]
    NotUtf8(String),
    #[error(
        "no listening sockets arrived on {path} within {}s: send SIGQUIT to the running \
         corral (its upgrade_sock must be this path)",
        RECEIVE_WINDOW.as_secs()
    )]
    NothingReceived { path: String },
}

/// The fd-table key of the admin listener (the proxy's are the bare addresses).
pub fn admin_key(addr: SocketAddr) -> String {
    format!("admin/{addr}")
}

/// The fd-table key of the cluster peer listener.
pub fn cluster_key(addr: SocketAddr) -> String {
    format!("cluster/{addr}")
}

/// Where the old process sends its sockets: `upgrade_sock`, else `upgrade.sock` in the
/// state directory, else a name in the temp directory unique to the config file (or,
/// without one, to the proxy's addresses), so two corrals on one host never meet.
pub fn socket_path(config: &Config, config_path: Option<&Path>) -> PathBuf {
    if let Some(p) = &config.upgrade_sock {
        return p.clone();
    }
    if let Some(dir) = crate::admin::persist::state_dir(config) {
        return dir.join("upgrade.sock");
    }
    let identity = match config_path {
        Some(p) => std::fs::canonicalize(p)
            .unwrap_or_else(|_| p.to_path_buf())
            .display()
            .to_string(),
        None => format!("{:?}", config.listen),
    };
    let hash = xxhash_rust::xxh3::xxh3_64(identity.as_bytes());
    std::env::temp_dir().join(format!("corral-upgrade-{hash:016x}.sock"))
}

/// Listening sockets received from the old process, by fd-table key. Whatever is not
/// taken is closed on drop: a listening socket nobody accepts on would swallow
/// connections.
#[derive(Default)]
pub struct Inherited {
    fds: HashMap<String, OwnedFd>,
}

impl Inherited {
    /// Nothing inherited: a plain start.
    pub fn none() -> Inherited {
        Inherited::default()
    }

    /// The socket the old process listened on under `key`, if it sent one.
    pub fn take(&mut self, key: &str) -> Option<TcpListener> {
        self.fds.remove(key).map(TcpListener::from)
    }
}

impl Drop for Inherited {
    fn drop(&mut self) {
        if !self.fds.is_empty() {
            let keys: Vec<&String> = self.fds.keys().collect();
            tracing::warn!(
                ?keys,
                "closing inherited sockets this config no longer listens on"
            );
        }
    }
}

/// Waits (up to a minute) for the running corral to send its listening sockets to
/// `path`. Blocking: call before any runtime starts.
pub fn receive(path: &Path) -> Result<Inherited, UpgradeError> {
    let shown = path.display().to_string();
    let text = path
        .to_str()
        .ok_or_else(|| UpgradeError::NotUtf8(shown.clone()))?;
    // Pingora's receiver panics when it cannot bind; find out here instead.
    let _ = std::fs::remove_file(path);
    std::os::unix::net::UnixListener::bind(path).map_err(|source| UpgradeError::Socket {
        path: shown.clone(),
        source,
    })?;
    tracing::info!(socket = %shown, "waiting for the running corral's sockets (send it SIGQUIT)");
    let deadline = Instant::now() + RECEIVE_WINDOW;
    let mut fds = pingora::server::Fds::new();
    // Each attempt listens for about 6 s (Pingora's retries); the sender retries too.
    while fds.get_from_sock(text).is_err() {
        if Instant::now() >= deadline {
            let _ = std::fs::remove_file(path);
            return Err(UpgradeError::NothingReceived { path: shown });
        }
    }
    // A socket file left behind would tell the next SIGQUIT a successor is waiting.
    let _ = std::fs::remove_file(path);
    let (keys, raw) = fds.serialize();
    let fds = keys
        .into_iter()
        .zip(raw)
        // SAFETY: each fd was just received over SCM_RIGHTS and nothing else owns it.
        .map(|(k, fd)| (k, unsafe { OwnedFd::from_raw_fd(fd) }))
        .collect::<HashMap<_, _>>();
    tracing::info!(sockets = fds.len(), "received the listening sockets");
    Ok(Inherited { fds })
}

/// Whether a `serve --upgrade` is listening on `path`: its socket file exists. The
/// receiver removes it once served, so a finished upgrade leaves none behind.
pub fn successor_waiting(path: &Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket())
}

/// Starts the new binary as `serve --upgrade` with this process's own arguments, as a
/// child so that under systemd it runs in the service's cgroup and can become its main
/// process. The binary is the path this process was started as (a package upgrade
/// replaces that file; `/proc/self/exe` would still be the old one).
pub fn spawn_successor() -> std::io::Result<std::process::Child> {
    let mut args = std::env::args_os();
    let argv0 = args.next().map(PathBuf::from);
    let exe = match argv0 {
        Some(p) if p.components().count() > 1 => p,
        _ => std::env::current_exe()?,
    };
    let mut args: Vec<_> = args.collect();
    if !args.iter().any(|a| a == "--upgrade") {
        args.push("--upgrade".into());
    }
    std::process::Command::new(exe)
        .args(args)
        .stdin(std::process::Stdio::null())
        // systemd names the watchdog's process; the successor names itself (MAINPID).
        .env_remove("WATCHDOG_PID")
        .spawn()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(yaml: &str) -> Config {
        Config::parse(yaml, "t").expect("config")
    }

    #[test]
    fn socket_path_prefers_the_setting_then_the_state_dir() {
        let c = config("upgrade_sock: /run/corral/up.sock\nstate_dir: /var/lib/corral");
        assert_eq!(socket_path(&c, None), PathBuf::from("/run/corral/up.sock"));
        let c = config("state_dir: /var/lib/corral");
        assert_eq!(
            socket_path(&c, None),
            PathBuf::from("/var/lib/corral/upgrade.sock")
        );
    }

    #[test]
    fn two_config_files_get_two_sockets() {
        let c = config("listen: 127.0.0.1:1");
        let a = socket_path(&c, Some(Path::new("/etc/corral/a.yaml")));
        let b = socket_path(&c, Some(Path::new("/etc/corral/b.yaml")));
        assert_ne!(a, b);
        assert_eq!(a, socket_path(&c, Some(Path::new("/etc/corral/a.yaml"))));
    }
}
