//! `corral sim --tls-cert --tls-key`: the simulator behind HTTPS, to test corral's
//! `https://` backends end to end. The same router, served by hyper over rustls; the
//! handshake runs in each connection's task so a slow client cannot hold the accept
//! loop.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use pingora::tls::TlsAcceptor;
use tokio::net::TcpListener;

use crate::config::TlsConfig;
use crate::tls::ServerCert;

/// Bounds a handshake, as a real server would.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Loads the certificate pair named on the command line.
pub(super) fn acceptor(tls: &TlsConfig) -> anyhow::Result<TlsAcceptor> {
    let cert = Arc::new(ServerCert::load(tls)?);
    Ok(TlsAcceptor::from(crate::tls::server_config(cert)?))
}

pub(super) async fn serve(listener: TcpListener, app: Router, acceptor: TlsAcceptor) {
    loop {
        let tcp = match listener.accept().await {
            Ok((tcp, _)) => tcp,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        // As the plain listener does: tokens are tiny writes.
        let _ = tcp.set_nodelay(true);
        let (acceptor, app) = (acceptor.clone(), app.clone());
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!("TLS handshake timed out");
                    return;
                }
            };
            let service = TowerToHyperService::new(app);
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tls), service);
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
}
