//! A client that speaks HTTP by hand over TCP, so it can do what no library lets it:
//! stop reading, send a byte a second, break its own framing, speak HTTP/1.0.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::common::DEADLINE;

pub async fn connect(addr: SocketAddr) -> TcpStream {
    TcpStream::connect(addr).await.expect("connect")
}

/// A connection whose receive buffer is as small as the kernel allows, so that a
/// client that does not read pushes back on the sender at once.
pub async fn connect_small_rcvbuf(addr: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    socket.connect(addr).await.expect("connect")
}

/// A request head and body as one string.
pub fn request(method: &str, path: &str, version: &str, headers: &[&str], body: &str) -> String {
    let mut head = format!("{method} {path} {version}\r\nHost: corral\r\n");
    for h in headers {
        head.push_str(h);
        head.push_str("\r\n");
    }
    if !body.is_empty() {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    format!("{head}\r\n{body}")
}

/// What the server sent until it closed the connection, and how long that took.
/// A reset counts as closing; a server still holding on after the harness deadline
/// fails the test.
pub async fn read_until_closed<R: AsyncRead + Unpin>(stream: &mut R) -> (Vec<u8>, Duration) {
    let start = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match tokio::time::timeout(DEADLINE, stream.read(&mut buf)).await {
            Err(_) => panic!("the server still holds the connection after {DEADLINE:?}"),
            Ok(Ok(0)) | Ok(Err(_)) => return (got, start.elapsed()),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

/// Reads one response whose body has a `Content-Length` (corral's own answers do).
pub async fn read_response<R: AsyncRead + Unpin>(stream: &mut R) -> Response {
    let mut got = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        if let Some(r) = Response::parse(&got) {
            let length = r.header("content-length").and_then(|v| v.parse().ok());
            if length.is_some_and(|n: usize| r.body.len() >= n) {
                return r;
            }
        }
        let n = match tokio::time::timeout(DEADLINE, stream.read(&mut buf)).await {
            Err(_) => panic!("no whole response within {DEADLINE:?}: {got:?}"),
            Ok(Ok(n)) => n,
            Ok(Err(e)) => panic!("read failed: {e}"),
        };
        if n == 0 {
            return Response::parse(&got).unwrap_or_else(|| panic!("closed mid-head: {got:?}"));
        }
        got.extend_from_slice(&buf[..n]);
    }
}

/// Sends `bytes` one at a time, `every` apart, until the peer stops taking them or
/// `bytes` runs out.
pub async fn trickle(mut writer: tokio::net::tcp::OwnedWriteHalf, bytes: Vec<u8>, every: Duration) {
    for b in bytes {
        if writer.write_all(&[b]).await.is_err() {
            return;
        }
        tokio::time::sleep(every).await;
    }
}

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub head: String,
    pub body: Vec<u8>,
}

impl Response {
    /// `None` until the head is complete.
    pub fn parse(bytes: &[u8]) -> Option<Response> {
        let end = bytes.windows(4).position(|w| w == b"\r\n\r\n")?;
        let head = String::from_utf8_lossy(&bytes[..end]).to_string();
        let status = head.split_whitespace().nth(1)?.parse().ok()?;
        Some(Response {
            status,
            head,
            body: bytes[end + 4..].to_vec(),
        })
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then_some(v.trim())
        })
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}
