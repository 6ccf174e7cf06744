//! SIGTERM: new requests are refused with 503, streams in flight finish, and corral
//! exits as soon as they have — not after the whole grace period.

mod common;

use std::process::Command;

use common::*;
use futures::StreamExt;
use serde_json::{json, Value};

fn sigterm(c: &Corral) {
    let pid = c.proc.child.id().to_string();
    let ok = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill")
        .success();
    assert!(ok, "kill -TERM {pid}");
}

/// Waits for corral to exit; the generous grace configured below means an exit within
/// the test deadline can only come from the drain finishing.
async fn wait_exit(c: &mut Corral) -> std::process::ExitStatus {
    wait_for("corral to exit", || {
        let status = c.proc.child.try_wait().expect("try_wait");
        async move { status }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_streams_in_flight_then_exits() {
    // About 3 s of tokens: long enough to be in flight when SIGTERM comes.
    let a = start_sim(&[
        "--models",
        "llama3",
        "--resident",
        "llama3",
        "--tokens-per-sec",
        "10",
        "--num-predict",
        "30",
    ]);
    let mut c = start_corral(&format!("shutdown_grace: 1h\n{}", backends_yaml(&[&a], 2))).await;
    wait_routable(&c, &["llama3"]).await;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let body = json!({"model": "llama3", "messages": [{"role": "user", "content": "a story"}]});
    let resp = c.post_json("/api/chat", &body).await;
    let mut stream = resp.bytes_stream();
    let first = stream.next().await.unwrap().unwrap();
    assert!(!first.is_empty());

    sigterm(&c);
    // New work is refused while the stream goes on.
    let url = format!("{}/api/chat", c.url());
    let refused = wait_for("new requests to be refused", || {
        let r = http.post(&url).json(&body).send();
        async move { r.await.ok().filter(|r| r.status() == 503) }
    })
    .await;
    assert!(refused.headers().contains_key("retry-after"));
    let why = refused.text().await.expect("refusal body");
    assert!(why.contains("shutting down"), "{why}");

    let mut text = String::from_utf8_lossy(&first).to_string();
    while let Some(chunk) = tokio::time::timeout(DEADLINE, stream.next())
        .await
        .expect("stream hung")
    {
        text.push_str(&String::from_utf8_lossy(
            &chunk.expect("stream cut by shutdown"),
        ));
    }
    let last: Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    assert_eq!(last["done"], true, "{text}");
    assert!(wait_exit(&mut c).await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_corral_exits_at_once_on_sigterm() {
    let a = start_sim(&["--models", "llama3"]);
    let mut c = start_corral(&format!("shutdown_grace: 1h\n{}", backends_yaml(&[&a], 1))).await;
    sigterm(&c);
    assert!(wait_exit(&mut c).await.success());
}
