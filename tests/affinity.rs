//! Ollama-aware routing end to end: conversations stick to their box yet spread,
//! resident models are preferred, a busy box is not favoured, the admission queue
//! admits and times out, and ejected backends recover.

mod common;

use common::*;
use futures::StreamExt;
use serde_json::{json, Value};

fn turn(model: &str, history: &[&str]) -> Value {
    let messages: Vec<Value> = history
        .iter()
        .enumerate()
        .map(|(i, m)| json!({"role": if i % 2 == 0 { "user" } else { "assistant" }, "content": m}))
        .collect();
    json!({"model": model, "stream": false, "messages": messages})
}

async fn chat(c: &Corral, body: &Value) -> (u16, String, String) {
    let r = reqwest::Client::new()
        .post(format!("{}/api/chat", c.url()))
        .json(body)
        .send()
        .await
        .expect("chat");
    let header = |n: &str| {
        r.headers()
            .get(n)
            .map_or("", |v| v.to_str().unwrap_or(""))
            .to_string()
    };
    let (backend, route) = (header("x-corral-backend"), header("x-corral-route"));
    let status = r.status().as_u16();
    let _ = r.bytes().await;
    (status, backend, route)
}

async fn backends(c: &Corral) -> Vec<Value> {
    let v = c.admin("/api/v1/backends").await.expect("admin backends");
    v.as_array().expect("backend list").clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conversations_stick_to_their_box_and_spread_over_the_fleet() {
    let sims: Vec<Sim> = (0..4)
        .map(|_| {
            start_sim(&[
                "--models",
                "llama3",
                "--resident",
                "llama3",
                "--tokens-per-sec",
                "1000",
                "--parallel",
                "2",
            ])
        })
        .collect();
    let c = start_corral(&backends_yaml(&sims.iter().collect::<Vec<_>>(), 2)).await;
    wait_routable(&c, &["llama3"]).await;
    c.wait_healthy(4).await;

    let mut homes = std::collections::HashSet::new();
    for conv in 0..16 {
        let first = format!("conversation {conv}: tell me about topic {conv}");
        let mut seen = Vec::new();
        let mut history = vec![first.as_str()];
        for t in 0..3 {
            let (status, backend, route) = chat(&c, &turn("llama3", &history)).await;
            assert_eq!(status, 200);
            assert_eq!(route, "affinity", "conversation {conv} turn {t}");
            seen.push(backend);
            history.extend(["an answer", "and a follow-up"]);
        }
        assert!(
            seen.windows(2).all(|w| w[0] == w[1]),
            "conversation {conv} moved: {seen:?}"
        );
        homes.insert(seen[0].clone());
    }
    assert!(homes.len() >= 3, "16 conversations used only {homes:?}");

    // An explicit session header pins a conversation whatever its body says.
    let http = reqwest::Client::new();
    let mut pinned = std::collections::HashSet::new();
    for i in 0..5 {
        let r = http
            .post(format!("{}/api/generate", c.url()))
            .header("X-Corral-Session", "user-42")
            .json(&json!({"model": "llama3", "prompt": format!("unrelated prompt {i}"), "stream": false}))
            .send()
            .await
            .unwrap();
        pinned.insert(
            r.headers()["x-corral-backend"]
                .to_str()
                .unwrap()
                .to_string(),
        );
    }
    assert_eq!(pinned.len(), 1, "{pinned:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resident_models_are_preferred_to_cold_loads() {
    let cold_a = start_sim(&[
        "--models",
        "llama3,qwen",
        "--resident",
        "qwen",
        "--load-time",
        "1s",
    ]);
    let warm = start_sim(&["--models", "llama3,qwen", "--resident", "llama3"]);
    let cold_b = start_sim(&[
        "--models",
        "llama3,qwen",
        "--resident",
        "qwen",
        "--load-time",
        "1s",
    ]);
    let c = start_corral(&backends_yaml(&[&cold_a, &warm, &cold_b], 2)).await;
    wait_routable(&c, &["llama3"]).await;
    c.wait_healthy(3).await;
    for i in 0..6 {
        let (status, backend, route) = chat(&c, &turn("llama3", &[&format!("question {i}")])).await;
        assert_eq!(status, 200);
        assert_eq!(backend, "b1", "request {i} went {route}");
    }
    assert_eq!(warm.stats().await["loads"], 0);
    assert_eq!(cold_a.stats().await["loads"], 0);
    assert_eq!(cold_b.stats().await["loads"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_backend_is_not_favoured() {
    let busy = start_sim(&["--models", "llama3", "--resident", "llama3"]);
    let fine = start_sim(&[
        "--models",
        "llama3",
        "--resident",
        "llama3",
        "--tokens-per-sec",
        "1000",
    ]);
    let c = start_corral(&format!(
        "routing: {{strategy: least_loaded}}\nhealth: {{busy_backoff: 1h}}\n{}",
        backends_yaml(&[&busy, &fine], 4)
    ))
    .await;
    wait_routable(&c, &["llama3"]).await;
    c.wait_healthy(2).await;
    busy.set_fault("busy").await;
    // Under naive least-connections a box that refuses instantly always looks idle and
    // gets every other request. Here its refusal is retried elsewhere at once, and it
    // counts as full afterwards.
    for i in 0..10 {
        let (status, backend, _) = chat(&c, &turn("llama3", &[&format!("q{i}")])).await;
        assert_eq!(status, 200, "request {i}");
        assert_eq!(backend, "b1");
    }
    assert!(busy.stats().await["requests"].as_u64().unwrap() <= 1);
    let b = backends(&c).await;
    assert_eq!(b[0]["capacity"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_queue_admits_in_turn_times_out_and_drops_leavers() {
    // One slot; a long stream holds it.
    let a = start_sim(&[
        "--models",
        "llama3",
        "--resident",
        "llama3",
        "--tokens-per-sec",
        "5",
        "--num-predict",
        "200",
    ]);
    let c = start_corral(&format!(
        "routing: {{queue_timeout: 2s, queue_size: 2}}\n{}",
        backends_yaml(&[&a], 1)
    ))
    .await;
    wait_routable(&c, &["llama3"]).await;
    let http = reqwest::Client::new();
    let url = format!("{}/api/chat", c.url());
    let body = json!({"model": "llama3", "messages": [{"role": "user", "content": "long story"}]});
    let depth = || async { c.admin("/api/v1/status").await?["queue_depth"].as_u64() };

    let holder = http.post(&url).json(&body).send().await.unwrap();
    let mut holder_body = holder.bytes_stream();
    holder_body.next().await.unwrap().unwrap();

    // Deadline: a queued request gets a 503 with Retry-After once queue_timeout passes.
    let r = http.post(&url).json(&body).send().await.unwrap();
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"));
    assert!(r.json::<Value>().await.unwrap()["error"]
        .as_str()
        .unwrap()
        .contains("no backend became free"));

    // Admission: a queued request starts as soon as the slot frees.
    let waiter = tokio::spawn({
        let (http, url, body) = (http.clone(), url.clone(), body.clone());
        async move {
            http.post(&url)
                .json(&body)
                .send()
                .await
                .map(|r| r.status().as_u16())
        }
    });
    wait_for("the request to queue", || async {
        (depth().await? == 1).then_some(())
    })
    .await;
    // A full queue answers at once: one waiting + this one fits, the third does not.
    let second = tokio::spawn({
        let (http, url, body) = (http.clone(), url.clone(), body.clone());
        async move {
            http.post(&url)
                .json(&body)
                .send()
                .await
                .map(|r| r.status().as_u16())
        }
    });
    wait_for("two queued", || async {
        (depth().await? == 2).then_some(())
    })
    .await;
    let r = http.post(&url).json(&body).send().await.unwrap();
    assert_eq!(r.status(), 503);
    assert!(r.json::<Value>().await.unwrap()["error"]
        .as_str()
        .unwrap()
        .contains("queue full"));
    // A client that gives up leaves the queue at once.
    second.abort();
    wait_for("the leaver to leave", || async {
        (depth().await? == 1).then_some(())
    })
    .await;

    drop(holder_body);
    assert_eq!(waiter.await.unwrap().unwrap(), 200);
    assert_eq!(depth().await, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_backends_are_ejected_and_recover() {
    let flaky = start_sim(&[
        "--models",
        "llama3",
        "--resident",
        "llama3",
        "--tokens-per-sec",
        "1000",
    ]);
    let steady = start_sim(&[
        "--models",
        "llama3",
        "--resident",
        "llama3",
        "--tokens-per-sec",
        "1000",
    ]);
    let c = start_corral(&format!(
        "routing: {{strategy: round_robin}}\nhealth: {{eject_after: 2, eject_base: 1s}}\n{}",
        backends_yaml(&[&flaky, &steady], 4)
    ))
    .await;
    wait_routable(&c, &["llama3"]).await;
    c.wait_healthy(2).await;
    flaky.set_fault("fail").await;

    // Round robin alternates until two failures in a row eject the flaky box.
    let mut failures = 0;
    for i in 0..8 {
        let (status, backend, _) = chat(&c, &turn("llama3", &[&format!("q{i}")])).await;
        if status == 500 {
            assert_eq!(backend, "b0");
            failures += 1;
        }
    }
    assert_eq!(failures, 2, "ejected after two failures");
    assert_eq!(backends(&c).await[0]["ejected"], true);

    // Repaired: after the backoff it is on probation, then fully back after a success.
    flaky.set_fault("none").await;
    wait_for("the flaky box to take traffic again", || async {
        let (status, backend, _) = chat(&c, &turn("llama3", &["again"])).await;
        (status == 200 && backend == "b0").then_some(())
    })
    .await;
    // The success is recorded as the request is logged, just after the answer left.
    wait_for("probation to end", || async {
        let b = backends(&c).await;
        (b[0]["ejected"] == false && b[0]["probation"] == false).then_some(())
    })
    .await;
}
