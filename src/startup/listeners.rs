//! The listening sockets, bound by corral before Pingora starts. Pingora would bind the
//! proxy's addresses itself, retrying a taken port for 30 s and then panicking inside a
//! service task while the process lives on; binding here makes a taken port an error
//! before anything runs. The sockets are not probed and closed (another process could
//! take the port in between): they are handed over, the proxy's through Pingora's
//! listening-fd table (the graceful-upgrade path), the admin and cluster ones directly.
//! In an upgrade, sockets the old process sent are adopted instead of bound, and the
//! admin and cluster ones join the fd table too, so the next upgrade passes them on.

use std::net::{SocketAddr, TcpListener};
use std::os::fd::{IntoRawFd, OwnedFd};
use std::sync::Arc;

use async_trait::async_trait;
use pingora::server::{ListenFds, ShutdownWatch};
use pingora::services::Service;

use super::StartupError;
use crate::config::Config;
use crate::readiness::Readiness;
use crate::upgrade::{admin_key, cluster_key, Inherited};

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
    /// Copies of the admin and cluster sockets, by fd-table key, for the next upgrade.
    pub handover: Vec<(String, OwnedFd)>,
}

/// Binds all of `config`'s listen addresses, or fails on the first that cannot be.
pub fn bind(config: &Config) -> Result<Listeners, StartupError> {
    bind_or_adopt(config, &mut Inherited::none())
}

/// [`bind`], taking each address's socket from `inherited` when the old process sent
/// one (an upgrade), and binding the rest.
pub fn bind_or_adopt(
    config: &Config,
    inherited: &mut Inherited,
) -> Result<Listeners, StartupError> {
    let mut one = |setting, key: String, addr| match inherited.take(&key) {
        Some(socket) => adopt(setting, addr, socket),
        None => bind_one(setting, addr),
    };
    let proxy = config
        .listen
        .iter()
        .map(|a| Ok((a.to_string(), one("listen", a.to_string(), *a)?)))
        .collect::<Result<_, StartupError>>()?;
    // The TLS port sits in Pingora's fd table under its address, like the plain ones.
    let tls = match &config.tls {
        Some(t) => {
            let key = t.listen.to_string();
            Some((key.clone(), one("tls.listen", key, t.listen)?))
        }
        None => None,
    };
    let admin_addr = config.admin.listen;
    let admin = one("admin.listen", admin_key(admin_addr), admin_addr)?;
    let cluster = match &config.cluster {
        Some(c) => Some(one("cluster.listen", cluster_key(c.listen), c.listen)?),
        None => None,
    };
    let mut handover = vec![(
        admin_key(admin_addr),
        copy("admin.listen", admin_addr, &admin)?,
    )];
    if let (Some(c), Some(socket)) = (&config.cluster, &cluster) {
        handover.push((
            cluster_key(c.listen),
            copy("cluster.listen", c.listen, socket)?,
        ));
    }
    Ok(Listeners {
        proxy,
        tls,
        admin,
        cluster,
        handover,
    })
}

fn adopt(
    setting: &'static str,
    addr: SocketAddr,
    socket: TcpListener,
) -> Result<TcpListener, StartupError> {
    socket
        .set_nonblocking(true)
        .map_err(|source| StartupError::Bind {
            setting,
            addr,
            source,
        })?;
    Ok(socket)
}

fn copy(
    setting: &'static str,
    addr: SocketAddr,
    socket: &TcpListener,
) -> Result<OwnedFd, StartupError> {
    let err = |source| StartupError::Bind {
        setting,
        addr,
        source,
    };
    Ok(socket.try_clone().map_err(err)?.into())
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
    handover: Vec<(String, OwnedFd)>,
    readiness: Arc<Readiness>,
    wait_for_probes: bool,
}

impl<S> PreBound<S> {
    /// `sockets` must be keyed by the same strings the service was given in `add_tcp`;
    /// `handover` (the admin and cluster sockets) rides along in Pingora's fd table, so
    /// that SIGQUIT sends them to the next process too.
    pub fn new(
        inner: S,
        sockets: Vec<(String, TcpListener)>,
        handover: Vec<(String, OwnedFd)>,
        readiness: Arc<Readiness>,
    ) -> PreBound<S> {
        PreBound {
            inner,
            sockets,
            handover,
            readiness,
            wait_for_probes: false,
        }
    }

    /// Accept nothing until the first probe round is done. For an upgrade's new
    /// process: the old one still accepts on the same sockets meanwhile, and a
    /// connection neither accepts waits in the backlog, where a 503 would be an error.
    pub fn wait_for_probes(mut self) -> PreBound<S> {
        self.wait_for_probes = true;
        self
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
        let handover = std::mem::take(&mut self.handover);
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
            // The table never closes what it holds: these live as long as the process.
            for (key, fd) in handover {
                table.add(key, fd.into_raw_fd());
            }
        } else {
            tracing::warn!("no listening-fd table from Pingora; its listeners bind on their own");
        }
        if self.wait_for_probes {
            self.readiness.probed().await;
            tracing::info!("first probe round done: accepting on the inherited sockets");
        }
        self.readiness.set_accepting();
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
