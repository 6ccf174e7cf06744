//! Streaming and every way a request can go wrong: the client always gets an answer
//! its library understands, never a hang.

mod common;

use common::*;
use futures::StreamExt;
use serde_json::{json, Value};

fn chat(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "tell me a story"}]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ndjson_streams_chunk_by_chunk_and_client_abort_reaches_the_backend() {
    // 5 tokens/s × 50 tokens: the stream lasts ~10 s unless cancelled.
    let a = start_sim(&[
        "--models",
        "llama3",
        "--tokens-per-sec",
        "5",
        "--num-predict",
        "50",
    ]);
    let c = start_corral(&backends_yaml(&[&a], 1)).await;
    wait_routable(&c, &["llama3"]).await;

    let resp = reqwest::Client::new()
        .post(format!("{}/api/chat", c.url()))
        .json(&chat("llama3"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/x-ndjson"));
    let mut body = resp.bytes_stream();
    let first = tokio::time::timeout(DEADLINE, body.next())
        .await
        .expect("first chunk")
        .unwrap()
        .unwrap();
    let line: Value = serde_json::from_slice(first.split(|b| *b == b'\n').next().unwrap()).unwrap();
    assert_eq!(line["done"], false);
    // The first chunk arrived while the backend is still generating: nothing buffered.
    assert_eq!(a.stats().await["active"], 1);

    drop(body);
    wait_for("the sim to see the cancel", || async {
        (a.stats().await["cancelled"] == 1).then_some(())
    })
    .await;
    // And corral released its in-flight slot.
    wait_for("in-flight to drop to 0", || async {
        let v = c.admin("/api/v1/backends").await?;
        (v[0]["in_flight"] == 0).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_sse_streams_through_a_real_openai_client() {
    use async_openai::config::OpenAIConfig;
    use async_openai::types::chat::{
        ChatCompletionRequestUserMessageArgs, CreateChatCompletionRequestArgs,
    };

    let a = start_sim(&[
        "--models",
        "llama3",
        "--tokens-per-sec",
        "500",
        "--num-predict",
        "12",
    ]);
    let c = start_corral(&backends_yaml(&[&a], 1)).await;
    wait_routable(&c, &["llama3"]).await;

    let config = OpenAIConfig::new()
        .with_api_base(format!("{}/v1", c.url()))
        .with_api_key("unused");
    let client = async_openai::Client::with_config(config);
    let req = CreateChatCompletionRequestArgs::default()
        .model("llama3")
        .stream(true)
        .messages([ChatCompletionRequestUserMessageArgs::default()
            .content("hi")
            .build()
            .unwrap()
            .into()])
        .build()
        .unwrap();
    let mut stream = client.chat().create_stream(req).await.unwrap();
    let mut chunks = 0;
    let mut text = String::new();
    while let Some(chunk) = tokio::time::timeout(DEADLINE, stream.next())
        .await
        .expect("sse hung")
    {
        let chunk = chunk.expect("sse chunk");
        if let Some(t) = chunk.choices.first().and_then(|c| c.delta.content.clone()) {
            text.push_str(&t);
        }
        chunks += 1;
    }
    assert!(chunks >= 12, "got {chunks} chunks");
    assert!(!text.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_dying_mid_stream_ends_the_stream_with_an_error_line() {
    let a = start_sim(&[
        "--models",
        "llama3",
        "--tokens-per-sec",
        "200",
        "--num-predict",
        "40",
    ]);
    let c = start_corral(&backends_yaml(&[&a], 1)).await;
    wait_routable(&c, &["llama3"]).await;
    a.set_fault("die_mid_stream").await;

    let resp = c.post_json("/api/chat", &chat("llama3")).await;
    assert_eq!(resp.status(), 200);
    let lines = read_lines(resp).await.expect("stream ends cleanly");
    let last: Value = serde_json::from_str(lines.last().unwrap()).unwrap();
    assert!(
        last["error"].as_str().unwrap().contains("mid-stream"),
        "{last}"
    );
    assert!(lines.len() >= 2, "some tokens came first: {lines:?}");

    // The OpenAI dialect gets an SSE error event instead.
    let body =
        json!({"model": "llama3", "stream": true, "messages": [{"role": "user", "content": "x"}]});
    let resp = c.post_json("/v1/chat/completions", &body).await;
    let lines = read_lines(resp).await.expect("sse ends cleanly");
    let last = lines.last().unwrap().strip_prefix("data: ").unwrap();
    let v: Value = serde_json::from_str(last).unwrap();
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("mid-stream"),
        "{v}"
    );

    // ollama-rs sees its stream end instead of hanging.
    use ollama_rs::generation::chat::{request::ChatMessageRequest, ChatMessage};
    let client = c.ollama();
    let req = ChatMessageRequest::new("llama3".into(), vec![ChatMessage::user("x".into())]);
    let mut stream = client.send_chat_messages_stream(req).await.unwrap();
    let mut saw_done = false;
    while let Some(item) = tokio::time::timeout(DEADLINE, stream.next())
        .await
        .expect("ollama-rs hung")
    {
        saw_done |= item.is_ok_and(|c| c.done);
    }
    assert!(!saw_done);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalls_hit_the_idle_and_first_byte_timeouts() {
    let a = start_sim(&["--models", "llama3", "--tokens-per-sec", "200"]);
    let c = start_corral(&format!(
        "timeouts: {{idle: 1s, first_byte: 2s}}\n{}",
        backends_yaml(&[&a], 1)
    ))
    .await;
    wait_routable(&c, &["llama3"]).await;

    a.set_fault("hang_mid_stream").await;
    let resp = c.post_json("/api/chat", &chat("llama3")).await;
    assert_eq!(resp.status(), 200, "{}", c.proc.log());
    let lines = read_lines(resp).await.expect("stream ends");
    let last: Value = serde_json::from_str(lines.last().unwrap()).unwrap();
    assert!(
        last["error"].as_str().unwrap().contains("stalled"),
        "{last}"
    );

    a.set_fault("hang").await;
    let resp = c.post_json("/api/chat", &chat("llama3")).await;
    assert_eq!(resp.status(), 504);
    let v: Value = resp.json().await.unwrap();
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("no response within 2s"),
        "{v}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_errors_pass_through_untouched() {
    let a = start_sim(&["--models", "llama3"]);
    let c = start_corral(&backends_yaml(&[&a], 1)).await;
    wait_routable(&c, &["llama3"]).await;
    a.set_fault("busy").await;
    let r = c.post_json("/api/chat", &chat("llama3")).await;
    assert_eq!(r.status(), 503);
    assert!(r.json::<Value>().await.unwrap()["error"]
        .as_str()
        .unwrap()
        .starts_with("server busy"));
    a.set_fault("fail").await;
    let r = c
        .post_json("/api/generate", &json!({"model": "llama3", "prompt": "x"}))
        .await;
    assert_eq!(r.status(), 500);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_failure_is_retried_on_another_backend() {
    let a = start_sim(&["--models", "llama3", "--tokens-per-sec", "1000"]);
    let mut b = start_sim(&["--models", "llama3", "--tokens-per-sec", "1000"]);
    // Probes so rare that corral still believes in b after it dies.
    let c = start_corral(&format!(
        "health: {{interval: 1h}}\nrouting: {{strategy: round_robin}}\n{}",
        backends_yaml(&[&a, &b], 4)
    ))
    .await;
    wait_routable(&c, &["llama3"]).await;
    c.wait_healthy(2).await;
    b.proc.kill();
    for _ in 0..6 {
        let r = c
            .post_json(
                "/api/generate",
                &json!({"model": "llama3", "prompt": "x", "stream": false}),
            )
            .await;
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["x-corral-backend"], "b0");
    }
    assert_eq!(a.stats().await["requests"], 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_healthy_backend_is_a_503_with_retry_after() {
    let mut a = start_sim(&["--models", "llama3"]);
    let c = start_corral(&format!(
        "health: {{interval: 200ms, unhealthy_threshold: 1}}\n{}",
        backends_yaml(&[&a], 1)
    ))
    .await;
    wait_routable(&c, &["llama3"]).await;
    a.proc.kill();
    let http = reqwest::Client::new();
    let url = format!("{}/api/chat", c.url());
    let r = wait_for("corral to notice the backend is down", || {
        let r = http.post(&url).json(&chat("llama3")).send();
        async move { r.await.ok().filter(|r| r.status() == 503) }
    })
    .await;
    assert!(r.headers().contains_key("retry-after"));
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"],
        "no healthy backend available"
    );
}
