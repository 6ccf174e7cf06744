//! Model management: pull, blobs + create, copy, delete, push.

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::{fast_args, ndjson, start, TestSim};
use crate::sim::models::hex;

async fn tag_names(sim: &TestSim) -> Vec<String> {
    let tags = sim.get_json("/api/tags").await;
    tags["models"]
        .as_array()
        .expect("models")
        .iter()
        .filter_map(|model| model["name"].as_str().map(str::to_string))
        .collect()
}

#[tokio::test]
async fn pull_streams_progress_then_the_model_is_on_disk() {
    let sim = start(fast_args()).await;
    let response = sim
        .post("/api/pull", json!({"model": "qwen2.5:0.5b"}))
        .await;
    assert_eq!(response.headers()["content-type"], "application/x-ndjson");
    let lines = ndjson(&response.text().await.expect("body"));
    assert_eq!(lines.first(), Some(&json!({"status": "pulling manifest"})));
    assert_eq!(lines.last(), Some(&json!({"status": "success"})));
    let layer = lines
        .iter()
        .find(|line| line["total"].is_u64())
        .expect("a layer line");
    assert!(layer["status"]
        .as_str()
        .is_some_and(|s| s.starts_with("pulling ")));
    assert!(layer["digest"]
        .as_str()
        .is_some_and(|d| d.starts_with("sha256:")));
    assert!(lines.contains(&json!({"status": "verifying sha256 digest"})));
    assert!(lines.contains(&json!({"status": "writing manifest"})));
    assert_eq!(tag_names(&sim).await, ["llama3:latest", "qwen2.5:0.5b"]);

    let quiet: Value = sim
        .post("/api/pull", json!({"name": "gemma3", "stream": false}))
        .await
        .json()
        .await
        .expect("JSON");
    assert_eq!(quiet, json!({"status": "success"}));
    assert!(tag_names(&sim).await.contains(&"gemma3:latest".to_string()));
}

#[tokio::test]
async fn blobs_then_create_then_copy_and_delete() {
    let sim = start(fast_args()).await;
    let content = vec![7u8; 300_000];
    let digest = format!("sha256:{}", hex(&Sha256::digest(&content)));
    let blob_url = sim.url(&format!("/api/blobs/{digest}"));
    assert_eq!(
        sim.http
            .head(&blob_url)
            .send()
            .await
            .expect("HEAD")
            .status(),
        404
    );

    let create = json!({"model": "mine", "files": {"model.gguf": digest}});
    let missing = sim.post("/api/create", create.clone()).await;
    assert_eq!(missing.status(), 400);

    let wrong = sim
        .http
        .post(&blob_url)
        .body(vec![1u8; 10])
        .send()
        .await
        .expect("POST");
    assert_eq!(wrong.status(), 400);
    let error: Value = wrong.json().await.expect("JSON");
    assert!(error["error"]
        .as_str()
        .is_some_and(|e| e.starts_with("digest mismatch")));

    let uploaded = sim
        .http
        .post(&blob_url)
        .body(content)
        .send()
        .await
        .expect("POST");
    assert_eq!(uploaded.status(), 201);
    assert_eq!(
        sim.http
            .head(&blob_url)
            .send()
            .await
            .expect("HEAD")
            .status(),
        200
    );

    let lines = ndjson(
        &sim.post("/api/create", create)
            .await
            .text()
            .await
            .expect("body"),
    );
    assert_eq!(lines.last(), Some(&json!({"status": "success"})));
    assert!(tag_names(&sim).await.contains(&"mine:latest".to_string()));

    let derived = sim
        .post(
            "/api/create",
            json!({"model": "derived", "from": "llama3", "system": "be kind", "stream": false}),
        )
        .await;
    assert_eq!(derived.status(), 200);
    let neither = sim.post("/api/create", json!({"model": "x"})).await;
    assert_eq!(neither.status(), 400);

    let copied = sim
        .post(
            "/api/copy",
            json!({"source": "mine", "destination": "yours:v2"}),
        )
        .await;
    assert_eq!(copied.status(), 200);
    let copy_missing = sim
        .post("/api/copy", json!({"source": "nope", "destination": "x"}))
        .await;
    assert_eq!(copy_missing.status(), 404);

    let delete = |model: &str| {
        sim.http
            .delete(sim.url("/api/delete"))
            .json(&json!({ "model": model }))
            .send()
    };
    assert_eq!(delete("mine").await.expect("DELETE").status(), 200);
    let gone = delete("mine").await.expect("DELETE");
    assert_eq!(gone.status(), 404);
    assert_eq!(
        gone.json::<Value>().await.expect("JSON"),
        json!({"error": "model 'mine' not found"})
    );
    assert_eq!(
        tag_names(&sim).await,
        ["derived:latest", "llama3:latest", "yours:v2"]
    );

    let pushed = sim.post("/api/push", json!({"model": "yours:v2"})).await;
    let lines = ndjson(&pushed.text().await.expect("body"));
    assert_eq!(lines.last(), Some(&json!({"status": "success"})));
    assert_eq!(
        sim.post("/api/push", json!({"model": "nope"}))
            .await
            .status(),
        404
    );
}
