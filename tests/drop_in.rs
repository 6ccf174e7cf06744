//! The drop-in surface: what corral answers for the fleet, what it proxies, and that
//! real Ollama clients see one Ollama.

mod common;

use common::*;
use futures::StreamExt;
use ollama_rs::generation::chat::request::ChatMessageRequest;
use ollama_rs::generation::chat::ChatMessage;
use ollama_rs::generation::completion::request::GenerationRequest;
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleet_endpoints_are_answered_as_one_ollama() {
    let a = start_sim(&[
        "--models",
        "llama3,qwen2.5:0.5b",
        "--resident",
        "llama3",
        "--version",
        "0.12.6",
    ]);
    let b = start_sim(&[
        "--models",
        "llama3:latest,mistral",
        "--resident",
        "mistral",
        "--version",
        "0.11.10",
    ]);
    let c = start_corral(&backends_yaml(&[&a, &b], 2)).await;
    wait_routable(&c, &["llama3", "qwen2.5:0.5b", "mistral"]).await;
    let http = reqwest::Client::new();

    // `HEAD /` is what the ollama CLI sends first.
    let r = http.head(c.url()).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r = http.get(c.url()).send().await.unwrap();
    assert_eq!(r.text().await.unwrap(), "Ollama is running");

    // The oldest version in the fleet: no client is promised a feature a box lacks.
    let v: Value = http
        .get(format!("{}/api/version", c.url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["version"], "0.11.10");

    // Merged and de-duplicated, through a real client.
    let mut names: Vec<String> = c
        .ollama()
        .list_local_models()
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.name)
        .collect();
    names.sort();
    assert_eq!(names, ["llama3:latest", "mistral:latest", "qwen2.5:0.5b"]);

    let ps: Value = http
        .get(format!("{}/api/ps", c.url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut resident: Vec<&str> = ps["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    resident.sort();
    assert_eq!(resident, ["llama3:latest", "mistral:latest"]);

    let models: Value = http
        .get(format!("{}/v1/models", c.url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(models["object"], "list");
    assert_eq!(models["data"].as_array().unwrap().len(), 3);
    let one = http
        .get(format!("{}/v1/models/mistral", c.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(one.status(), 200);
    assert_eq!(one.json::<Value>().await.unwrap()["id"], "mistral:latest");
    let none = http
        .get(format!("{}/v1/models/nope", c.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(none.status(), 404);
    assert!(none.json::<Value>().await.unwrap()["error"]["message"].is_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_aware_routing_with_a_real_client() {
    let a = start_sim(&["--models", "llama3", "--tokens-per-sec", "1000"]);
    let b = start_sim(&["--models", "mistral", "--tokens-per-sec", "1000"]);
    let c = start_corral(&backends_yaml(&[&a, &b], 2)).await;
    wait_routable(&c, &["llama3", "mistral"]).await;
    let client = c.ollama();

    // Streaming chat through ollama-rs, model named without its tag.
    let req = ChatMessageRequest::new(
        "mistral".into(),
        vec![ChatMessage::user("hello there".into())],
    );
    let mut stream = client.send_chat_messages_stream(req).await.unwrap();
    let mut text = String::new();
    let mut final_chunk = None;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.expect("chunk");
        text.push_str(&chunk.message.content);
        if chunk.done {
            final_chunk = chunk.final_data;
        }
    }
    assert!(!text.is_empty());
    let fin = final_chunk.expect("final chunk with metrics");
    assert!(fin.eval_count > 0 && fin.prompt_eval_count > 0);

    // Non-streaming generate with the explicit tag goes to the box that has it.
    let r = client
        .generate(GenerationRequest::new("llama3:latest".into(), "hi"))
        .await
        .unwrap();
    assert!(!r.response.is_empty());

    assert_eq!(b.stats().await["requests"], 1, "mistral chat went to b");
    assert_eq!(a.stats().await["requests"], 1, "llama3 generate went to a");

    // Every proxied answer names its backend.
    let r = reqwest::Client::new()
        .post(format!("{}/api/embed", c.url()))
        .json(&json!({"model": "llama3", "input": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-corral-backend"], "b0");
    assert!(r.headers().contains_key("x-corral-route"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_is_rewritten_to_the_backend() {
    let a = start_sim(&["--models", "llama3"]);
    let c = start_corral(&backends_yaml(&[&a], 1)).await;
    wait_routable(&c, &["llama3"]).await;
    let r = reqwest::Client::new()
        .post(format!("{}/api/show", c.url()))
        .header("Host", "corral.example:11434")
        .json(&json!({"model": "llama3"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(a.stats().await["last_host"], a.addr.to_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_bodies_are_streamed_not_buffered() {
    let a = start_sim(&[
        "--models",
        "llama3",
        "--tokens-per-sec",
        "1000",
        "--prefill-tokens-per-sec",
        "100000000",
    ]);
    let c = start_corral(&backends_yaml(&[&a], 2)).await;
    wait_routable(&c, &["llama3"]).await;
    let http = reqwest::Client::new();

    // A chat body far larger than Pingora's 64 KiB retry buffer, model first.
    let long = "word ".repeat(100_000);
    let body = json!({"model": "llama3", "stream": false, "messages": [{"role": "user", "content": long}]});
    let r = c.post_json("/api/chat", &body).await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert!(v["prompt_eval_count"].as_u64().unwrap() > 100_000, "{v}");

    // The model field after 64 KiB of other fields cannot be routed: a clear 400.
    let late = format!(
        "{{\"messages\":[{{\"role\":\"user\",\"content\":\"{long}\"}}],\"model\":\"llama3\"}}"
    );
    let r = http
        .post(format!("{}/api/chat", c.url()))
        .body(late)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let msg = r.json::<Value>().await.unwrap()["error"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(msg.contains("first 64 KiB"), "{msg}");

    // A 16 MiB blob goes through and arrives intact (the sim checks its sha256).
    use sha2::Digest;
    let blob: Vec<u8> = (0..16 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let digest = format!("sha256:{:x}", sha2::Sha256::digest(&blob));
    let url = format!("{}/api/blobs/{digest}", c.url());
    assert_eq!(http.head(&url).send().await.unwrap().status(), 404);
    let r = http.post(&url).body(blob).send().await.unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(http.head(&url).send().await.unwrap().status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_ollama_shaped_errors() {
    let a = start_sim(&["--models", "llama3"]);
    let c = start_corral(&backends_yaml(&[&a], 1)).await;
    wait_routable(&c, &["llama3"]).await;
    let http = reqwest::Client::new();

    let r = http
        .post(format!("{}/api/chat", c.url()))
        .body("model=llama3")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.json::<Value>().await.unwrap()["error"]
        .as_str()
        .unwrap()
        .contains("invalid JSON"));

    let r = c.post_json("/api/generate", &json!({"prompt": "x"})).await;
    assert_eq!(r.status(), 400);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"],
        "model is required"
    );

    let r = c.post_json("/api/chat", &json!({"model": "nope"})).await;
    assert_eq!(r.status(), 404);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"],
        "model 'nope:latest' not found"
    );

    // OpenAI routes answer in OpenAI's error shape.
    let r = c
        .post_json(
            "/v1/chat/completions",
            &json!({"model": "nope", "messages": []}),
        )
        .await;
    assert_eq!(r.status(), 404);
    let v: Value = r.json().await.unwrap();
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not found"),
        "{v}"
    );
    assert_eq!(v["error"]["type"], "invalid_request_error");
}
