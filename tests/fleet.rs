//! Fleet operations: pull goes where the model is missing (or everywhere), delete and
//! copy reach every box holding the model, a request can target one box, and blobs
//! meet the create that uses them.

mod common;

use common::*;
use serde_json::{json, Value};

async fn sim_models(s: &Sim) -> Vec<String> {
    let v: Value = reqwest::get(format!("{}/api/tags", s.url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut names: Vec<String> = v["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap().to_string())
        .collect();
    names.sort();
    names
}

async fn two_boxes(a_models: &str, b_models: &str) -> (Sim, Sim, Corral) {
    let a = start_sim(&["--models", a_models]);
    let b = start_sim(&["--models", b_models]);
    let c = start_corral(&backends_yaml(&[&a, &b], 2)).await;
    c.wait_healthy(2).await;
    (a, b, c)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_goes_to_a_box_lacking_the_model_or_to_all() {
    let (a, b, c) = two_boxes("llama3", "qwen").await;
    let http = reqwest::Client::new();
    let r = c.post_json("/api/pull", &json!({"model": "llama3"})).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-corral-backend"], "b1");
    let lines = read_lines(r).await.unwrap();
    assert!(lines.last().unwrap().contains("success"), "{lines:?}");
    assert_eq!(sim_models(&b).await, ["llama3:latest", "qwen:latest"]);

    // Everywhere, progress tagged by box.
    let r = http
        .post(format!("{}/api/pull", c.url()))
        .header("X-Corral-Target", "all")
        .json(&json!({"model": "mistral"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let lines: Vec<Value> = read_lines(r)
        .await
        .unwrap()
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    for name in ["b0", "b1"] {
        assert!(
            lines
                .iter()
                .any(|l| l["backend"] == name && l["status"] == "success"),
            "{lines:?}"
        );
    }
    assert!(sim_models(&a).await.contains(&"mistral:latest".to_string()));
    assert!(sim_models(&b).await.contains(&"mistral:latest".to_string()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_and_copy_reach_every_box_holding_the_model() {
    let (a, b, c) = two_boxes("llama3,qwen", "llama3").await;
    wait_model(&c, "llama3").await;
    let http = reqwest::Client::new();
    let r = c
        .post_json(
            "/api/copy",
            &json!({"source": "llama3", "destination": "mine"}),
        )
        .await;
    assert_eq!(r.status(), 200);
    assert!(sim_models(&a).await.contains(&"mine:latest".to_string()));
    assert!(sim_models(&b).await.contains(&"mine:latest".to_string()));

    let r = http
        .delete(format!("{}/api/delete", c.url()))
        .json(&json!({"model": "llama3"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(sim_models(&a).await, ["mine:latest", "qwen:latest"]);
    assert_eq!(sim_models(&b).await, ["mine:latest"]);
    // corral's own view follows promptly: llama3 is gone from the fleet.
    let url = format!("{}/api/tags", c.url());
    wait_for("merged tags to drop llama3", || {
        let url = url.clone();
        async move {
            let v: Value = reqwest::get(&url).await.ok()?.json().await.ok()?;
            (!v["models"]
                .as_array()?
                .iter()
                .any(|m| m["name"] == "llama3:latest"))
            .then_some(())
        }
    })
    .await;
    let r = http
        .delete(format!("{}/api/delete", c.url()))
        .json(&json!({"model": "llama3"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_can_target_one_box() {
    let (_a, _b, c) = two_boxes("llama3", "llama3").await;
    let http = reqwest::Client::new();
    for _ in 0..3 {
        let r = http
            .post(format!("{}/api/generate", c.url()))
            .header("X-Corral-Target", "b1")
            .json(&json!({"model": "llama3", "prompt": "x", "stream": false}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["x-corral-backend"], "b1");
        assert_eq!(r.headers()["x-corral-route"], "targeted");
    }
    let r = http
        .post(format!("{}/api/generate", c.url()))
        .header("X-Corral-Target", "nope")
        .json(&json!({"model": "llama3", "prompt": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"],
        "unknown backend 'nope'"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blobs_and_the_create_using_them_meet_on_one_box() {
    use sha2::Digest;
    let (_a, _b, c) = two_boxes("llama3", "llama3").await;
    let http = reqwest::Client::new();
    let blob = vec![7u8; 300_000];
    let digest = format!("sha256:{:x}", sha2::Sha256::digest(&blob));
    let r = http
        .post(format!("{}/api/blobs/{digest}", c.url()))
        .body(blob)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let r = c
        .post_json(
            "/api/create",
            &json!({"model": "custom", "files": {"model.gguf": digest}, "stream": false}),
        )
        .await;
    assert_eq!(r.status(), 200, "{:?}", r.text().await);
}

/// The names the fleet lists in corral's merged `/api/tags`.
async fn fleet_models(c: &Corral) -> Vec<String> {
    let v: Value = reqwest::get(format!("{}/api/tags", c.url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap().to_string())
        .collect()
}

/// A model-changing operation answers only once corral's view of each box it touched
/// follows, so the very next request sees the change. Health rounds are an hour apart
/// here: only the re-probe before the answer can explain a fresh view. Each step is
/// repeated, because a view that is merely usually fresh would pass once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_next_request_sees_what_an_operation_changed() {
    let a = start_sim(&["--models", "llama3"]);
    let b = start_sim(&["--models", "llama3"]);
    let c = start_corral(&format!(
        "health: {{interval: 1h}}\n{}",
        backends_yaml(&[&a, &b], 2)
    ))
    .await;
    c.wait_healthy(2).await;
    let http = reqwest::Client::new();
    for i in 0..5 {
        let copy = format!("copy{i}:latest");
        let r = c
            .post_json(
                "/api/copy",
                &json!({"source": "llama3", "destination": copy}),
            )
            .await;
        assert_eq!(r.status(), 200);
        assert!(
            fleet_models(&c).await.contains(&copy),
            "copy {i} not listed"
        );
        // Back to back: the delete must reach both boxes the copy reached.
        let r = http
            .delete(format!("{}/api/delete", c.url()))
            .json(&json!({"model": copy}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "delete {i}");
        assert_eq!(r.headers()["x-corral-backend"], "b0,b1", "delete {i}");
        assert!(!sim_models(&a).await.contains(&copy), "{copy} left on b0");
        assert!(!sim_models(&b).await.contains(&copy), "{copy} left on b1");
        assert!(
            !fleet_models(&c).await.contains(&copy),
            "{copy} still listed"
        );
    }

    // Pull, streamed and not, then list at once.
    for (i, stream) in [(0, true), (1, false), (2, true)] {
        let model = format!("fresh{i}:latest");
        let r = c
            .post_json("/api/pull", &json!({"model": model, "stream": stream}))
            .await;
        assert_eq!(r.status(), 200);
        let lines = read_lines(r).await.unwrap();
        assert!(lines.last().unwrap().contains("success"), "{lines:?}");
        assert!(
            fleet_models(&c).await.contains(&model),
            "{model} not listed right after its pull"
        );
    }

    // Create (on the pinned box), then use the new model at once.
    let r = c
        .post_json(
            "/api/create",
            &json!({"model": "made", "from": "llama3", "stream": false}),
        )
        .await;
    assert_eq!(r.status(), 200, "{:?}", r.text().await);
    assert!(fleet_models(&c).await.contains(&"made:latest".to_string()));
    let r = c
        .post_json(
            "/api/generate",
            &json!({"model": "made", "prompt": "hi", "stream": false}),
        )
        .await;
    assert_eq!(r.status(), 200);
}
