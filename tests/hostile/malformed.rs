//! A thousand malformed requests of every kind, sixteen at a time: each gets a clear
//! 4xx (or, for bytes that are not HTTP, a closed connection) and never a 5xx; when
//! they are done nothing is left in flight or queued, memory is where it was, and a
//! real chat still works.

use std::time::Duration;

use futures::StreamExt;
use serde_json::json;
use tokio::io::AsyncWriteExt;

use crate::common::*;
use crate::raw;

const REQUESTS: usize = 1_000;

fn rss_kb(c: &Corral) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", c.proc.child.id()))
        .expect("corral's /proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// One malformed request of kind `i % KINDS`; returns what it was and the status (0 =
/// the connection was closed without an answer).
async fn malformed(c: &Corral, http: &reqwest::Client, i: usize) -> (&'static str, u16) {
    const KINDS: usize = 13;
    let url = |p: &str| format!("{}{p}", c.url());
    let post = |path: &str, body: Vec<u8>| {
        http.post(url(path))
            .header("Content-Type", "application/json")
            .body(body)
    };
    let send = |kind: &'static str, req: reqwest::RequestBuilder| async move {
        let status = req.send().await.map_or(0, |r| r.status().as_u16());
        (kind, status)
    };
    match i % KINDS {
        0 => send("not json", post("/api/chat", b"model=llama3".to_vec())).await,
        1 => send("no model", post("/api/generate", b"{}".to_vec())).await,
        2 => {
            send(
                "model not a string",
                post("/api/chat", br#"{"model": 42}"#.to_vec()),
            )
            .await
        }
        3 => {
            send(
                "unknown model",
                post("/api/generate", br#"{"model":"nope-x"}"#.to_vec()),
            )
            .await
        }
        4 => {
            let body = br#"{"model":"llama3","messages":[{"role":"user","content":"hi"#.to_vec();
            send("truncated json", post("/api/chat", body)).await
        }
        5 => {
            send(
                "not utf-8",
                post("/api/chat", vec![0xff, 0xfe, b'{', 0xc3, 0x28]),
            )
            .await
        }
        6 => {
            let nested = "[".repeat(10_000);
            send("deep nesting", post("/api/chat", nested.into_bytes())).await
        }
        7 => {
            let mut body = vec![b' '; 70 * 1024];
            body.extend_from_slice(br#"{"model":"llama3","prompt":"x"}"#);
            send("model past 64 KiB", post("/api/generate", body)).await
        }
        8 => {
            send(
                "openai not json",
                post("/v1/chat/completions", b"[]".to_vec()),
            )
            .await
        }
        9 => send("unknown route", http.get(url("/api/nonsense"))).await,
        10 => raw_status("not http", c, b"HELLO WORLD\r\n\r\n").await,
        11 => {
            let req = b"POST /api/chat HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999999\r\n\r\n{}";
            raw_status("absurd content-length", c, req).await
        }
        _ => {
            // Declares a body, sends a piece, hangs up.
            let req = b"POST /api/chat HTTP/1.1\r\nHost: x\r\nContent-Length: 500\r\n\r\n{\"model\":\"llama3\"";
            raw_status("body cut short", c, req).await
        }
    }
}

/// Sends raw bytes, half-closes, and reads the status line of whatever comes back.
async fn raw_status(kind: &'static str, c: &Corral, bytes: &[u8]) -> (&'static str, u16) {
    let mut s = raw::connect(c.addr).await;
    if s.write_all(bytes).await.is_err() {
        return (kind, 0);
    }
    let _ = s.shutdown().await;
    let (got, _) = raw::read_until_closed(&mut s).await;
    let status = std::str::from_utf8(&got)
        .ok()
        .and_then(|t| t.split(' ').nth(1))
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    (kind, status)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_malformed_requests_get_clear_answers_and_leave_nothing_behind() {
    let sim = start_sim(&["--models", "llama3", "--resident", "llama3"]);
    let c = start_corral(&format!(
        "timeouts: {{client_body: 5s, header: 5s}}\n{}",
        backends_yaml(&[&sim], 2)
    ))
    .await;
    wait_routable(&c, &["llama3"]).await;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client");
    let rss_before = rss_kb(&c);
    let started = std::time::Instant::now();
    let answers: Vec<(&str, u16)> = futures::stream::iter(0..REQUESTS)
        .map(|i| {
            let (c, http) = (&c, &http);
            async move { malformed(c, http, i).await }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    for (kind, status) in &answers {
        let ok = match *kind {
            "not http" | "absurd content-length" | "body cut short" => {
                *status == 0 || (400..500).contains(status)
            }
            _ => (400..500).contains(status),
        };
        assert!(ok, "{kind}: answered {status}");
    }
    assert_eq!(answers.len(), REQUESTS);
    crate::wait_in_flight(&c, 0).await;
    let status = c.admin("/api/v1/status").await.expect("status");
    assert_eq!(status["queue_depth"], 0);
    let rss_after = rss_kb(&c);
    eprintln!(
        "{REQUESTS} malformed requests in {:.1?}; RSS {rss_before} kB -> {rss_after} kB",
        started.elapsed()
    );
    assert!(
        rss_after < rss_before + 50_000,
        "RSS grew from {rss_before} kB to {rss_after} kB"
    );
    let r = c
        .post_json(
            "/api/chat",
            &json!({"model": "llama3", "messages": [{"role": "user", "content": "still there?"}], "stream": false}),
        )
        .await;
    assert_eq!(r.status(), 200);
}
