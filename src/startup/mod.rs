//! What `serve` refuses before it starts anything, in one function that `corral check`
//! and a hot reload run as well, so none of them can say ok to a file another refuses;
//! and (in `listeners`) the sockets, bound before Pingora starts so that a taken port is
//! an error at start-up instead of a retry loop behind a ready `/readyz`.

pub mod listeners;

use std::net::SocketAddr;

use crate::admin::auth::TokenError;
use crate::admin::persist::PersistError;
use crate::config::Config;
use crate::pool::Pool;

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Admin(#[from] TokenError),
    #[error(transparent)]
    State(#[from] PersistError),
    #[error("cluster: {0}")]
    Cluster(String),
    #[error("{first} {a} and {second} {b} cannot both listen there (same port)")]
    SharedAddress {
        first: &'static str,
        a: SocketAddr,
        second: &'static str,
        b: SocketAddr,
    },
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    #[error("cannot listen on {addr} ({setting}): {source}")]
    Bind {
        setting: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// A config that passed [`prepare`], and the pool it starts with. Only `prepare` makes
/// one, so a server cannot be built from an unchecked config.
pub struct Prepared {
    pub pool: Pool,
    /// The proxy port's certificate, when `tls` is set.
    pub server_cert: Option<std::sync::Arc<crate::tls::ServerCert>>,
    pub backend_trust: crate::tls::BackendTrust,
}

/// Everything about a config that can be judged without binding a socket: the admin
/// token resolves and a non-loopback admin listener has one, no two listeners share an
/// address, the Raft settings are valid, and the TLS certificate, key and backend CA
/// files load. Hot reload runs it on the file as written and on the config that will
/// actually serve.
pub fn validate(config: &Config) -> Result<(), StartupError> {
    crate::admin::auth::check_config(config)?;
    check_addresses(config)?;
    if let Some(cluster) = &config.cluster {
        crate::cluster::raft_config(cluster).map_err(StartupError::Cluster)?;
    }
    crate::tls::check(config)?;
    Ok(())
}

/// [`validate`], then the state file's run-time backends and drain flags (read, never
/// written). `serve` starts from the result; `corral check` stops after it.
pub fn prepare(config: Config) -> Result<Prepared, StartupError> {
    validate(&config)?;
    let server_cert = match &config.tls {
        Some(tls) => Some(std::sync::Arc::new(crate::tls::ServerCert::load(tls)?)),
        None => None,
    };
    let backend_trust = crate::tls::BackendTrust::load(&config)?;
    let pool = crate::admin::persist::restore_pool(config)?;
    Ok(Prepared {
        pool,
        server_cert,
        backend_trust,
    })
}

/// Every address this config listens on, named by its setting.
pub fn listen_addresses(config: &Config) -> Vec<(&'static str, SocketAddr)> {
    let mut out: Vec<_> = config.listen.iter().map(|a| ("listen", *a)).collect();
    if let Some(tls) = &config.tls {
        out.push(("tls.listen", tls.listen));
    }
    out.push(("admin.listen", config.admin.listen));
    if let Some(c) = &config.cluster {
        out.push(("cluster.listen", c.listen));
    }
    out
}

fn check_addresses(config: &Config) -> Result<(), StartupError> {
    let all = listen_addresses(config);
    for (i, &(first, a)) in all.iter().enumerate() {
        for &(second, b) in &all[i + 1..] {
            if overlap(a, b) {
                return Err(StartupError::SharedAddress {
                    first,
                    a,
                    second,
                    b,
                });
            }
        }
    }
    Ok(())
}

/// Whether binding both would fail with "address in use": the same port and the same
/// IP, or a wildcard that covers the other (`[::]` covers IPv4 too on Linux's default
/// dual-stack sockets). Port 0 asks for any free port, so it never collides.
fn overlap(a: SocketAddr, b: SocketAddr) -> bool {
    if a.port() != b.port() || a.port() == 0 {
        return false;
    }
    let covers =
        |w: SocketAddr, o: SocketAddr| w.ip().is_unspecified() && (w.is_ipv6() || o.is_ipv4());
    a.ip() == b.ip() || covers(a, b) || covers(b, a)
}

#[cfg(test)]
mod tests;
