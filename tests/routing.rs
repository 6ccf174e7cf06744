//! Backend choice: least loaded against capacity, fair, round robin as a baseline, and
//! never a backend that is down or was never probed.

mod common;

use common::*;
use futures::StreamExt;
use serde_json::json;

async fn in_flight(c: &Corral) -> Vec<(String, u64)> {
    let v = c.admin("/api/v1/backends").await.expect("admin backends");
    let list = v.as_array().expect("backend list");
    list.iter()
        .map(|b| {
            (
                b["name"].as_str().unwrap_or("").to_string(),
                b["in_flight"].as_u64().unwrap_or(0),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_loaded_fills_backends_by_capacity() {
    // Slow streams so that requests overlap: 2 tokens/s × 40 tokens.
    let args = [
        "--models",
        "llama3",
        "--tokens-per-sec",
        "2",
        "--num-predict",
        "40",
        "--parallel",
        "4",
    ];
    let a = start_sim(&args);
    let b = start_sim(&args);
    let yaml = format!(
        "routing: {{strategy: least_loaded}}\nbackends:\n  - {{name: small, url: 'http://{}', max_concurrency: 1}}\n  - {{name: big, url: 'http://{}', max_concurrency: 3}}\n",
        a.addr, b.addr
    );
    let c = start_corral(&yaml).await;
    wait_routable(&c, &["llama3"]).await;

    // Open 4 streams one after another, each confirmed started before the next.
    let mut open = Vec::new();
    let mut served_by = Vec::new();
    for _ in 0..4 {
        let r = c
            .post_json(
                "/api/chat",
                &json!({"model": "llama3", "messages": [{"role": "user", "content": "hi"}]}),
            )
            .await;
        served_by.push(
            r.headers()["x-corral-backend"]
                .to_str()
                .unwrap()
                .to_string(),
        );
        assert_eq!(r.headers()["x-corral-route"], "least_loaded");
        let mut s = r.bytes_stream();
        s.next().await.unwrap().unwrap();
        open.push(s);
    }
    served_by.sort();
    // Capacity 1 vs 3: loads 1/1 and 3/3 is the only fair split.
    assert_eq!(served_by, ["big", "big", "big", "small"]);
    assert_eq!(
        in_flight(&c).await,
        [("small".into(), 1), ("big".into(), 3)]
    );

    // Every path gives the slot back: here, clients going away.
    drop(open);
    wait_for("in-flight back to zero", || async {
        in_flight(&c)
            .await
            .iter()
            .all(|(_, n)| *n == 0)
            .then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_alternates() {
    let a = start_sim(&["--models", "llama3"]);
    let b = start_sim(&["--models", "llama3"]);
    let c = start_corral(&format!(
        "routing: {{strategy: round_robin}}\n{}",
        backends_yaml(&[&a, &b], 1)
    ))
    .await;
    wait_routable(&c, &["llama3"]).await;
    c.wait_healthy(2).await;
    let mut seen = Vec::new();
    for _ in 0..6 {
        let r = c.post_json("/api/show", &json!({"model": "llama3"})).await;
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["x-corral-route"], "round_robin");
        seen.push(
            r.headers()["x-corral-backend"]
                .to_str()
                .unwrap()
                .to_string(),
        );
    }
    for pair in seen.windows(2) {
        assert_ne!(pair[0], pair[1], "{seen:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unprobed_and_unhealthy_backends_get_no_traffic() {
    let a = start_sim(&["--models", "llama3"]);
    let dead = free_port();
    // `ghost` never answered a probe: it must never be tried, so no request pays a
    // connect error for it.
    let yaml = format!(
        "routing: {{strategy: round_robin}}\nbackends:\n  - {{name: ghost, url: 'http://127.0.0.1:{dead}'}}\n  - {{name: live, url: 'http://{}'}}\n",
        a.addr
    );
    let c = start_corral(&yaml).await;
    wait_routable(&c, &["llama3"]).await;
    for _ in 0..5 {
        let r = c.post_json("/api/show", &json!({"model": "llama3"})).await;
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["x-corral-backend"], "live");
    }
    let v = c.admin("/api/v1/backends").await.expect("admin backends");
    assert_eq!(v[0]["name"], "ghost");
    assert_eq!(v[0]["healthy"], false);
    assert_eq!(v[0]["requests"], 0);
    assert!(v[0]["last_error"].as_str().is_some());
}
