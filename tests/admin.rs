//! The admin API's writes: run-time backends (persisted across a restart), drain,
//! maintenance mode, the bearer token, and refusing an open admin listener.

mod common;

use common::*;
use serde_json::{json, Value};

fn http() -> reqwest::Client {
    reqwest::Client::new()
}

async fn backends(c: &Corral) -> Vec<Value> {
    let v: Value = http()
        .get(format!("{}/api/v1/backends", admin_url(c)))
        .send()
        .await
        .expect("backends")
        .json()
        .await
        .expect("json");
    v.as_array().expect("array").clone()
}

async fn backend(c: &Corral, name: &str) -> Option<Value> {
    backends(c).await.into_iter().find(|b| b["name"] == name)
}

/// POSTs to the admin API; returns status and JSON body.
async fn post(c: &Corral, path: &str, body: Option<Value>, token: Option<&str>) -> (u16, Value) {
    let mut req = http().post(format!("{}{path}", admin_url(c)));
    if let Some(b) = body {
        req = req.json(&b);
    }
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let r = req.send().await.expect("admin post");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn delete(c: &Corral, path: &str) -> (u16, Value) {
    let r = http()
        .delete(format!("{}{path}", admin_url(c)))
        .send()
        .await
        .expect("admin delete");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

fn slow_chat() -> Value {
    json!({"model": "llama3", "messages": [{"role": "user", "content": "a long story"}]})
}

fn quick_generate() -> Value {
    json!({"model": "llama3", "prompt": "x", "stream": false, "options": {"num_predict": 1}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runtime_backends_are_added_removed_and_survive_a_restart() {
    let a = start_sim(&["--models", "llama3", "--tokens-per-sec", "1000"]);
    let b = start_sim(&["--models", "mistral", "--tokens-per-sec", "1000"]);
    let state = tempfile::tempdir().expect("state dir");
    let yaml = format!(
        "state_dir: '{}'\nbackends:\n  - {{name: a, url: 'http://{}'}}\n",
        state.path().display(),
        a.addr
    );
    let c = start_corral(&yaml).await;
    wait_routable(&c, &["llama3"]).await;

    let add = json!({"name": "b", "url": format!("http://{}", b.addr), "max_concurrency": 2});
    let (status, body) = post(&c, "/api/v1/backends", Some(add.clone()), None).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["persisted"], true);
    assert_eq!(body["backend"]["dynamic"], true);
    wait_model(&c, "mistral").await;
    let r = http()
        .post(format!("{}/api/generate", c.url()))
        .json(&json!({"model": "mistral", "prompt": "x", "stream": false}))
        .send()
        .await
        .expect("generate");
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-corral-backend"], "b");

    // Adding it again is an idempotent update.
    let (status, body) = post(&c, "/api/v1/backends", Some(add), None).await;
    assert_eq!((status, &body["created"]), (200, &json!(false)), "{body}");

    // Errors: a YAML backend's name, an invalid URL, a ttl, an unknown name.
    let (status, body) = post(
        &c,
        "/api/v1/backends",
        Some(json!({"name": "a", "url": "http://127.0.0.1:1"})),
        None,
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (409, Some("conflict")),
        "{body}"
    );
    let (status, body) = post(
        &c,
        "/api/v1/backends",
        Some(json!({"name": "x", "url": "ftp://h"})),
        None,
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap_or("")
            .contains("unsupported scheme"),
        "{body}"
    );
    let (status, _) = post(
        &c,
        "/api/v1/backends",
        Some(json!({"name": "x", "url": "http://h", "ttl": "30s"})),
        None,
    )
    .await;
    assert_eq!(status, 400);
    let (status, body) = delete(&c, "/api/v1/backends/nope").await;
    assert_eq!(
        (status, body["code"].as_str()),
        (404, Some("unknown_backend")),
        "{body}"
    );
    let (status, _) = delete(&c, "/api/v1/backends/a").await;
    assert_eq!(status, 409);
    let (status, _) = post(&c, "/api/v1/backends/nope/drain", None, None).await;
    assert_eq!(status, 404);

    // Drain flags persist too.
    let (status, body) = post(&c, "/api/v1/backends/a/drain", None, None).await;
    assert_eq!(status, 200, "{body}");

    // Restart on the same state directory: `b` and the drain of `a` come back.
    drop(c);
    let c = start_corral(&yaml).await;
    let restored = backend(&c, "b").await.expect("b restored");
    assert_eq!(restored["dynamic"], true);
    assert_eq!(restored["max_concurrency"], 2);
    assert_eq!(backend(&c, "a").await.expect("a")["draining"], true);
    wait_model(&c, "mistral").await;

    let (status, body) = delete(&c, "/api/v1/backends/b").await;
    assert_eq!(status, 200, "{body}");
    assert!(backend(&c, "b").await.is_none());
    let saved: Value = serde_json::from_str(
        &std::fs::read_to_string(state.path().join("state.json")).expect("state file"),
    )
    .expect("state json");
    assert_eq!(saved["backends"], json!([]), "{saved}");
    assert_eq!(saved["drained"], json!(["a"]), "{saved}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drained_backend_finishes_its_streams_and_gets_nothing_new() {
    let args = [
        "--models",
        "llama3",
        "--tokens-per-sec",
        "6",
        "--num-predict",
        "40",
        "--parallel",
        "4",
    ];
    let a = start_sim(&args);
    let b = start_sim(&args);
    let c = start_corral(&format!(
        "routing: {{strategy: least_loaded}}\n{}",
        backends_yaml(&[&a, &b], 4)
    ))
    .await;
    wait_routable(&c, &["llama3"]).await;

    // A stream of several seconds, then drain the backend serving it.
    let stream = http()
        .post(format!("{}/api/chat", c.url()))
        .json(&slow_chat())
        .send()
        .await
        .expect("chat");
    assert_eq!(stream.status(), 200);
    let drained = stream.headers()["x-corral-backend"]
        .to_str()
        .expect("header")
        .to_string();
    let other = if drained == "b0" { "b1" } else { "b0" };
    let (status, body) = post(&c, &format!("/api/v1/backends/{drained}/drain"), None, None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["backend"]["draining"], true);

    // Listed as draining with its stream still in flight.
    let view = backend(&c, &drained).await.expect("drained backend");
    assert_eq!(view["draining"], true);
    assert_eq!(view["in_flight"], 1, "{view}");

    // New requests all go to the other backend.
    for _ in 0..4 {
        let r = http()
            .post(format!("{}/api/generate", c.url()))
            .json(&quick_generate())
            .send()
            .await
            .expect("generate");
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["x-corral-backend"], other);
    }

    // The stream that was running finishes normally.
    let lines = read_lines(stream).await.expect("stream");
    assert!(
        lines.last().is_some_and(|l| l.contains("\"done\":true")),
        "{lines:?}"
    );
    wait_for("the drained backend to be idle", || async {
        (backend(&c, &drained).await?["in_flight"] == 0).then_some(())
    })
    .await;

    // Undrained, it takes requests again.
    let (status, body) = post(
        &c,
        &format!("/api/v1/backends/{drained}/undrain"),
        None,
        None,
    )
    .await;
    assert_eq!(
        (status, &body["backend"]["draining"]),
        (200, &json!(false)),
        "{body}"
    );
    let before = backend(&c, &drained).await.expect("backend")["requests"].clone();
    wait_for("the undrained backend to serve again", || async {
        let r = http()
            .post(format!("{}/api/generate", c.url()))
            .json(&quick_generate())
            .send()
            .await
            .ok()?;
        (r.headers()["x-corral-backend"] == drained.as_str()).then_some(())
    })
    .await;
    assert_ne!(
        backend(&c, &drained).await.expect("backend")["requests"],
        before
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serving_disable_is_maintenance_mode() {
    let a = start_sim(&[
        "--models",
        "llama3",
        "--tokens-per-sec",
        "6",
        "--num-predict",
        "40",
        "--parallel",
        "4",
    ]);
    let c = start_corral(&backends_yaml(&[&a], 4)).await;
    wait_routable(&c, &["llama3"]).await;
    let admin = admin_url(&c);
    let ready = || async {
        http()
            .get(format!("{admin}/readyz"))
            .send()
            .await
            .expect("readyz")
            .status()
    };
    assert_eq!(ready().await, 200);

    let stream = http()
        .post(format!("{}/api/chat", c.url()))
        .json(&slow_chat())
        .send()
        .await
        .expect("chat");
    assert_eq!(stream.status(), 200);

    let (status, body) = post(&c, "/api/v1/serving/disable", None, None).await;
    assert_eq!((status, &body["serving"]), (200, &json!(false)));
    assert_eq!(ready().await, 503);
    let status: Value = http()
        .get(format!("{admin}/api/v1/status"))
        .send()
        .await
        .expect("status")
        .json()
        .await
        .expect("json");
    assert_eq!(status["serving"], false);

    // New proxied requests: 503 + Retry-After in Ollama's shape (OpenAI's on /v1).
    let r = http()
        .post(format!("{}/api/generate", c.url()))
        .json(&quick_generate())
        .send()
        .await
        .expect("generate");
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"));
    let body: Value = r.json().await.expect("json");
    assert!(
        body["error"].as_str().unwrap_or("").contains("maintenance"),
        "{body}"
    );
    let r = http()
        .post(format!("{}/v1/chat/completions", c.url()))
        .json(&json!({"model": "llama3", "messages": [{"role": "user", "content": "x"}]}))
        .send()
        .await
        .expect("openai");
    assert_eq!(r.status(), 503);
    let body: Value = r.json().await.expect("json");
    assert!(body["error"]["message"].is_string(), "{body}");

    // The stream that was running finishes.
    let lines = read_lines(stream).await.expect("stream");
    assert!(
        lines.last().is_some_and(|l| l.contains("\"done\":true")),
        "{lines:?}"
    );

    let (status, _) = post(&c, "/api/v1/serving/enable", None, None).await;
    assert_eq!(status, 200);
    assert_eq!(ready().await, 200);
    let r = http()
        .post(format!("{}/api/generate", c.url()))
        .json(&quick_generate())
        .send()
        .await
        .expect("generate");
    assert_eq!(r.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutating_calls_need_the_token_when_one_is_set() {
    let a = start_sim(&["--models", "llama3"]);
    let c = start_corral(&backends_yaml(&[&a], 1)).await;
    wait_routable(&c, &["llama3"]).await;
    // Set a token by reloading the file with it.
    let text = std::fs::read_to_string(c.config_path()).expect("config");
    let with_token = text
        .lines()
        .map(|l| {
            if l.starts_with("admin:") {
                l.replace("'}", "', token: s3cret}")
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    let tmp = c.dir.path().join("next.yaml");
    std::fs::write(&tmp, with_token + "\n").expect("write");
    std::fs::rename(&tmp, c.config_path()).expect("rename");
    wait_for("the token to apply", || async {
        let (status, _) = post(&c, "/api/v1/serving/enable", None, None).await;
        (status == 401).then_some(())
    })
    .await;

    let (status, body) = post(&c, "/api/v1/backends/b0/drain", None, None).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (401, Some("unauthorized")),
        "{body}"
    );
    let (status, _) = post(&c, "/api/v1/backends/b0/drain", None, Some("wrong")).await;
    assert_eq!(status, 401);
    let (status, _) = post(&c, "/api/v1/backends/b0/drain", None, Some("s3cret")).await;
    assert_eq!(status, 200);
    let (status, _) = post(&c, "/api/v1/backends/b0/undrain", None, Some("s3cret")).await;
    assert_eq!(status, 200);
    // Reads stay open.
    assert_eq!(backends(&c).await.len(), 1);
    let r = http()
        .get(format!("{}/metrics", admin_url(&c)))
        .send()
        .await
        .expect("metrics");
    assert_eq!(r.status(), 200);
}

#[test]
fn an_open_admin_listener_without_a_token_refuses_to_start() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("c.yaml");
    let yaml = format!(
        "listen: 127.0.0.1:{}\nadmin: {{listen: '0.0.0.0:{}'}}\n",
        free_port(),
        free_port()
    );
    std::fs::write(&path, yaml).expect("write");
    let out = std::process::Command::new(BIN)
        .args(["serve", "-c"])
        .arg(&path)
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not a loopback address"), "{err}");
}
