//! Native `/api` routes: shapes, streaming, metrics, prompt cache, errors.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::{fast_args, ndjson, start, METRICS};
use crate::sim::SimArgs;

#[tokio::test]
async fn health_and_listing_routes_answer_like_ollama() {
    let sim = start(SimArgs {
        models: vec!["llama3".into(), "qwen2.5:7b".into()],
        resident: vec!["qwen2.5:7b".into()],
        ..fast_args()
    })
    .await;
    let root = sim.http.get(sim.url("/")).send().await.expect("GET /");
    assert_eq!(root.status(), 200);
    assert_eq!(root.text().await.expect("body"), "Ollama is running");
    let head = sim
        .http
        .head(sim.url("/api/version"))
        .send()
        .await
        .expect("HEAD");
    assert_eq!(head.status(), 200);
    assert_eq!(
        sim.get_json("/api/version").await,
        json!({"version": "0.12.6"})
    );

    let tags = sim.get_json("/api/tags").await;
    let names: Vec<&str> = tags["models"]
        .as_array()
        .expect("models")
        .iter()
        .map(|model| model["name"].as_str().expect("name"))
        .collect();
    assert_eq!(names, ["llama3:latest", "qwen2.5:7b"]);
    let qwen = &tags["models"][1];
    assert_eq!(qwen["details"]["family"], "qwen2");
    assert_eq!(qwen["details"]["parameter_size"], "7B");
    assert_eq!(qwen["digest"].as_str().map(str::len), Some(64));
    for field in ["model", "modified_at", "size"] {
        assert!(!qwen[field].is_null(), "tags entry lacks {field}");
    }

    let ps = sim.get_json("/api/ps").await;
    assert_eq!(ps["models"].as_array().map(Vec::len), Some(1));
    for field in [
        "name",
        "model",
        "size",
        "size_vram",
        "digest",
        "details",
        "expires_at",
        "context_length",
    ] {
        assert!(!ps["models"][0][field].is_null(), "ps entry lacks {field}");
    }

    let missing = sim.http.get(sim.url("/nope")).send().await.expect("GET");
    assert_eq!(missing.status(), 404);
}

#[tokio::test]
async fn chat_streams_ndjson_and_the_next_turn_hits_the_prompt_cache() {
    let sim = start(fast_args()).await;
    let first_turn = json!([{"role": "user", "content": "why is the sky blue"}]);
    let response = sim
        .post(
            "/api/chat",
            json!({"model": "llama3", "messages": first_turn}),
        )
        .await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/x-ndjson");
    let lines = ndjson(&response.text().await.expect("body"));
    assert_eq!(lines.len(), 6, "5 tokens and the final chunk: {lines:?}");
    for chunk in &lines[..5] {
        assert_eq!(chunk["done"], false);
        assert_eq!(chunk["model"], "llama3");
        assert_eq!(chunk["message"]["role"], "assistant");
        assert!(chunk["created_at"].is_string());
        assert!(METRICS.iter().all(|metric| chunk.get(metric).is_none()));
    }
    let last = &lines[5];
    assert_eq!(
        (&last["done"], &last["done_reason"]),
        (&json!(true), &json!("stop"))
    );
    assert_eq!(last["message"]["content"], "");
    assert!(METRICS.iter().all(|metric| last[metric].is_u64()));
    assert_eq!(last["prompt_eval_count"], 6, "user + 5 words");
    assert_eq!(last["eval_count"], 5);
    assert!(
        last["load_duration"].as_u64() >= Some(20_000_000),
        "cold load is reported"
    );

    let reply: String = lines
        .iter()
        .filter_map(|l| l["message"]["content"].as_str())
        .collect();
    let second_turn = json!([
        {"role": "user", "content": "why is the sky blue"},
        {"role": "assistant", "content": reply},
        {"role": "user", "content": "and at sunset"},
    ]);
    let answer: Value = sim
        .post(
            "/api/chat",
            json!({"model": "llama3:latest", "messages": second_turn, "stream": false}),
        )
        .await
        .json()
        .await
        .expect("JSON");
    assert_eq!(answer["done"], true);
    assert_eq!(answer["load_duration"], 0);
    assert_eq!(
        answer["prompt_eval_count"], 4,
        "only `user and at sunset` is new"
    );
    assert_eq!(
        answer["message"]["content"]
            .as_str()
            .map(|c| c.split(' ').count()),
        Some(5)
    );

    let stats = sim.stats().await;
    assert_eq!(
        (&stats["requests"], &stats["completed"], &stats["loads"]),
        (&json!(2), &json!(2), &json!(1))
    );
    assert_eq!(stats["prompt_tokens_cached"], 12);
    assert_eq!(stats["by_model"]["llama3:latest"]["completed"], 2);
}

