//! TLS in both directions. Inbound: the proxy port's certificate, loaded from PEM files
//! and swapped whole on reload (`cert`), and the handshake the proxy's connection loop
//! runs on the TLS port (`listener`). Outbound: what `https://` backends are trusted
//! with, shared by Pingora's connector and corral's own HTTP clients (`backend`).

mod backend;
mod cert;
mod listener;

pub use backend::BackendTrust;
pub use cert::ServerCert;
pub use listener::{server_config, TlsPort};

use crate::config::Config;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{setting} {path}: {source}")]
    Read {
        setting: &'static str,
        path: String,
        source: std::io::Error,
    },
    #[error("{setting} {path}: {why}")]
    Invalid {
        setting: &'static str,
        path: String,
        why: String,
    },
    #[error("tls.key {key} does not belong to tls.cert {cert}: {why}")]
    Mismatch {
        cert: String,
        key: String,
        why: String,
    },
    #[error("TLS setup: {0}")]
    Setup(String),
}

/// What `startup::validate` asks of a config's TLS settings: the certificate and key
/// load and belong together, and the backend CA file loads. Nothing is kept.
pub fn check(config: &Config) -> Result<(), TlsError> {
    if let Some(tls) = &config.tls {
        ServerCert::load(tls)?;
    }
    BackendTrust::load(config)?;
    Ok(())
}

/// rustls needs one crypto provider per process; Pingora installs `ring` the same way,
/// and whichever runs first wins with the same choice.
fn crypto_provider() -> Result<&'static std::sync::Arc<pingora::tls::CryptoProvider>, TlsError> {
    pingora::tls::install_default_crypto_provider();
    pingora::tls::CryptoProvider::get_default()
        .ok_or_else(|| TlsError::Setup("no rustls crypto provider installed".to_string()))
}

/// Reads a PEM file named by `setting`.
fn read(setting: &'static str, path: &std::path::Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        setting,
        path: path.display().to_string(),
        source,
    })
}

/// Every certificate in a PEM file, in order; an error if there is none.
fn certificates(
    setting: &'static str,
    path: &std::path::Path,
    pem: &[u8],
) -> Result<Vec<rustls_pki_types::CertificateDer<'static>>, TlsError> {
    use rustls_pki_types::pem::PemObject;
    let invalid = |why: String| TlsError::Invalid {
        setting,
        path: path.display().to_string(),
        why,
    };
    let certs = rustls_pki_types::CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(format!("not a readable PEM file ({e})")))?;
    if certs.is_empty() {
        return Err(invalid(
            "no certificate in the file (expected PEM `BEGIN CERTIFICATE` blocks)".to_string(),
        ));
    }
    Ok(certs)
}
