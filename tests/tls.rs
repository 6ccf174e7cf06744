//! TLS end to end with certificates made in the test (rcgen): the proxy's TLS port
//! streams a chat and keeps its header deadline, plain HTTP there gets nothing, a
//! replaced certificate reaches new connections (SIGHUP or a change of its file) while
//! a stream opened before goes on, an invalid one keeps the running one; and an
//! `https://` backend (`corral sim --tls-cert`) is probed, proxied to and fanned out to
//! with `backend_tls.ca`, and refused without it.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use futures::StreamExt;
use rustls_pki_types::pem::PemObject;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A self-signed certificate for these names and its key, both PEM.
struct Pem {
    cert: String,
    key: String,
}

fn self_signed(names: &[&str]) -> Pem {
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let made = rcgen::generate_simple_self_signed(names).expect("rcgen");
    Pem {
        cert: made.cert.pem(),
        key: made.signing_key.serialize_pem(),
    }
}

/// Replaces `path` in one step (write aside, rename), as certificate tools do.
fn replace(path: &Path, text: &str) {
    let tmp = path.with_extension("next");
    std::fs::write(&tmp, text).expect("write");
    std::fs::rename(&tmp, path).expect("rename");
}

struct PemFiles {
    cert: PathBuf,
    key: PathBuf,
}

fn write_pem(dir: &Path, name: &str, pem: &Pem) -> PemFiles {
    let files = PemFiles {
        cert: dir.join(format!("{name}.crt")),
        key: dir.join(format!("{name}.key")),
    };
    // Key first: a reload between the two writes sees a mismatch and is refused; the
    // certificate's own change then reloads the pair.
    replace(&files.key, &pem.key);
    replace(&files.cert, &pem.cert);
    files
}

/// A client that trusts `pem` only, on a new connection per request.
fn trusting(pem: &Pem) -> reqwest::Client {
    let root = reqwest::Certificate::from_pem(pem.cert.as_bytes()).expect("root");
    reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(root)
        .pool_max_idle_per_host(0)
        .build()
        .expect("client")
}

fn tls_yaml(port: u16, files: &PemFiles) -> String {
    format!(
        "tls: {{listen: '127.0.0.1:{port}', cert: '{}', key: '{}'}}\n",
        files.cert.display(),
        files.key.display()
    )
}

async fn answers(client: &reqwest::Client, url: &str) -> bool {
    client
        .head(url)
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
}

/// Whether a new client trusting `pem` alone gets an answer: new, so that it cannot
/// resume a TLS session made under an earlier certificate (a resumed session presents
/// no certificate).
async fn serves(pem: &Pem, url: &str) -> bool {
    answers(&trusting(pem), url).await
}

/// For `wait_for`: `Some` once [`serves`].
async fn served(pem: &Pem, url: &str) -> Option<()> {
    serves(pem, url).await.then_some(())
}

fn chat(num_predict: u32) -> Value {
    json!({
        "model": "llama3",
        "messages": [{"role": "user", "content": "hi"}],
        "stream": true,
        "options": {"num_predict": num_predict}
    })
}

