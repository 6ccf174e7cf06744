//! `/v1` routes: OpenAI JSON and SSE shapes, and the OpenAI error shape.

use serde_json::{json, Value};

use super::{fast_args, start};
use crate::sim::SimArgs;

/// The JSON payloads of an SSE body, and whether it ended with `[DONE]`.
fn sse_payloads(body: &str) -> (Vec<Value>, bool) {
    let mut payloads = Vec::new();
    let mut done = false;
    for event in body.split("\n\n").filter(|event| !event.is_empty()) {
        let data = event
            .strip_prefix("data: ")
            .expect("every event is a data line");
        if data == "[DONE]" {
            done = true;
        } else {
            assert!(!done, "nothing may follow [DONE]");
            payloads.push(serde_json::from_str(data).expect("JSON payload"));
        }
    }
    (payloads, done)
}

#[tokio::test]
async fn chat_completions_stream_sse_and_finish_with_done() {
    let sim = start(fast_args()).await;
    let body = json!({
        "model": "llama3",
        "messages": [{"role": "user", "content": [{"type": "text", "text": "hi there"}]}],
        "stream": true,
        "stream_options": {"include_usage": true},
    });
    let response = sim.post("/v1/chat/completions", body).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let (chunks, done) = sse_payloads(&response.text().await.expect("body"));
    assert!(done);
    assert_eq!(
        chunks.len(),
        7,
        "5 tokens, the finishing chunk, the usage chunk"
    );
    let id = chunks[0]["id"].clone();
    assert!(id.as_str().is_some_and(|id| id.starts_with("chatcmpl-")));
    for chunk in &chunks[..5] {
        assert_eq!(chunk["object"], "chat.completion.chunk");
        assert_eq!(chunk["id"], id);
        assert_eq!(chunk["model"], "llama3");
        assert_eq!(chunk["choices"][0]["delta"]["role"], "assistant");
        assert_eq!(chunk["choices"][0]["finish_reason"], Value::Null);
    }
    assert_eq!(chunks[5]["choices"][0]["finish_reason"], "stop");
    assert_eq!(chunks[6]["choices"], json!([]));
    assert_eq!(
        chunks[6]["usage"],
        json!({"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8})
    );
}

#[tokio::test]
async fn completions_answer_in_openai_json_or_sse() {
    let sim = start(fast_args()).await;
    let whole: Value = sim
        .post(
            "/v1/completions",
            json!({"model": "llama3", "prompt": "once upon", "max_tokens": 2}),
        )
        .await
        .json()
        .await
        .expect("JSON");
    assert_eq!(whole["object"], "text_completion");
    assert_eq!(whole["choices"][0]["finish_reason"], "length");
    assert_eq!(whole["usage"]["completion_tokens"], 2);
    assert!(whole["choices"][0]["text"].is_string());

    let chat: Value = sim
        .post(
            "/v1/chat/completions",
            json!({"model": "llama3", "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await
        .json()
        .await
        .expect("JSON");
    assert_eq!(chat["object"], "chat.completion");
    assert_eq!(chat["system_fingerprint"], "fp_ollama");
    assert_eq!(chat["choices"][0]["message"]["role"], "assistant");
    assert_eq!(chat["usage"]["total_tokens"], 7);

    let streamed = sim
        .post(
            "/v1/completions",
            json!({"model": "llama3", "prompt": "x", "stream": true}),
        )
        .await
        .text()
        .await
        .expect("body");
    let (chunks, done) = sse_payloads(&streamed);
    assert!(done);
    assert_eq!(
        chunks.last().map(|c| &c["choices"][0]["finish_reason"]),
        Some(&json!("stop"))
    );
}

#[tokio::test]
async fn models_and_embeddings_have_openai_shapes() {
    let sim = start(SimArgs {
        models: vec!["llama3".into(), "all-minilm".into()],
        ..fast_args()
    })
    .await;
    let list = sim.get_json("/v1/models").await;
    assert_eq!(list["object"], "list");
    assert_eq!(list["data"][1]["id"], "llama3:latest");
    assert_eq!(list["data"][1]["object"], "model");
    assert_eq!(list["data"][1]["owned_by"], "library");
    assert!(list["data"][1]["created"].is_i64());

    let one = sim.get_json("/v1/models/llama3").await;
    assert_eq!(one["id"], "llama3");

    let missing = sim
        .http
        .get(sim.url("/v1/models/nope"))
        .send()
        .await
        .expect("GET");
    assert_eq!(missing.status(), 404);
    let error: Value = missing.json().await.expect("JSON");
    assert_eq!(
        error,
        json!({"error": {"message": "model 'nope' not found", "type": "not_found_error", "param": null, "code": null}})
    );

    let embeddings: Value = sim
        .post(
            "/v1/embeddings",
            json!({"model": "all-minilm", "input": ["a", "b c"]}),
        )
        .await
        .json()
        .await
        .expect("JSON");
    assert_eq!(embeddings["object"], "list");
    assert_eq!(embeddings["data"][1]["index"], 1);
    assert_eq!(embeddings["data"][1]["object"], "embedding");
    assert_eq!(embeddings["usage"]["prompt_tokens"], 3);

    let no_model = sim
        .post("/v1/chat/completions", json!({"messages": []}))
        .await;
    assert_eq!(no_model.status(), 400);
    let error: Value = no_model.json().await.expect("JSON");
    assert_eq!(error["error"]["type"], "invalid_request_error");
}