#[tokio::test]
async fn generate_honours_num_predict_and_preload() {
    let sim = start(fast_args()).await;
    let preload: Value = sim
        .post("/api/generate", json!({"model": "llama3"}))
        .await
        .json()
        .await
        .expect("JSON");
    assert_eq!(
        (&preload["done"], &preload["done_reason"]),
        (&json!(true), &json!("load"))
    );
    assert_eq!(preload["response"], "");
    assert_eq!(
        sim.get_json("/api/ps").await["models"][0]["name"],
        "llama3:latest"
    );

    let body = json!({"model": "llama3", "prompt": "hello there", "system": "be brief",
                      "stream": false, "options": {"num_predict": 3}});
    let answer: Value = sim
        .post("/api/generate", body)
        .await
        .json()
        .await
        .expect("JSON");
    assert_eq!(answer["done_reason"], "length");
    assert_eq!(answer["eval_count"], 3);
    assert_eq!(answer["prompt_eval_count"], 4);
    assert_eq!(answer["load_duration"], 0);
    assert_eq!(
        answer["response"].as_str().map(|r| r.split(' ').count()),
        Some(3)
    );

    let unload: Value = sim
        .post("/api/generate", json!({"model": "llama3", "keep_alive": 0}))
        .await
        .json()
        .await
        .expect("JSON");
    assert_eq!(unload["done_reason"], "unload");
    assert_eq!(sim.get_json("/api/ps").await["models"], json!([]));
}

#[tokio::test]
async fn headers_wait_for_the_first_token() {
    let sim = start(SimArgs {
        load_time: Duration::from_millis(300),
        ..fast_args()
    })
    .await;
    let started = Instant::now();
    let response = sim
        .post("/api/generate", json!({"model": "llama3", "prompt": "hi"}))
        .await;
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "headers came before the load finished"
    );
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn request_errors_use_ollama_messages_and_status_codes() {
    let sim = start(fast_args()).await;
    let cases = [
        (
            "/api/chat",
            json!({"messages": []}),
            400,
            "model is required",
        ),
        (
            "/api/generate",
            json!({"model": "nope", "prompt": "x"}),
            404,
            "model 'nope' not found",
        ),
        (
            "/api/show",
            json!({"name": "nope"}),
            404,
            "model 'nope' not found",
        ),
        (
            "/api/embed",
            json!({"model": "", "input": "x"}),
            400,
            "model is required",
        ),
        (
            "/api/generate",
            json!({"model": "llama3", "prompt": "x", "keep_alive": "soon"}),
            400,
            "time: invalid duration \"soon\"",
        ),
    ];
    for (path, body, status, message) in cases {
        let response = sim.post(path, body).await;
        assert_eq!(response.status(), status, "{path}");
        let error: Value = response.json().await.expect("JSON error");
        assert_eq!(error, json!({ "error": message }), "{path}");
    }
    let invalid = sim
        .http
        .post(sim.url("/api/chat"))
        .body("{nope")
        .send()
        .await
        .expect("sent");
    assert_eq!(invalid.status(), 400);
    assert!(invalid.json::<Value>().await.expect("JSON")["error"].is_string());
    assert_eq!(sim.stats().await["failed"], 5);
}

#[tokio::test]
async fn show_and_embeddings_have_ollama_shapes() {
    let sim = start(SimArgs {
        models: vec!["llama3".into(), "nomic-embed-text".into()],
        ..fast_args()
    })
    .await;
    let show: Value = sim
        .post("/api/show", json!({"model": "llama3"}))
        .await
        .json()
        .await
        .expect("JSON");
    for field in [
        "modelfile",
        "parameters",
        "template",
        "details",
        "model_info",
        "capabilities",
    ] {
        assert!(!show[field].is_null(), "show lacks {field}");
    }
    assert_eq!(show["capabilities"], json!(["completion"]));

    let body = json!({"model": "nomic-embed-text", "input": ["a b", "c"]});
    let embed: Value = sim
        .post("/api/embed", body)
        .await
        .json()
        .await
        .expect("JSON");
    assert_eq!(embed["model"], "nomic-embed-text");
    assert_eq!(embed["embeddings"].as_array().map(Vec::len), Some(2));
    assert_eq!(embed["embeddings"][0].as_array().map(Vec::len), Some(8));
    assert_eq!(embed["prompt_eval_count"], 3);
    assert!(embed["total_duration"].is_u64() && embed["load_duration"].is_u64());

    let legacy: Value = sim
        .post(
            "/api/embeddings",
            json!({"model": "nomic-embed-text", "prompt": "a b"}),
        )
        .await
        .json()
        .await
        .expect("JSON");
    assert_eq!(
        legacy["embedding"], embed["embeddings"][0],
        "embeddings are deterministic"
    );
}

#[tokio::test]
async fn loopback_listener_refuses_foreign_host_headers_like_ollama() {
    let sim = start(fast_args()).await;
    let foreign = sim
        .http
        .get(sim.url("/api/tags"))
        .header("Host", "corral.example:11434")
        .send()
        .await
        .expect("GET");
    assert_eq!(foreign.status(), 403);
    assert_eq!(sim.stats().await["last_host"], "corral.example:11434");

    let local = sim
        .http
        .get(sim.url("/api/tags"))
        .send()
        .await
        .expect("GET");
    assert_eq!(local.status(), 200);
    assert_eq!(sim.stats().await["last_host"], sim.addr.to_string());
}
