//! The proxy port's certificate: read from PEM files, checked (the key must belong to
//! the leaf certificate), and held in a slot a reload swaps whole. rustls asks the slot
//! at the start of each handshake, so a reload reaches new connections only and never
//! disturbs one that is open.

use std::sync::Arc;

use arc_swap::ArcSwap;
use pingora::tls::sign::CertifiedKey;
use pingora::tls::{ClientHello, ResolvesServerCert};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::PrivateKeyDer;
use sha2::{Digest, Sha256};

use super::TlsError;
use crate::config::TlsConfig;

/// The certificate new TLS connections on the proxy port get.
pub struct ServerCert {
    current: ArcSwap<Loaded>,
}

struct Loaded {
    key: Arc<CertifiedKey>,
    /// Of both files' bytes: a reload that reads the same bytes changes nothing.
    files: [u8; 32],
    /// SHA-256 of the leaf certificate, as `openssl x509 -fingerprint -sha256` prints it.
    fingerprint: String,
}

impl ServerCert {
    /// Reads and checks `tls.cert` and `tls.key`.
    pub fn load(tls: &TlsConfig) -> Result<ServerCert, TlsError> {
        Ok(ServerCert {
            current: ArcSwap::from_pointee(load(tls)?),
        })
    }

    /// Reads the files again and, when their bytes changed and they are valid, serves
    /// them to new connections. `Ok(None)`: the same bytes, nothing to do. On an error
    /// the running certificate stays.
    pub fn reload(&self, tls: &TlsConfig) -> Result<Option<String>, TlsError> {
        let (cert_pem, key_pem) = read_files(tls)?;
        if files_digest(&cert_pem, &key_pem) == self.current.load().files {
            return Ok(None);
        }
        let loaded = parse(tls, &cert_pem, &key_pem)?;
        let fingerprint = loaded.fingerprint.clone();
        self.current.store(Arc::new(loaded));
        Ok(Some(fingerprint))
    }

    /// The served leaf certificate's SHA-256 fingerprint.
    pub fn fingerprint(&self) -> String {
        self.current.load().fingerprint.clone()
    }
}

impl ResolvesServerCert for ServerCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load().key.clone())
    }
}

impl std::fmt::Debug for ServerCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerCert")
            .field("fingerprint", &self.current.load().fingerprint)
            .finish()
    }
}

fn load(tls: &TlsConfig) -> Result<Loaded, TlsError> {
    let (cert_pem, key_pem) = read_files(tls)?;
    parse(tls, &cert_pem, &key_pem)
}

fn read_files(tls: &TlsConfig) -> Result<(Vec<u8>, Vec<u8>), TlsError> {
    Ok((
        super::read("tls.cert", &tls.cert)?,
        super::read("tls.key", &tls.key)?,
    ))
}

fn files_digest(cert_pem: &[u8], key_pem: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update((cert_pem.len() as u64).to_le_bytes());
    h.update(cert_pem);
    h.update(key_pem);
    h.finalize().into()
}

fn parse(tls: &TlsConfig, cert_pem: &[u8], key_pem: &[u8]) -> Result<Loaded, TlsError> {
    let chain = super::certificates("tls.cert", &tls.cert, cert_pem)?;
    // The key's bytes never appear in a message: PEM errors name the problem only.
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| TlsError::Invalid {
        setting: "tls.key",
        path: tls.key.display().to_string(),
        why: match e {
            rustls_pki_types::pem::Error::NoItemsFound => "no private key in the file \
                (expected PEM `BEGIN PRIVATE KEY`, `RSA PRIVATE KEY` or `EC PRIVATE KEY`)"
                .to_string(),
            other => format!("not a readable PEM private key ({other})"),
        },
    })?;
    let fingerprint = fingerprint(&chain[0]);
    let provider = super::crypto_provider()?;
    // Checks that the key is usable and belongs to the leaf certificate (which also
    // parses that certificate).
    let key = CertifiedKey::from_der(chain, key, provider).map_err(|e| TlsError::Mismatch {
        cert: tls.cert.display().to_string(),
        key: tls.key.display().to_string(),
        why: e.to_string(),
    })?;
    Ok(Loaded {
        key: Arc::new(key),
        files: files_digest(cert_pem, key_pem),
        fingerprint,
    })
}

fn fingerprint(der: &[u8]) -> String {
    let digest = Sha256::digest(der);
    let hex: Vec<String> = digest.iter().map(|b| format!("{b:02X}")).collect();
    hex.join(":")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_pair(dir: &std::path::Path, names: &[&str]) -> TlsConfig {
        let made = rcgen::generate_simple_self_signed(
            names.iter().map(|n| n.to_string()).collect::<Vec<_>>(),
        )
        .unwrap();
        let cert = dir.join("tls.crt");
        let key = dir.join("tls.key");
        std::fs::write(&cert, made.cert.pem()).unwrap();
        std::fs::write(&key, made.signing_key.serialize_pem()).unwrap();
        TlsConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            cert,
            key,
        }
    }

    #[test]
    fn a_changed_pair_is_swapped_and_an_unchanged_one_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let tls = write_pair(dir.path(), &["a.test"]);
        let served = ServerCert::load(&tls).unwrap();
        let first = served.fingerprint();
        assert_eq!(served.reload(&tls).unwrap(), None);
        write_pair(dir.path(), &["b.test"]);
        let second = served.reload(&tls).unwrap().expect("swapped");
        assert_ne!(first, second);
        assert_eq!(served.fingerprint(), second);
    }

    #[test]
    fn bad_files_are_refused_and_the_running_pair_stays() {
        let dir = tempfile::tempdir().unwrap();
        let tls = write_pair(dir.path(), &["a.test"]);
        let served = ServerCert::load(&tls).unwrap();
        let running = served.fingerprint();

        std::fs::write(&tls.cert, "not a certificate\n").unwrap();
        let e = served.reload(&tls).unwrap_err().to_string();
        assert!(e.starts_with("tls.cert "), "{e}");
        assert!(e.contains("no certificate in the file"), "{e}");

        // A valid certificate with someone else's key.
        let other = tempfile::tempdir().unwrap();
        let foreign = write_pair(other.path(), &["c.test"]);
        write_pair(dir.path(), &["a.test"]);
        std::fs::copy(&foreign.key, &tls.key).unwrap();
        let e = served.reload(&tls).unwrap_err().to_string();
        assert!(e.contains("does not belong to tls.cert"), "{e}");

        std::fs::write(&tls.key, "").unwrap();
        let e = served.reload(&tls).unwrap_err().to_string();
        assert!(e.contains("no private key in the file"), "{e}");

        std::fs::remove_file(&tls.key).unwrap();
        let e = ServerCert::load(&tls).unwrap_err().to_string();
        assert!(e.starts_with("tls.key "), "{e}");
        assert_eq!(served.fingerprint(), running);
    }
}
