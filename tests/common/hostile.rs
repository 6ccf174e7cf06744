//! A box that speaks just enough HTTP to look like Ollama, then misbehaves: never
//! answers, answers forever, answers garbage or enormously, or breaks off mid-line. It
//! runs in the test process on 127.0.0.1, answers each request by what a test-supplied
//! function says for its method and path, and counts what it saw so a test can tell
//! when corral let go.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

/// How the box answers one request.
#[derive(Clone)]
pub enum Behavior {
    /// `200` with this JSON body (and its `Content-Length`).
    Json(Bytes),
    /// Reads the request and never answers; holds the connection until the peer closes.
    Silent,
    /// `200`, chunked, a `/api/tags`-shaped body that never ends and has no newline.
    Endless,
    /// `200` with a body that is not JSON.
    Garbage,
    /// Exactly these bytes (status line, headers and all), then the connection closes:
    /// for answers no well-behaved server sends, like a stream cut mid-line.
    Raw(Bytes),
}

/// Bytes an endless answer sends before giving up on its own, should nobody cut it.
const ENDLESS_CAP: usize = 2 * 1024 * 1024 * 1024;
/// Request heads longer than this are not from corral.
const MAX_HEAD: usize = 64 * 1024;

type Answer = dyn Fn(&str, &str) -> Behavior + Send + Sync;

pub struct HostileBackend {
    pub addr: SocketAddr,
    open: Arc<AtomicUsize>,
    seen: Arc<Mutex<HashMap<String, usize>>>,
    /// Dropping it aborts the accept loop, whose `JoinSet` aborts every connection.
    accept: tokio::task::JoinHandle<()>,
}

impl Drop for HostileBackend {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

impl HostileBackend {
    /// Listens on an ephemeral loopback port and answers with `answer(method, path)`.
    pub async fn start(answer: impl Fn(&str, &str) -> Behavior + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind hostile backend");
        let addr = listener.local_addr().expect("hostile backend address");
        let open = Arc::new(AtomicUsize::new(0));
        let seen = Arc::new(Mutex::new(HashMap::new()));
        let answer: Arc<Answer> = Arc::new(answer);
        let (open2, seen2) = (open.clone(), seen.clone());
        let accept = tokio::spawn(async move {
            let mut connections = JoinSet::new();
            while let Ok((stream, _)) = listener.accept().await {
                let (open, seen, answer) = (open2.clone(), seen2.clone(), answer.clone());
                open.fetch_add(1, Ordering::SeqCst);
                connections.spawn(async move {
                    serve(stream, &seen, answer.as_ref()).await;
                    open.fetch_sub(1, Ordering::SeqCst);
                });
                // Reap finished connections so the set does not grow with each probe.
                while connections.try_join_next().is_some() {}
            }
        });
        HostileBackend {
            addr,
            open,
            seen,
            accept,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Connections the box holds open right now.
    pub fn open_connections(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }

    /// Requests that arrived for `path`.
    pub fn requests(&self, path: &str) -> usize {
        let seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        seen.get(path).copied().unwrap_or(0)
    }
}

/// The answers of a healthy Ollama holding `models`, for its probe paths; `None` for
/// any other path.
pub fn healthy_probe(path: &str, models: &[&str]) -> Option<Behavior> {
    let entries: Vec<_> = models
        .iter()
        .map(|m| json!({"name": m, "model": m, "size": 1, "digest": "0"}))
        .collect();
    let body = match path {
        "/api/version" => json!({"version": "0.5.0"}),
        "/api/tags" => json!({ "models": entries }),
        "/api/ps" => json!({"models": []}),
        _ => return None,
    };
    Some(Behavior::Json(Bytes::from(body.to_string())))
}

/// An `/api/tags` body listing `n` realistic-looking models.
pub fn huge_tags(n: usize) -> Bytes {
    let models: Vec<_> = (0..n)
        .map(|i| {
            json!({
                "name": format!("model-{i}:latest"),
                "model": format!("model-{i}:latest"),
                "modified_at": "2024-05-01T10:00:00Z",
                "size": 4_661_224_676u64,
                "digest": format!("{i:064x}"),
                "details": {"format": "gguf", "family": "llama", "parameter_size": "8B"},
            })
        })
        .collect();
    Bytes::from(json!({ "models": models }).to_string())
}

async fn serve(mut stream: TcpStream, seen: &Mutex<HashMap<String, usize>>, answer: &Answer) {
    let Some((method, path)) = read_request(&mut stream).await else {
        return;
    };
    *seen
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .entry(path.clone())
        .or_default() += 1;
    match answer(&method, &path) {
        Behavior::Json(body) => {
            let _ = write_whole(&mut stream, "application/json", &body).await;
        }
        Behavior::Garbage => {
            let body = b"<html><body>502 Bad Gateway (not JSON)</body></html>";
            let _ = write_whole(&mut stream, "application/json", body).await;
        }
        Behavior::Silent => {
            // Hold on until the peer gives up; whatever it sends is ignored.
            let mut sink = [0u8; 1024];
            while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
        }
        Behavior::Endless => {
            let _ = write_endless(&mut stream).await;
        }
        Behavior::Raw(bytes) => {
            let _ = stream.write_all(&bytes).await;
            let _ = stream.shutdown().await;
        }
    }
}

/// Reads one request head and its `Content-Length` body; returns method and path.
async fn read_request(stream: &mut TcpStream) -> Option<(String, String)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        if buf.len() > MAX_HEAD {
            return None;
        }
        let n = stream.read(&mut chunk).await.ok().filter(|&n| n > 0)?;
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let mut words = head.split_whitespace();
    let (method, path) = (words.next()?.to_string(), words.next()?.to_string());
    let length: usize = head
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse().ok())
        .unwrap_or(0);
    let mut have = buf.len() - head_end;
    while have < length {
        let n = stream.read(&mut chunk).await.ok().filter(|&n| n > 0)?;
        have += n;
    }
    Some((method, path))
}

async fn write_whole(stream: &mut TcpStream, kind: &str, body: &[u8]) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body).await?;
    stream.shutdown().await
}

/// Model entries in 64 KiB chunks until the peer stops reading or `ENDLESS_CAP`.
async fn write_endless(stream: &mut TcpStream) -> std::io::Result<()> {
    let head =
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n";
    stream.write_all(head.as_bytes()).await?;
    let mut payload = String::from("{\"models\":[");
    let mut i = 0usize;
    while payload.len() < 64 * 1024 {
        payload.push_str(&format!("{{\"name\":\"endless-{i}:latest\"}},"));
        i += 1;
    }
    let chunk = format!("{:x}\r\n{payload}\r\n", payload.len());
    let mut sent = 0;
    while sent < ENDLESS_CAP {
        stream.write_all(chunk.as_bytes()).await?;
        sent += payload.len();
    }
    Ok(())
}
