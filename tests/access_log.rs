//! The access log: one structured JSON line per request with what an operator needs
//! (backend, model, endpoint, status, route reason, TTFT, tokens). Its own test binary:
//! it turns JSON logging on through the environment the corral child inherits.

mod common;

use common::*;
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_json_line_per_request_with_the_routing_facts() {
    std::env::set_var("CORRAL_LOG_JSON", "1");
    let a = start_sim(&["--models", "llama3", "--tokens-per-sec", "500"]);
    let c = start_corral(&backends_yaml(&[&a], 1)).await;
    wait_routable(&c, &["llama3"]).await;
    let r = reqwest::Client::new()
        .post(format!("{}/api/chat", c.url()))
        .json(&json!({"model": "llama3", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .expect("chat");
    let last: Value =
        serde_json::from_str(read_lines(r).await.expect("stream").last().expect("a line"))
            .expect("final chunk");

    let line = wait_for("the access log line of the chat", || async {
        c.proc.log().lines().find_map(|l| {
            let v: Value = serde_json::from_str(l).ok()?;
            (v["target"] == "corral::access" && v["fields"]["endpoint"] == "chat").then_some(v)
        })
    })
    .await;
    let f = &line["fields"];
    assert_eq!(f["message"], "request");
    assert_eq!(f["backend"], "b0");
    assert_eq!(f["model"], "llama3");
    assert_eq!(f["status"], 200);
    assert!(f["route"].as_str().is_some_and(|r| r != "-"), "{line}");
    assert!(f["ttft_ms"].as_f64().is_some_and(|t| t > 0.0), "{line}");
    assert_eq!(f["prompt_tokens"], last["prompt_eval_count"], "{line}");
    assert_eq!(f["completion_tokens"], last["eval_count"], "{line}");
    // Durations in tenths of a millisecond, without float noise.
    for field in ["ttft_ms", "duration_ms"] {
        let text = f[field].to_string();
        let decimals = text.split_once('.').map_or(0, |(_, d)| d.len());
        assert!(decimals <= 1, "{field} = {text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_log_turns_the_access_log_off_and_nothing_else() {
    let a = start_sim(&["--models", "llama3"]);
    let admin = format!("listen: '127.0.0.1:{}'", free_port());
    let filter = std::ffi::OsStr::new("info,corral::access=off");
    let c = start_corral_env(&admin, &backends_yaml(&[&a], 1), &[("RUST_LOG", filter)]).await;
    wait_routable(&c, &["llama3"]).await;
    let client = reqwest::Client::new();
    for _ in 0..3 {
        let r = client
            .post(format!("{}/api/chat", c.url()))
            .json(&json!({"model": "llama3", "stream": false, "messages": [{"role": "user", "content": "hi"}]}))
            .send()
            .await
            .expect("chat");
        assert_eq!(r.status(), 200);
        r.bytes().await.expect("body");
    }
    // A request's metrics are recorded just before its line would be written.
    wait_for("the three chats in the metrics", || async {
        scrape(&c)
            .await
            .lines()
            .any(|l| {
                l.starts_with("corral_requests_total{")
                    && l.contains(r#"endpoint="chat""#)
                    && l.ends_with(" 3")
            })
            .then_some(())
    })
    .await;
    // A later info line: written access lines would sit in the log before it.
    let (ok, stdout, stderr) = corral_cli(&["reload", "--api-url", &admin_url(&c)]);
    assert!(ok, "{stdout}{stderr}");
    c.proc.wait_log("config reloaded").await;
    let log = c.proc.log();
    assert!(!log.contains("corral::access"), "{log}");
}
