//! Fault modes and disconnect accounting: what a proxy's failure handling is tested with.

use std::time::Duration;

use futures::StreamExt;
use serde_json::{json, Value};

use super::{fast_args, start, TestSim};
use crate::sim::{Fault, SimArgs};

/// A simulator that would take a minute per reply, so a stream is always mid-flight.
async fn slow_sim() -> TestSim {
    start(SimArgs {
        tokens_per_sec: 20.0,
        num_predict: 1200,
        ..fast_args()
    })
    .await
}

fn chat_body() -> Value {
    json!({"model": "llama3", "messages": [{"role": "user", "content": "hi"}]})
}

#[tokio::test]
async fn client_disconnect_mid_stream_is_counted_and_frees_the_slot() {
    let sim = slow_sim().await;
    let response = sim.post("/api/chat", chat_body()).await;
    let mut body = response.bytes_stream();
    let first = body.next().await.expect("a first chunk").expect("readable");
    assert!(first.starts_with(b"{\"model\""));
    assert_eq!(sim.stats().await["active"], 1);
    drop(body);

    let stats = sim.wait_for_stats(|stats| stats["cancelled"] == 1).await;
    assert_eq!(
        (&stats["active"], &stats["completed"]),
        (&json!(0), &json!(0))
    );
    assert_eq!(stats["by_model"]["llama3:latest"]["cancelled"], 1);

    // The only slot is free again: a short request gets through at once.
    let quick =
        json!({"model": "llama3", "prompt": "x", "stream": false, "options": {"num_predict": 1}});
    let answer: Value = sim
        .post("/api/generate", quick)
        .await
        .json()
        .await
        .expect("JSON");
    assert_eq!(answer["done"], true);
}

#[tokio::test]
async fn die_mid_stream_cuts_the_connection_without_a_final_chunk() {
    let sim = start(fast_args()).await;
    sim.set_fault("die_mid_stream").await;
    let response = sim.post("/api/chat", chat_body()).await;
    assert_eq!(response.status(), 200);
    let mut body = response.bytes_stream();
    let mut received = Vec::new();
    let mut broke = false;
    while let Some(chunk) = body.next().await {
        match chunk {
            Ok(bytes) => received.extend_from_slice(&bytes),
            Err(_) => {
                broke = true;
                break;
            }
        }
    }
    assert!(
        broke,
        "the body must end in a transport error, not a clean end"
    );
    let text = String::from_utf8(received).expect("UTF-8");
    assert_eq!(text.lines().count(), 3, "three tokens got through: {text}");
    assert!(!text.contains("\"done\":true"));

    // Health routes keep answering; the request counts as failed, not cancelled.
    assert_eq!(sim.get_json("/api/version").await["version"], "0.12.6");
    let stats = sim.wait_for_stats(|stats| stats["failed"] == 1).await;
    assert_eq!(stats["cancelled"], 0);
}

#[tokio::test]
async fn die_mid_stream_truncates_single_object_answers() {
    let sim = start(SimArgs {
        fault: Fault::DieMidStream,
        ..fast_args()
    })
    .await;
    for (path, body) in [
        (
            "/api/generate",
            json!({"model": "llama3", "prompt": "hi", "stream": false}),
        ),
        (
            "/v1/completions",
            json!({"model": "llama3", "prompt": "hi"}),
        ),
        ("/api/embed", json!({"model": "llama3", "input": "hi"})),
    ] {
        // The connection closes before the answer is complete; whether the status line
        // made it out first is up to timing.
        let outcome = sim.http.post(sim.url(path)).json(&body).send().await;
        let complete = match outcome {
            Ok(response) => response.bytes().await.is_ok(),
            Err(_) => false,
        };
        assert!(!complete, "{path} must not complete");
    }
    let stats = sim.wait_for_stats(|stats| stats["failed"] == 3).await;
    assert_eq!(stats["completed"], 0);
}

#[tokio::test]
async fn hang_never_answers_but_notices_the_client_leaving() {
    let sim = start(fast_args()).await;
    sim.set_fault("hang").await;
    let attempt = sim
        .http
        .post(sim.url("/api/chat"))
        .json(&chat_body())
        .timeout(Duration::from_millis(200))
        .send()
        .await;
    assert!(attempt.expect_err("no answer while hanging").is_timeout());
    let stats = sim.wait_for_stats(|stats| stats["cancelled"] == 1).await;
    assert_eq!(stats["active"], 0);
    let tags = sim.get_json("/api/tags").await;
    assert!(tags["models"].is_array(), "health routes still answer");
}

#[tokio::test]
async fn hang_mid_stream_goes_silent_after_a_few_tokens() {
    let sim = start(fast_args()).await;
    sim.set_fault("hang_mid_stream").await;
    let response = sim
        .post("/api/generate", json!({"model": "llama3", "prompt": "hi"}))
        .await;
    let mut body = response.bytes_stream();
    let mut lines = 0;
    while lines < 3 {
        let chunk = body.next().await.expect("token").expect("readable");
        lines += chunk.iter().filter(|byte| **byte == b'\n').count();
    }
    let silence = tokio::time::timeout(Duration::from_millis(200), body.next()).await;
    assert!(silence.is_err(), "nothing may follow the third token");
    drop(body);
    sim.wait_for_stats(|stats| stats["cancelled"] == 1).await;
}

#[tokio::test]
async fn fail_and_busy_answer_at_once_with_ollama_errors() {
    let sim = start(fast_args()).await;
    sim.set_fault("busy").await;
    let busy = sim.post("/api/chat", chat_body()).await;
    assert_eq!(busy.status(), 503);
    let error: Value = busy.json().await.expect("JSON");
    assert_eq!(
        error["error"],
        "server busy, please try again.  maximum pending requests exceeded"
    );

    sim.set_fault("fail").await;
    let failed = sim.post("/v1/chat/completions", chat_body()).await;
    assert_eq!(failed.status(), 500);
    let error: Value = failed.json().await.expect("JSON");
    assert_eq!(error["error"]["message"], "simulated runner failure");
    assert_eq!(error["error"]["type"], "api_error");
    assert_eq!(
        sim.http
            .head(sim.url("/"))
            .send()
            .await
            .expect("HEAD")
            .status(),
        200
    );

    assert_eq!(sim.get_json("/sim/fault").await, json!({"mode": "fail"}));
    sim.set_fault("none").await;
    assert_eq!(sim.post("/api/chat", chat_body()).await.status(), 200);
    let bad_mode = sim.post("/sim/fault", json!({"mode": "explode"})).await;
    assert_eq!(bad_mode.status(), 400);
    assert_eq!(sim.stats().await["failed"], 2);
}
