//! The admin API and the cluster peer port: a header sent a byte at a time is cut at
//! `timeouts.header`, connections past the cap are closed at once, an admin body past
//! its limit is refused.

use std::time::Duration;

use tokio::io::AsyncWriteExt;

use crate::common::*;
use crate::raw::{connect, read_response, read_until_closed, trickle};

/// Sends the start of a header, then a byte every 250 ms; returns how long the server
/// took to close the connection.
async fn slowloris(addr: std::net::SocketAddr) -> Duration {
    let (mut reader, mut writer) = connect(addr).await.into_split();
    writer
        .write_all(b"POST /raft/vote HTTP/1.1\r\nHost: corral\r\nX-Slow: ")
        .await
        .expect("send");
    let slow = tokio::spawn(trickle(writer, vec![b'a'; 200], Duration::from_millis(250)));
    let (got, took) = read_until_closed(&mut reader).await;
    slow.abort();
    // hyper may say 408 before closing; it must not have served the request.
    let head = String::from_utf8_lossy(&got);
    assert!(got.is_empty() || head.starts_with("HTTP/1.1 408"), "{head}");
    took
}

fn admin_addr(c: &Corral) -> std::net::SocketAddr {
    admin_url(c)
        .trim_start_matches("http://")
        .parse()
        .expect("admin address")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_and_peer_ports_cut_a_slow_header_and_refuse_past_their_caps() {
    let data = tempfile::tempdir().expect("tempdir");
    let raft = free_port();
    let yaml = format!(
        "timeouts: {{header: 3s}}\ncluster:\n  node_id: 1\n  listen: 127.0.0.1:{raft}\n  data_dir: '{}'\n  peers: {{1: '127.0.0.1:{raft}'}}\n  secret: peer-secret-123\n",
        data.path().display()
    );
    let c = start_corral(&yaml).await;
    let admin = admin_addr(&c);
    let peer: std::net::SocketAddr = format!("127.0.0.1:{raft}").parse().expect("addr");
    wait_for("the peer port to listen", || async {
        tokio::net::TcpStream::connect(peer).await.ok().map(|_| ())
    })
    .await;

    for (name, addr) in [("admin", admin), ("peer", peer)] {
        let took = slowloris(addr).await;
        eprintln!("{name} port: a header at 4 bytes a second was cut after {took:?} (header: 3s)");
        assert!(took >= Duration::from_millis(2900), "{name}: {took:?}");
        assert!(took < Duration::from_secs(3 + 5), "{name}: {took:?}");
    }

    // 64 connections held open: the next one is closed at once, not served.
    let mut held = Vec::new();
    for _ in 0..64 {
        held.push(connect(admin).await);
    }
    let mut extra = connect(admin).await;
    let (got, took) = read_until_closed(&mut extra).await;
    eprintln!("the 65th admin connection was closed after {took:?}");
    assert!(got.is_empty());
    assert!(
        took < Duration::from_secs(2),
        "closed by the cap, not the header deadline"
    );
    // The held ones are alive and served (the cap refused, it did not break them).
    held[0]
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: corral\r\n\r\n")
        .await
        .expect("send");
    assert_eq!(read_response(&mut held[0]).await.status, 200);
    // Once they close, their places are free again.
    drop(held);
    let healthz = format!("{}/healthz", admin_url(&c));
    wait_for("the admin port to serve new connections again", || async {
        let r = reqwest::get(&healthz).await.ok()?;
        r.status().is_success().then_some(())
    })
    .await;

    // An admin body past 1 MiB is refused before it is read. (No body byte is sent:
    // the server closing with unread bytes would reset the connection under the
    // answer.)
    let mut s = connect(admin).await;
    s.write_all(
        b"POST /api/v1/backends HTTP/1.1\r\nHost: corral\r\nContent-Type: application/json\r\nContent-Length: 2097152\r\n\r\n",
    )
    .await
    .expect("send");
    let r = read_response(&mut s).await;
    assert_eq!(r.status, 413, "{r:?}");
    assert_eq!(r.json()["code"], "body_too_large");
}