fn reload_counts(status: &Value) -> (u64, u64) {
    let r = &status["reloads"];
    (
        r["successes"].as_u64().unwrap_or(0),
        r["failures"].as_u64().unwrap_or(0),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_streams_over_tls_and_plain_http_there_gets_nothing() {
    let sim = start_sim(&["--models", "llama3", "--tokens-per-sec", "500"]);
    let certs = tempfile::tempdir().expect("tempdir");
    let pem = self_signed(&["localhost", "127.0.0.1"]);
    let files = write_pem(certs.path(), "tls", &pem);
    let port = free_port();
    let yaml = format!(
        "timeouts: {{header: 1s}}\n{}{}",
        tls_yaml(port, &files),
        backends_yaml(&[&sim], 2)
    );
    let c = start_corral(&yaml).await;
    let https = format!("https://127.0.0.1:{port}");
    let client = trusting(&pem);
    wait_for("the TLS port to answer", || served(&pem, &https)).await;
    wait_routable(&c, &["llama3"]).await;

    let resp = client
        .post(format!("{https}/api/chat"))
        .json(&chat(20))
        .send()
        .await
        .expect("chat over TLS");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-corral-backend"], "b0");
    let lines = read_lines(resp).await.expect("stream");
    // One NDJSON line per token, then the final chunk.
    assert_eq!(lines.len(), 21, "{lines:?}");
    let last: Value = serde_json::from_str(lines.last().expect("lines")).expect("json");
    assert_eq!(last["done"], true, "{last}");

    // Plain HTTP on the TLS port is not a ClientHello: the connection just ends.
    let plain = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{port}/"))
        .send();
    assert!(plain.await.is_err());
    // Nor does the plain port speak TLS.
    assert!(client
        .get(format!("https://{}/", c.addr))
        .send()
        .await
        .is_err());
    // A client that does not trust the certificate does not get through.
    let stranger = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .build()
        .expect("client");
    assert!(stranger.head(&https).send().await.is_err());

    // The header deadline holds here too, handshake included: a client that connects
    // and says nothing is closed at `timeouts.header`, not after Pingora's 60 s.
    let mut silent = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(DEADLINE, silent.read(&mut buf)).await;
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "a silent connection stayed open"
    );
    // And after the handshake: a header that never ends is cut the same way.
    let mut slow = handshake(&pem, port).await;
    slow.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
        .await
        .expect("write");
    let read = tokio::time::timeout(DEADLINE, slow.read(&mut buf)).await;
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "an unfinished header over TLS kept its connection"
    );
}

