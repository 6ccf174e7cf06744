//! Answers that must stay parseable: a box that dies mid-line, a request that loops
//! back through corral, a client's own broken framing, an HTTP/1.0 client.

use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;

use crate::common::hostile::{healthy_probe, Behavior, HostileBackend};
use crate::common::*;
use crate::raw::{connect, read_response, read_until_closed, request, Response};

/// An HTTP/1.1 chunked answer of `content_type` whose one chunk is `body`, cut off
/// before the terminating chunk.
fn cut_off(content_type: &str, body: &str) -> Bytes {
    Bytes::from(format!(
        "HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{body}\r\n",
        body.len()
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_box_dying_mid_line_never_tears_a_line_the_client_reads() {
    let ndjson = cut_off(
        "application/x-ndjson",
        r#"{"model":"llama3","message":{"role":"assistant","content":"Hel"},"done":false}
{"model":"llama3","message":{"role":"assistant","content":"trunc"#,
    );
    let sse = cut_off(
        "text/event-stream",
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel\"}}]}\n\ndata: {\"choices\":[{\"delta\":{\"con",
    );
    let hostile = HostileBackend::start(move |_, path| {
        healthy_probe(path, &["llama3:latest"]).unwrap_or_else(|| match path {
            "/v1/chat/completions" => Behavior::Raw(sse.clone()),
            _ => Behavior::Raw(ndjson.clone()),
        })
    })
    .await;
    let yaml = format!("backends:\n  - {{name: b0, url: '{}'}}\n", hostile.url());
    let c = start_corral(&yaml).await;
    c.wait_healthy(1).await;

    let chat = json!({"model": "llama3", "messages": [{"role": "user", "content": "hi"}]});
    let lines = read_lines(c.post_json("/api/chat", &chat).await)
        .await
        .expect("the stream ends");
    let parsed: Vec<Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("torn line {l:?}: {e}")))
        .collect();
    assert_eq!(parsed.len(), 2, "{lines:?}");
    assert_eq!(parsed[0]["message"]["content"], "Hel");
    let error = parsed[1]["error"].as_str().expect("an error line last");
    assert!(
        error.starts_with("backend 'b0' failed mid-stream"),
        "{error}"
    );

    let lines = read_lines(c.post_json("/v1/chat/completions", &chat).await)
        .await
        .expect("the stream ends");
    let events: Vec<Value> = lines
        .iter()
        .map(|l| {
            let data = l
                .strip_prefix("data: ")
                .unwrap_or_else(|| panic!("not SSE: {l:?}"));
            serde_json::from_str(data).unwrap_or_else(|e| panic!("torn event {l:?}: {e}"))
        })
        .collect();
    assert_eq!(events.len(), 2, "{lines:?}");
    assert_eq!(events[0]["choices"][0]["delta"]["content"], "Hel");
    assert!(events[1]["error"]["message"].is_string(), "{lines:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_pointing_back_at_corral_is_refused_508_at_once() {
    let sim = start_sim(&["--models", "llama3"]);
    let c = start_corral(&backends_yaml(&[&sim], 1)).await;
    wait_routable(&c, &["llama3"]).await;
    // corral itself as a second backend: its probes are answered from the fleet view,
    // so it looks like a healthy box holding llama3.
    let r = reqwest::Client::new()
        .post(format!("{}/api/v1/backends", admin_url(&c)))
        .json(&json!({"name": "myself", "url": c.url()}))
        .send()
        .await
        .expect("add backend");
    assert!(r.status().is_success(), "{}", r.status());
    c.wait_healthy(2).await;

    let requests_before = access_lines(&c, "/api/chat");
    let started = Instant::now();
    let r = reqwest::Client::new()
        .post(format!("{}/api/chat", c.url()))
        .header("X-Corral-Target", "myself")
        .json(&json!({"model": "llama3", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .expect("chat");
    let took = started.elapsed();
    assert_eq!(r.status(), 508);
    let body: Value = r.json().await.expect("JSON error");
    assert!(
        body["error"].as_str().is_some_and(|e| e.contains("loop")),
        "{body}"
    );
    eprintln!("a self-loop was answered 508 in {took:?}");
    assert!(took < Duration::from_secs(5), "{took:?}");
    // The request passed through corral twice (in, and back in through "myself"),
    // and no more.
    let passes = wait_for("both passes logged", || async {
        let n = access_lines(&c, "/api/chat") - requests_before;
        (n >= 2).then_some(n)
    })
    .await;
    assert_eq!(passes, 2, "{}", c.proc.log());

    // OpenAI clients get the refusal in their shape.
    let r = reqwest::Client::new()
        .post(format!("{}/v1/chat/completions", c.url()))
        .header("X-Corral-Target", "myself")
        .json(&json!({"model": "llama3", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .expect("chat");
    assert_eq!(r.status(), 508);
    let body: Value = r.json().await.expect("JSON error");
    assert!(body["error"]["message"].is_string(), "{body}");
}

/// Access log lines (text format) for requests to `path`.
fn access_lines(c: &Corral, path: &str) -> usize {
    let field = format!("path={path} ");
    c.proc
        .log()
        .lines()
        .filter(|l| l.contains("corral::access") && l.contains(&field))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_breaking_its_own_chunked_framing_gets_400_logged_as_a_warning() {
    let sim = start_sim(&["--models", "llama3"]);
    let c = start_corral(&backends_yaml(&[&sim], 1)).await;
    wait_routable(&c, &["llama3"]).await;

    let bad = "POST /api/chat HTTP/1.1\r\nHost: corral\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\nnot-hex\r\n{\"model\":\"llama3\"}\r\n";
    let started = Instant::now();
    let tries = 20;
    for _ in 0..tries {
        let mut s = connect(c.addr).await;
        s.write_all(bad.as_bytes()).await.expect("send");
        let r: Response = read_response(&mut s).await;
        assert_eq!(r.status, 400, "{r:?}");
        let error = r.json()["error"].as_str().unwrap_or_default().to_string();
        assert!(error.starts_with("bad request"), "{error}");
    }
    let secs = started.elapsed().as_secs() as usize;
    c.proc.wait_log("client error").await;
    let log = c.proc.log();
    assert!(!log.contains("ERROR"), "{log}");
    // One WARN line a second at most, however many clients misbehave.
    let warnings = log.lines().filter(|l| l.contains("client error")).count();
    assert!(warnings >= 1, "{log}");
    assert!(warnings <= secs + 2, "{warnings} lines in {secs}s: {log}");
    assert!(warnings < tries, "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http10_client_gets_a_close_delimited_stream() {
    let sim = start_sim(&["--models", "llama3", "--tokens-per-sec", "500"]);
    let c = start_corral(&backends_yaml(&[&sim], 1)).await;
    wait_routable(&c, &["llama3"]).await;

    let body = json!({"model": "llama3", "messages": [{"role": "user", "content": "hi"}]});
    let req = request(
        "POST",
        "/api/chat",
        "HTTP/1.0",
        &["Content-Type: application/json"],
        &body.to_string(),
    );
    let mut s = connect(c.addr).await;
    s.write_all(req.as_bytes()).await.expect("send");
    let (got, _) = read_until_closed(&mut s).await;
    let r = Response::parse(&got).expect("a response");
    assert_eq!(r.status, 200, "{}", r.head);
    assert_eq!(r.header("transfer-encoding"), None, "{}", r.head);
    assert_eq!(r.header("content-length"), None, "{}", r.head);
    assert_eq!(r.header("connection"), Some("close"), "{}", r.head);
    // The body is the NDJSON lines themselves, no chunk sizes between them.
    let lines: Vec<Value> = String::from_utf8_lossy(&r.body)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect();
    assert_eq!(lines.last().expect("lines")["done"], true);
}
