//! The TLS port. Its socket is a plain TCP listener of the proxy service, like the
//! `listen` ones; the handshake runs in the proxy's own connection loop
//! (`proxy::header_deadline`) rather than in Pingora's listener, so that it counts
//! against the request-header deadline — Pingora's own handshake timeout is a fixed
//! 60 s — and so that every protection of the plain port holds on this one too. No ALPN
//! is offered: clients speak HTTP/1.1, the loop the deadlines are built into.

use std::net::SocketAddr;
use std::sync::Arc;

use pingora::listeners::tls::{Acceptor, TlsSettings};
use pingora::protocols::l4::stream::Stream as TcpStream;
use pingora::protocols::Stream;
use pingora::{Error, ErrorType};

use super::{ServerCert, TlsError};

pub struct TlsPort {
    /// As bound (a port 0 resolved).
    addr: SocketAddr,
    acceptor: Acceptor,
}

impl TlsPort {
    pub fn new(addr: SocketAddr, cert: Arc<ServerCert>) -> Result<TlsPort, TlsError> {
        // The paths are unused: a resolver, when set, replaces them.
        let mut settings =
            TlsSettings::intermediate("", "").map_err(|e| TlsError::Setup(e.to_string()))?;
        settings.set_cert_resolver(cert);
        Ok(TlsPort {
            addr,
            acceptor: settings.build(),
        })
    }

    /// Whether `stream` was accepted on this port. One proxy service serves every
    /// listener, so its connections are told apart by their local address; start-up
    /// refuses a plain listener that overlaps this one (`startup::validate`).
    pub fn accepted(&self, stream: &Stream) -> bool {
        let local = stream
            .get_socket_digest()
            .and_then(|d| d.local_addr().and_then(|a| a.as_inet()).copied());
        local.is_some_and(|l| {
            l == self.addr || (self.addr.ip().is_unspecified() && l.port() == self.addr.port())
        })
    }

    /// The TLS handshake on a just-accepted connection.
    pub async fn handshake(&self, stream: Stream) -> pingora::Result<Stream> {
        let tcp = stream.into_any().downcast::<TcpStream>().map_err(|_| {
            Error::explain(
                ErrorType::InternalError,
                "a TLS-port connection is not a plain TCP stream",
            )
        })?;
        let tls = self.acceptor.tls_handshake(*tcp).await?;
        Ok(Box::new(tls))
    }
}

/// A rustls server config serving `cert`, for servers outside Pingora (`corral sim
/// --tls-cert`).
pub fn server_config(cert: Arc<ServerCert>) -> Result<Arc<pingora::tls::ServerConfig>, TlsError> {
    let provider = super::crypto_provider()?.clone();
    let config = pingora::tls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Setup(e.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(cert);
    Ok(Arc::new(config))
}