/// A TLS connection to 127.0.0.1:`port`, trusting `pem`, with nothing sent yet.
async fn handshake(pem: &Pem, port: u16) -> pingora::tls::ClientTlsStream<tokio::net::TcpStream> {
    use pingora::tls::{ClientConfig, RootCertStore, ServerName, TlsConnector};
    pingora::tls::install_default_crypto_provider();
    let mut roots = RootCertStore::empty();
    for cert in rustls_pki_types::CertificateDer::pem_slice_iter(pem.cert.as_bytes()) {
        roots.add(cert.expect("cert")).expect("root");
    }
    let config = ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let name = ServerName::try_from("127.0.0.1").expect("name");
    TlsConnector::from(std::sync::Arc::new(config))
        .connect(name, tcp)
        .await
        .expect("handshake")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_certificate_reaches_new_connections_and_open_streams_go_on() {
    // 300 tokens at 50 a second: a stream that spans the reloads below.
    let sim = start_sim(&["--models", "llama3", "--tokens-per-sec", "50"]);
    let certs = tempfile::tempdir().expect("tempdir");
    let first = self_signed(&["127.0.0.1"]);
    let files = write_pem(certs.path(), "tls", &first);
    let port = free_port();
    let yaml = format!("{}{}", tls_yaml(port, &files), backends_yaml(&[&sim], 2));
    let c = start_corral(&yaml).await;
    let https = format!("https://127.0.0.1:{port}");
    wait_for("the TLS port to answer", || served(&first, &https)).await;
    wait_routable(&c, &["llama3"]).await;

    let resp = trusting(&first)
        .post(format!("{https}/api/chat"))
        .json(&chat(300))
        .send()
        .await
        .expect("chat");
    assert_eq!(resp.status(), 200);
    let mut stream = resp.bytes_stream();
    let mut before = Vec::new();
    before.extend_from_slice(&stream.next().await.expect("a chunk").expect("chunk"));

    // A renewed certificate and SIGHUP.
    let second = self_signed(&["127.0.0.1"]);
    write_pem(certs.path(), "tls", &second);
    let pid = c.proc.child.id().to_string();
    let hup = std::process::Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .expect("kill -HUP");
    assert!(hup.success());
    wait_for("new connections to get the new certificate", || {
        served(&second, &https)
    })
    .await;
    assert!(
        !serves(&first, &https).await,
        "a new connection still got the old certificate"
    );
    c.proc.wait_log("TLS certificate reloaded").await;

    // A broken certificate file: the change is seen, refused, and said why.
    let (_, failures) = reload_counts(&c.admin("/api/v1/status").await.expect("status"));
    replace(
        &files.cert,
        "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n",
    );
    let status = wait_for("the broken certificate to be refused", || async {
        let s = c.admin("/api/v1/status").await?;
        (reload_counts(&s).1 > failures).then_some(s)
    })
    .await;
    let error = status["reloads"]["last_error"].as_str().unwrap_or_default();
    assert!(error.contains("tls.cert"), "{status}");
    assert!(error.contains("the running certificate stays"), "{status}");
    assert!(
        serves(&second, &https).await,
        "the running certificate was dropped"
    );

    // A third certificate, by file change alone.
    let third = self_signed(&["127.0.0.1"]);
    write_pem(certs.path(), "tls", &third);
    wait_for("the file change to reload the certificate", || {
        served(&third, &https)
    })
    .await;
    assert!(!serves(&second, &https).await);
    assert!(scrape(&c)
        .await
        .contains(r#"corral_config_reloads_total{result="failure"}"#));

    // The stream opened before all of this is still on the first certificate's
    // connection and runs to its end.
    let mut after = Vec::new();
    while let Some(chunk) = tokio::time::timeout(DEADLINE, stream.next())
        .await
        .expect("stream hung")
    {
        after.extend_from_slice(&chunk.expect("stream cut by a reload"));
    }
    let text = String::from_utf8_lossy(&after);
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty(), "the stream ended before the reloads");
    let last: Value = serde_json::from_str(lines[lines.len() - 1]).expect("json");
    assert_eq!(last["done"], true, "{last}");
    let total = String::from_utf8_lossy(&before).lines().count() + lines.len();
    assert_eq!(total, 301);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_backend_is_probed_proxied_and_fanned_out_to_with_its_ca() {
    let certs = tempfile::tempdir().expect("tempdir");
    let pem = self_signed(&["127.0.0.1"]);
    let files = write_pem(certs.path(), "sim", &pem);
    let sim = start_sim(&[
        "--models",
        "llama3",
        "--tokens-per-sec",
        "500",
        "--tls-cert",
        &files.cert.display().to_string(),
        "--tls-key",
        &files.key.display().to_string(),
    ]);
    let backend = format!(
        "backends:\n  - {{name: s, url: 'https://{}', max_concurrency: 2}}\n",
        sim.addr
    );
    let yaml = format!("backend_tls: {{ca: '{}'}}\n{backend}", files.cert.display());
    let c = start_corral(&yaml).await;
    c.wait_healthy(1).await;

    let resp = c.post_json("/api/chat", &chat(5)).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-corral-backend"], "s");
    let lines = read_lines(resp).await.expect("stream");
    let last: Value = serde_json::from_str(lines.last().expect("lines")).expect("json");
    assert_eq!(last["done"], true, "{last}");

    // A fleet operation: corral's own client fans out to the box, then re-probes it.
    let copy = json!({"source": "llama3", "destination": "llama3-copy"});
    let resp = c.post_json("/api/copy", &copy).await;
    assert_eq!(resp.status(), 200, "{:?}", resp.text().await);
    wait_model(&c, "llama3-copy").await;

    // Without the CA the box's certificate is not trusted: never healthy, and why.
    let stranger = start_corral(&backend).await;
    let why = wait_for("the probe to fail on the certificate", || async {
        let v = stranger.admin("/api/v1/backends").await?;
        let error = v[0]["last_error"].as_str()?.to_string();
        (v[0]["healthy"] == false).then_some(error)
    })
    .await;
    assert!(why.to_lowercase().contains("certificate"), "{why}");
}
