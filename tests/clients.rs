//! Client keys end to end, with real `corral` and `corral sim` processes: 401/403/429
//! in Ollama's and OpenAI's error shapes, the key kept from the backend, usage in the
//! metrics, `/api/v1/clients` and `corral clients` equal to what the answers carried,
//! keys that come and go with a reload, the OpenAI SDK unchanged with an `api_key`, and
//! an interactive key served ahead of a batch key's flood in the admission queue.

mod common;

use common::*;
use serde_json::{json, Value};

const TEAM: &str = "sk-team-a-0123456789";
const LIMITED: &str = "sk-limited-0123456789";
const TOKENS: &str = "sk-tokens-0123456789";

fn clients_yaml() -> String {
    format!(
        "clients:\n  keys:\n    - {{name: team-a, key: {TEAM}, models: ['llama3*']}}\n    \
         - {{name: limited, key: {LIMITED}, requests_per_minute: 2}}\n    \
         - {{name: tokens, key: {TOKENS}, tokens_per_minute: 5}}\n"
    )
}

/// One request to the proxy with an optional key: status, headers and JSON body.
async fn call(
    c: &Corral,
    method: reqwest::Method,
    path: &str,
    key: Option<&str>,
    body: Option<Value>,
) -> (u16, reqwest::header::HeaderMap, Value) {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .expect("http client");
    let mut req = client.request(method, format!("{}{path}", c.url()));
    if let Some(k) = key {
        req = req.bearer_auth(k);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await.expect("request to corral");
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let text = r.text().await.expect("body");
    (
        status,
        headers,
        serde_json::from_str(&text).unwrap_or(Value::Null),
    )
}

fn chat(model: &str) -> Value {
    json!({"model": model, "stream": false, "messages": [{"role": "user", "content": "hi"}]})
}

async fn post(c: &Corral, path: &str, key: Option<&str>, body: Value) -> (u16, Value) {
    let (s, _, v) = call(c, reqwest::Method::POST, path, key, Some(body)).await;
    (s, v)
}

/// The status of a non-streamed llama3 chat sent with `key`.
async fn chat_status(c: &Corral, key: &str) -> u16 {
    post(c, "/api/chat", Some(key), chat("llama3")).await.0
}

/// Waits until `model` is routable, asking with `key` (listings need one).
async fn wait_listed(c: &Corral, key: &str, model: &str) {
    wait_for(&format!("{model} listed"), || async {
        let (s, _, v) = call(c, reqwest::Method::GET, "/api/tags", Some(key), None).await;
        let listed = v["models"].as_array()?.iter().any(|m| {
            m["name"]
                .as_str()
                .is_some_and(|n| n.starts_with(&format!("{model}:")))
        });
        (s == 200 && listed).then_some(())
    })
    .await
}

fn retry_after(h: &reqwest::header::HeaderMap) -> u64 {
    h.get("retry-after")
        .and_then(|v| v.to_str().ok()?.parse().ok())
        .expect("Retry-After in seconds")
}

fn openai_error(v: &Value) -> (&str, &str) {
    (
        v["error"]["type"].as_str().unwrap_or_default(),
        v["error"]["code"].as_str().unwrap_or_default(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_refuse_in_each_dialect_and_usage_adds_up() {
    let sim = start_sim(&["--models", "llama3,phi3", "--parallel", "4"]);
    let c = start_corral(&format!("{}{}", clients_yaml(), backends_yaml(&[&sim], 4))).await;
    // Polled with another key: team-a's counts below are exact.
    wait_listed(&c, TOKENS, "llama3").await;
    let openai =
        |model: &str| json!({"model": model, "messages": [{"role": "user", "content": "hi"}]});

    // Health checks stay open; everything else needs a key.
    let (s, _, _) = call(&c, reqwest::Method::HEAD, "/", None, None).await;
    assert_eq!(s, 200);
    let (s, _, v) = call(&c, reqwest::Method::GET, "/api/version", None, None).await;
    assert_eq!((s, v["version"].is_string()), (200, true));
    let (s, h, v) = call(&c, reqwest::Method::GET, "/api/tags", None, None).await;
    assert_eq!(s, 401, "{v}");
    assert_eq!(h["www-authenticate"], "Bearer");
    assert!(
        v["error"].as_str().unwrap().contains("missing API key"),
        "{v}"
    );
    let (s, v) = post(&c, "/api/chat", Some("sk-not-a-key-0000"), chat("llama3")).await;
    assert_eq!((s, v["error"].as_str()), (401, Some("invalid API key")));
    let (s, v) = post(&c, "/v1/chat/completions", None, openai("llama3")).await;
    assert_eq!(s, 401);
    assert_eq!(
        openai_error(&v),
        ("invalid_request_error", "invalid_api_key"),
        "{v}"
    );
    assert!(v["error"]["message"].is_string());

    // The allow-list: 403, and the listings show only what the key may use.
    let (s, v) = post(&c, "/api/chat", Some(TEAM), chat("phi3")).await;
    assert_eq!(s, 403, "{v}");
    assert_eq!(v["error"], "client 'team-a' may not use model 'phi3'");
    let (s, v) = post(&c, "/v1/chat/completions", Some(TEAM), openai("phi3")).await;
    assert_eq!((s, openai_error(&v).1), (403, "model_not_allowed"), "{v}");
    let (_, _, tags) = call(&c, reqwest::Method::GET, "/api/tags", Some(TEAM), None).await;
    let names: Vec<&str> = tags["models"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["name"].as_str())
        .collect();
    assert_eq!(names, ["llama3:latest"], "{tags}");

    // Usage: what the answers said is what corral counted.
    let mut prompt = 0;
    let mut completion = 0;
    for _ in 0..2 {
        let (s, v) = post(&c, "/api/chat", Some(TEAM), chat("llama3")).await;
        assert_eq!(s, 200, "{v}");
        prompt += v["prompt_eval_count"].as_u64().unwrap();
        completion += v["eval_count"].as_u64().unwrap();
    }
    let (s, v) = post(&c, "/v1/chat/completions", Some(TEAM), openai("llama3")).await;
    assert_eq!(s, 200, "{v}");
    prompt += v["usage"]["prompt_tokens"].as_u64().unwrap();
    completion += v["usage"]["completion_tokens"].as_u64().unwrap();
    assert!(prompt > 0 && completion > 0);

    // requests_per_minute: 2 → the third and fourth are 429, 30 s apart per request.
    for _ in 0..2 {
        let (s, v) = post(
            &c,
            "/api/generate",
            Some(LIMITED),
            json!({"model": "phi3", "prompt": "x", "stream": false}),
        )
        .await;
        assert_eq!(s, 200, "{v}");
    }
    let (s, h, v) = call(
        &c,
        reqwest::Method::POST,
        "/api/chat",
        Some(LIMITED),
        Some(chat("phi3")),
    )
    .await;
    assert_eq!(s, 429, "{v}");
    assert!((1..=30).contains(&retry_after(&h)), "{h:?}");
    assert!(
        v["error"].as_str().unwrap().contains("requests_per_minute"),
        "{v}"
    );
    let (s, h, v) = call(
        &c,
        reqwest::Method::POST,
        "/v1/chat/completions",
        Some(LIMITED),
        Some(openai("phi3")),
    )
    .await;
    assert_eq!(s, 429);
    assert!(retry_after(&h) >= 1);
    assert_eq!(openai_error(&v), ("requests", "rate_limit_exceeded"), "{v}");

    // tokens_per_minute: 5 → one answer spends more than that; the next is refused
    // until the bucket refills.
    let (s, v) = post(&c, "/api/chat", Some(TOKENS), chat("llama3")).await;
    assert_eq!(s, 200, "{v}");
    let spent = v["prompt_eval_count"].as_u64().unwrap() + v["eval_count"].as_u64().unwrap();
    assert!(spent > 5);
    let (s, h, v) = call(
        &c,
        reqwest::Method::POST,
        "/v1/chat/completions",
        Some(TOKENS),
        Some(openai("llama3")),
    )
    .await;
    assert_eq!(s, 429, "{v}");
    assert_eq!(openai_error(&v), ("tokens", "rate_limit_exceeded"), "{v}");
    // A debt of `spent - 5` tokens repaid at 5 a minute: minutes, not seconds (less
    // the time this test took since, so no exact figure).
    let debt_secs = (spent - 5) * 60 / 5;
    assert!((60..=debt_secs + 1).contains(&retry_after(&h)), "{h:?}");

    // No key ever reached the backend.
    assert_eq!(sim.stats().await["with_authorization"], 0);

    // The admin view and the metrics say the same as the answers.
    let view = c.admin("/api/v1/clients").await.expect("clients view");
    assert_eq!(view["enabled"], true);
    let team = &view["clients"][0];
    assert_eq!(team["name"], "team-a");
    assert_eq!(
        (team["requests"].as_u64(), team["refused_model"].as_u64()),
        (Some(3), Some(2))
    );
    assert_eq!(team["prompt_tokens"].as_u64(), Some(prompt));
    assert_eq!(team["completion_tokens"].as_u64(), Some(completion));
    assert_eq!(team["in_flight"], 0);
    let limited = &view["clients"][1];
    assert_eq!(
        (
            limited["requests"].as_u64(),
            limited["throttled_requests"].as_u64()
        ),
        (Some(2), Some(2))
    );
    assert_eq!(limited["remaining_requests"], 0);
    let tokens = &view["clients"][2];
    assert_eq!(
        tokens["remaining_tokens"].as_i64().map(|r| r < 0),
        Some(true),
        "{tokens}"
    );
    assert_eq!(tokens["throttled_tokens"], 1);

    let text = scrape(&c).await;
    for line in [
        format!("corral_client_tokens_total{{client=\"team-a\",kind=\"prompt\"}} {prompt}"),
        format!("corral_client_tokens_total{{client=\"team-a\",kind=\"completion\"}} {completion}"),
        // Three answers and one listing.
        "corral_client_requests_total{client=\"team-a\",code=\"200\"} 4".to_string(),
        "corral_client_requests_total{client=\"team-a\",code=\"403\"} 2".to_string(),
        "corral_client_requests_total{client=\"limited\",code=\"429\"} 2".to_string(),
        "corral_client_requests_total{client=\"tokens\",code=\"429\"} 1".to_string(),
    ] {
        assert!(text.contains(&line), "missing {line}");
    }

    // `corral clients`: the table and the JSON.
    let api = admin_url(&c);
    let (ok, out, err) = corral_cli(&["clients", "--api-url", &api]);
    assert!(ok, "{err}");
    let row = out.lines().find(|l| l.starts_with("team-a")).expect(&out);
    assert!(
        row.contains("interactive") && row.contains(&(prompt + completion).to_string()),
        "{out}"
    );
    let (ok, out, _) = corral_cli(&["clients", "--api-url", &api, "--json"]);
    let parsed: Value = serde_json::from_str(&out).expect("json");
    assert!(ok && parsed["clients"].as_array().map(Vec::len) == Some(3));

    // The access log names the client and never shows a key.
    c.proc.wait_log("client=\"team-a\"").await;
    let log = c.proc.log();
    assert!(log.contains("client=\"team-a\""), "{log}");
    for key in [TEAM, LIMITED, TOKENS, "sk-not-a-key-0000"] {
        assert!(!log.contains(key), "a key is in the log");
    }
}

/// Replaces the config file in one step and has corral re-read it now.
fn rewrite_and_reload(c: &Corral, yaml: &str) {
    let text = std::fs::read_to_string(c.config_path()).expect("config");
    let head: String = text.lines().take(3).map(|l| format!("{l}\n")).collect();
    let tmp = c.dir.path().join(".next.yaml");
    std::fs::write(&tmp, format!("{head}{yaml}")).expect("write config");
    std::fs::rename(&tmp, c.config_path()).expect("rename config");
    let (ok, _, err) = corral_cli(&["reload", "--api-url", &admin_url(c)]);
    assert!(ok, "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_adds_rotates_and_removes_keys() {
    let sim = start_sim(&["--models", "llama3"]);
    let backends = backends_yaml(&[&sim], 2);
    let one = "clients:\n  keys:\n    - {name: a, key: first-key-of-a}\n";
    let c = start_corral(&format!("{one}{backends}")).await;
    wait_listed(&c, "first-key-of-a", "llama3").await;
    assert_eq!(chat_status(&c, "first-key-of-a").await, 200);
    assert_eq!(chat_status(&c, "key-of-new-b").await, 401);

    // a's key rotated (its counters stay), b added.
    rewrite_and_reload(
        &c,
        &format!("clients:\n  keys:\n    - {{name: a, key: second-key-of-a}}\n    - {{name: b, key: key-of-new-b}}\n{backends}"),
    );
    assert_eq!(chat_status(&c, "first-key-of-a").await, 401);
    assert_eq!(chat_status(&c, "second-key-of-a").await, 200);
    assert_eq!(chat_status(&c, "key-of-new-b").await, 200);
    let view = c.admin("/api/v1/clients").await.expect("clients");
    assert_eq!(view["clients"][0]["requests"], 2, "{view}");

    // No keys left: nobody gets in. No `clients:` at all: the port is open again.
    rewrite_and_reload(&c, &format!("clients: {{keys: []}}\n{backends}"));
    assert_eq!(chat_status(&c, "key-of-new-b").await, 401);
    rewrite_and_reload(&c, &backends);
    assert_eq!(post(&c, "/api/chat", None, chat("llama3")).await.0, 200);
    let view = c.admin("/api/v1/clients").await.expect("clients");
    assert_eq!(view["enabled"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openai_sdk_works_unchanged_with_an_api_key() {
    use async_openai::config::OpenAIConfig;
    use async_openai::types::chat::{
        ChatCompletionRequestUserMessageArgs, CreateChatCompletionRequestArgs,
    };
    let sim = start_sim(&["--models", "llama3"]);
    let c = start_corral(&format!("{}{}", clients_yaml(), backends_yaml(&[&sim], 2))).await;
    wait_listed(&c, TEAM, "llama3").await;
    let client = |key: &str| {
        async_openai::Client::with_config(
            OpenAIConfig::new()
                .with_api_base(format!("{}/v1", c.url()))
                .with_api_key(key),
        )
    };
    let req = CreateChatCompletionRequestArgs::default()
        .model("llama3")
        .messages([ChatCompletionRequestUserMessageArgs::default()
            .content("hi")
            .build()
            .unwrap()
            .into()])
        .build()
        .unwrap();
    let answer = client(TEAM)
        .chat()
        .create(req.clone())
        .await
        .expect("chat with a key");
    assert!(answer.usage.is_some_and(|u| u.completion_tokens > 0));
    let refused = client("sk-wrong-0123456789").chat().create(req).await;
    let e = refused.expect_err("a wrong key is refused").to_string();
    assert!(e.contains("invalid API key"), "{e}");
    assert_eq!(sim.stats().await["with_authorization"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interactive_key_is_served_ahead_of_a_batch_flood() {
    // One slot: requests are served one at a time, in the queue's order.
    let sim = start_sim(&["--models", "llama3", "--parallel", "1"]);
    let yaml = format!(
        "clients:\n  keys:\n    - {{name: bulk, key: batch-key-0123, priority: batch}}\n    \
         - {{name: chat, key: interactive-key-0123}}\n{}",
        backends_yaml(&[&sim], 1)
    );
    let c = std::sync::Arc::new(start_corral(&yaml).await);
    wait_listed(&c, "interactive-key-0123", "llama3").await;

    // Each request notes when its answer's header came: the order of service.
    let order = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let send = |name: &'static str, key: &'static str, tokens: u64| {
        let c = c.clone();
        let order = order.clone();
        tokio::spawn(async move {
            let r = reqwest::Client::new()
                .post(format!("{}/api/chat", c.url()))
                .bearer_auth(key)
                .json(
                    &json!({"model": "llama3", "options": {"num_predict": tokens},
                              "messages": [{"role": "user", "content": "hi"}]}),
                )
                .send()
                .await
                .expect("request");
            order.lock().unwrap().push(name);
            assert_eq!(r.status(), 200);
            read_lines(r).await.expect("stream")
        })
    };
    // b1 holds the one slot with an answer that would take minutes, until the test
    // hangs up on it: nothing is served before the whole queue is in place.
    let b1 = send("b1", "batch-key-0123", 100_000);
    wait_for("b1 in flight", || async {
        let v = c.admin("/api/v1/clients").await?;
        (v["clients"][0]["in_flight"] == 1 && order.lock().unwrap().len() == 1).then_some(())
    })
    .await;
    let mut tasks = Vec::new();
    for name in ["b2", "b3", "b4"] {
        tasks.push(send(name, "batch-key-0123", 8));
    }
    wait_for("three batch requests queued", || async {
        let v = c.admin("/api/v1/status").await?;
        (v["queue_depth"] == 3).then_some(())
    })
    .await;
    tasks.push(send("i1", "interactive-key-0123", 8));
    wait_for("the interactive request queued behind them", || async {
        let v = c.admin("/api/v1/status").await?;
        (v["queue_depth"] == 4).then_some(())
    })
    .await;
    b1.abort();
    for t in tasks {
        t.await.expect("request task");
    }
    let mut order = order.lock().unwrap().clone();
    assert_eq!(order[..2], ["b1", "i1"], "{order:?}");
    // The batch requests were sent at once: among themselves any order is theirs.
    order[2..].sort();
    assert_eq!(order[2..], ["b2", "b3", "b4"]);
}
