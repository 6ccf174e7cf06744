//! The listening sockets, bound by corral before Pingora starts. Pingora would bind the
//! proxy's addresses itself, retrying a taken port for 30 s and then panicking inside a
//! service task while the process lives on; binding here makes a taken port an error
//! before anything runs. The sockets are not probed and closed (another process could
//! take the port in between): they are handed over, the proxy's through Pingora's
//! listening-fd table (the graceful-upgrade path), the admin and cluster ones directly.

use std::net::{SocketAddr, TcpListener};
use std::os::fd::IntoRawFd;

use async_trait::async_trait;
use pingora::server::{ListenFds, ShutdownWatch};
use pingora::services::Service;

use super::StartupError;
use crate::config::Config;

/// Every socket a config listens on, bound and in non-blocking mode (what tokio and
/// Pingora's fd adoption expect).
pub struct Listeners {
    /// Keyed by the address string the proxy service is given: Pingora looks its fd
    /// table up by that string.
    pub proxy: Vec<(String, TcpListener)>,
    /// The TLS port, keyed like `proxy`: the same service serves it.
    pub tls: Option<(String, TcpListener)>,
    pub admin: TcpListener,
    pub cluster: Option<TcpListener>,
}

/// Binds all of `config`'s listen addresses, or fails on the first that cannot be.
pub fn bind(config: &Config) -> Result<Listeners, StartupError> {
    let proxy = config
        .listen
        .iter()
        .map(|a| Ok((a.to_string(), bind_one("listen", *a)?)))
        .collect::<Result<_, StartupError>>()?;
    let tls = match &config.tls {
        Some(t) => Some((t.listen.to_string(), bind_one("tls.listen", t.listen)?)),
        None => None,
    };
    let admin = bind_one("admin.listen", config.admin.listen)?;
    let cluster = match &config.cluster {
        Some(c) => Some(bind_one("cluster.listen", c.listen)?),
        None => None,
    };
    Ok(Listeners {
        proxy,
        tls,
        admin,
        cluster,
    })
}

fn bind_one(setting: &'static str, addr: SocketAddr) -> Result<TcpListener, StartupError> {
    let err = |source| StartupError::Bind {
        setting,
        addr,
        source,
    };
    // std sets SO_REUSEADDR on Unix, as Pingora's own bind does.
    let listener = TcpListener::bind(addr).map_err(err)?;
    listener.set_nonblocking(true).map_err(err)?;
    Ok(listener)
}

/// A Pingora listening service whose sockets corral bound beforehand.
pub struct PreBound<S> {
    inner: S,
    sockets: Vec<(String, TcpListener)>,
}

impl<S> PreBound<S> {
    /// `sockets` must be keyed by the same strings the service was given in `add_tcp`.
    pub fn new(inner: S, sockets: Vec<(String, TcpListener)>) -> PreBound<S> {
        PreBound { inner, sockets }
    }
}

#[async_trait]
impl<S: Service> Service for PreBound<S> {
    async fn start_service(
        &mut self,
        fds: Option<ListenFds>,
        shutdown: ShutdownWatch,
        listeners_per_fd: usize,
    ) {
        let sockets = std::mem::take(&mut self.sockets);
        // Pingora 0.9.1 always passes its table on Unix; the service takes an address's
        // fd from it instead of binding. An entry already there came from a graceful
        // upgrade and wins; ours is then closed.
        if let Some(table) = &fds {
            let mut table = table.lock();
            for (addr, socket) in sockets {
                if table.get(&addr).is_none() {
                    table.add(addr, socket.into_raw_fd());
                }
            }
        } else {
            tracing::warn!("no listening-fd table from Pingora; its listeners bind on their own");
        }
        self.inner
            .start_service(fds, shutdown, listeners_per_fd)
            .await
    }

    fn name(&self) -> &str {
        self.inner.name()
    }

    fn threads(&self) -> Option<usize> {
        self.inner.threads()
    }

    fn runtime_opts_override(
        &self,
        global: &pingora::server::RuntimeOpts,
    ) -> Option<pingora::server::RuntimeOpts> {
        self.inner.runtime_opts_override(global)
    }

    fn listen_addresses(&self) -> Option<Vec<String>> {
        self.inner.listen_addresses()
    }
}
