//! What `https://` backends are trusted with. By default the system's roots, which is
//! what Pingora's upstream connector loads; with `backend_tls.ca`, that file's
//! certificates instead, for the proxy (Pingora's `ca_file`) and for corral's own
//! clients (health probes, prewarm, fan-out) alike: a probe that trusted more or less
//! than the proxy would mark backends up that the proxy cannot reach, or the reverse.

use std::path::Path;

use super::TlsError;
use crate::config::Config;

/// Loaded at start; `backend_tls` changes apply after a restart, since Pingora builds
/// its connector once.
#[derive(Clone, Default)]
pub struct BackendTrust {
    ca: Option<Ca>,
}

#[derive(Clone)]
struct Ca {
    path: String,
    certs: Vec<reqwest::Certificate>,
}

impl BackendTrust {
    pub fn load(config: &Config) -> Result<BackendTrust, TlsError> {
        let Some(backend_tls) = &config.backend_tls else {
            return Ok(BackendTrust::default());
        };
        let path = &backend_tls.ca;
        let pem = super::read("backend_tls.ca", path)?;
        let ders = super::certificates("backend_tls.ca", path, &pem)?;
        check_like_pingora(path)?;
        let certs = ders
            .iter()
            .map(|der| reqwest::Certificate::from_der(der))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| invalid(path, e.to_string()))?;
        Ok(BackendTrust {
            ca: Some(Ca {
                path: path.display().to_string(),
                certs,
            }),
        })
    }

    /// For Pingora's `ServerConf.ca_file`: the CA file, or none for the system's roots.
    pub fn ca_file(&self) -> Option<String> {
        self.ca.as_ref().map(|ca| ca.path.clone())
    }

    /// A client builder for corral's own requests to backends, trusting what the proxy
    /// trusts.
    pub fn client_builder(&self) -> reqwest::ClientBuilder {
        let builder = reqwest::Client::builder();
        match &self.ca {
            None => builder,
            Some(ca) => ca
                .certs
                .iter()
                .fold(builder.tls_built_in_root_certs(false), |b, c| {
                    b.add_root_certificate(c.clone())
                }),
        }
    }
}

/// Pingora loads the CA file itself when the proxy starts and panics on what it cannot
/// load (any PEM block that is not a certificate, a certificate webpki cannot take as
/// a root); its own loader is the only sure check.
fn check_like_pingora(path: &Path) -> Result<(), TlsError> {
    let mut store = pingora::tls::RootCertStore::empty();
    pingora::tls::load_ca_file_into_store(path, &mut store)
        .map_err(|e| invalid(path, format!("cannot be used as CA certificates ({e})")))
}

fn invalid(path: &Path, why: String) -> TlsError {
    TlsError::Invalid {
        setting: "backend_tls.ca",
        path: path.display().to_string(),
        why,
    }
}
