//! Clients that hold on: one that stops reading its stream, one that uploads a byte a
//! second or not at all, one that sends its header a byte at a time, one that idles on
//! a kept-alive connection.

use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::AsyncWriteExt;

use crate::common::*;
use crate::raw::{self, connect, read_response, read_until_closed, request, trickle};
use crate::{in_flight, wait_in_flight};

fn short_chat() -> serde_json::Value {
    json!({"model": "llama3", "messages": [{"role": "user", "content": "still there?"}],
           "stream": false, "options": {"num_predict": 4}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_releases_its_slot_within_idle() {
    // As fast as the simulator goes, and far more tokens than could stream in the
    // test's time: only the write timeout can end this request.
    let sim = start_sim(&["--models", "llama3", "--tokens-per-sec", "1000000"]);
    let yaml = format!("timeouts: {{idle: 2s}}\n{}", backends_yaml(&[&sim], 1));
    let c = start_corral(&yaml).await;
    wait_routable(&c, &["llama3"]).await;

    let body = json!({"model": "llama3", "messages": [{"role": "user", "content": "flood me"}],
                      "options": {"num_predict": 100_000_000}})
    .to_string();
    let mut stalled = raw::connect_small_rcvbuf(c.addr).await;
    let req = request("POST", "/api/chat", "HTTP/1.1", &[], &body);
    stalled.write_all(req.as_bytes()).await.expect("send");
    wait_in_flight(&c, 1).await;
    let held = Instant::now();
    wait_in_flight(&c, 0).await;
    eprintln!(
        "a client that never reads held its slot for {:?} (idle 2s; the time to fill the socket buffers comes first)",
        held.elapsed()
    );
    c.proc.wait_log("WriteTimedout").await;

    let r = c.post_json("/api/chat", &short_chat()).await;
    assert_eq!(r.status(), 200);
    drop(stalled);
}

/// Sends a chat header declaring a body too big to sniff whole, and the part of the
/// body that names the model, so corral routes it and takes a slot.
async fn start_upload(c: &Corral) -> tokio::net::TcpStream {
    let prefix = r#"{"model":"llama3","messages":[{"role":"user","content":"hi"}],"pad":""#;
    let head = "POST /api/chat HTTP/1.1\r\nHost: corral\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n";
    let mut s = connect(c.addr).await;
    s.write_all(format!("{head}{prefix}").as_bytes())
        .await
        .expect("send");
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_or_stalled_upload_is_answered_408_at_the_body_deadline() {
    let sim = start_sim(&["--models", "llama3"]);
    let yaml = format!(
        "timeouts: {{client_body: 3s}}\n{}",
        backends_yaml(&[&sim], 1)
    );
    let c = start_corral(&yaml).await;
    wait_routable(&c, &["llama3"]).await;
    let want = "request body not received within 3s (timeouts.client_body)";

    // A byte a second: every read is quick, the whole never ends.
    let started = Instant::now();
    let (mut reader, writer) = start_upload(&c).await.into_split();
    let uploader = tokio::spawn(trickle(writer, vec![b'x'; 60], Duration::from_secs(1)));
    wait_in_flight(&c, 1).await;
    let r = read_response(&mut reader).await;
    let took = started.elapsed();
    eprintln!(
        "a byte-a-second upload was answered {} after {took:?}",
        r.status
    );
    assert_eq!(r.status, 408, "{r:?}");
    assert_eq!(r.json(), json!({ "error": want }));
    // The deadline plus at most one read interval, plus room for a slow machine.
    assert!(took >= Duration::from_secs(3), "{took:?}");
    assert!(took < Duration::from_secs(3 + 1 + 5), "{took:?}");
    wait_in_flight(&c, 0).await;
    uploader.abort();

    // Nothing more after the first bytes: the last read waits only until the deadline.
    let started = Instant::now();
    let mut silent = start_upload(&c).await;
    let r = read_response(&mut silent).await;
    let took = started.elapsed();
    eprintln!("a stalled upload was answered {} after {took:?}", r.status);
    assert_eq!(r.status, 408, "{r:?}");
    assert_eq!(r.json(), json!({ "error": want }));
    assert!(took < Duration::from_secs(3 + 5), "{took:?}");
    wait_in_flight(&c, 0).await;

    let r = c.post_json("/api/chat", &short_chat()).await;
    assert_eq!(r.status(), 200);
    // A client's slowness is not corral's failure: no ERROR line for it.
    assert!(!c.proc.log().contains("ERROR"), "{}", c.proc.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_header_sent_a_byte_at_a_time_is_cut_at_the_header_deadline() {
    let sim = start_sim(&["--models", "llama3"]);
    let yaml = format!("timeouts: {{header: 2s}}\n{}", backends_yaml(&[&sim], 1));
    let c = start_corral(&yaml).await;

    let s = connect(c.addr).await;
    let (mut reader, mut writer) = s.into_split();
    writer
        .write_all(b"GET /api/tags HTTP/1.1\r\nHost: corral\r\nX-Slow: ")
        .await
        .expect("send");
    let slow = tokio::spawn(trickle(writer, vec![b'a'; 120], Duration::from_millis(250)));
    let (closed, took) = read_until_closed(&mut reader).await;
    eprintln!("a header at 4 bytes a second was cut after {took:?} (header: 2s)");
    assert!(closed.is_empty(), "answered: {closed:?}");
    assert!(took >= Duration::from_millis(1900), "{took:?}");
    assert!(took < Duration::from_secs(2 + 5), "{took:?}");
    slow.abort();

    // A connection that sends nothing at all is closed at the same deadline.
    let mut idle = connect(c.addr).await;
    let (got, took) = read_until_closed(&mut idle).await;
    eprintln!("a silent connection was closed after {took:?}");
    assert!(got.is_empty());
    assert!(took >= Duration::from_millis(1900), "{took:?}");
    assert!(took < Duration::from_secs(2 + 5), "{took:?}");
    assert_eq!(in_flight(&c).await, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_idle_is_timeouts_client_and_the_next_header_has_its_deadline() {
    let sim = start_sim(&["--models", "llama3"]);
    let yaml = format!(
        "timeouts: {{header: 1s, client: 3s}}\n{}",
        backends_yaml(&[&sim], 1)
    );
    let c = start_corral(&yaml).await;

    // Idle after an answer: closed at the keep-alive time, not at the header deadline.
    let mut s = connect(c.addr).await;
    let req = request("GET", "/api/version", "HTTP/1.1", &[], "");
    s.write_all(req.as_bytes()).await.expect("send");
    let r = read_response(&mut s).await;
    assert_eq!(r.status, 200);
    let (got, took) = read_until_closed(&mut s).await;
    eprintln!("an idle kept-alive connection was closed after {took:?} (client: 3s)");
    assert!(got.is_empty());
    assert!(took >= Duration::from_millis(2900), "{took:?}");
    assert!(took < Duration::from_secs(3 + 5), "{took:?}");

    // A second request started but never finished: the header deadline counts from
    // its first byte.
    let mut s = connect(c.addr).await;
    s.write_all(req.as_bytes()).await.expect("send");
    assert_eq!(read_response(&mut s).await.status, 200);
    s.write_all(b"GET /api/version HTTP/1.1\r\n")
        .await
        .expect("send");
    let (got, took) = read_until_closed(&mut s).await;
    eprintln!("a second header left unfinished was cut after {took:?} (header: 1s)");
    assert!(got.is_empty());
    assert!(took < Duration::from_secs(1 + 5), "{took:?}");
}
