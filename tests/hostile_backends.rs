//! Boxes that misbehave behind a real corral: a fleet operation still answers within
//! the configured deadlines with the bad box reported failed and the good box's part
//! done; a probe body that is huge or endless marks the box down with the size limit
//! named, costs bounded memory, and does not hold back the other boxes' probes.

mod common;

use std::time::{Duration, Instant};

use common::hostile::{healthy_probe, huge_tags, Behavior, HostileBackend};
use common::*;
use serde_json::{json, Value};

/// Fleet deadlines the tests configure: a box without an answer header is given up
/// after connect + first_byte = 3 s, one silent mid-body after 1 s.
const TIMEOUTS: &str = "timeouts: {connect: 1s, first_byte: 2s, idle: 1s}\n";
/// Each probe request is bounded by this; probe rounds come often.
const HEALTH: &str = "health: {interval: 200ms, timeout: 1s}\n";

/// b0 is a simulator holding llama3; b1 is a hostile box whose probes pass (listing
/// llama3 too, so delete and copy go to it) and whose every other answer is `ops`.
async fn sim_and_hostile(ops: Behavior) -> (Sim, HostileBackend, Corral) {
    let sim = start_sim(&["--models", "llama3"]);
    let hostile = HostileBackend::start(move |_, path| {
        healthy_probe(path, &["llama3:latest"]).unwrap_or_else(|| ops.clone())
    })
    .await;
    let yaml = format!(
        "{TIMEOUTS}{HEALTH}{}  - {{name: b1, url: '{}'}}\n",
        backends_yaml(&[&sim], 2),
        hostile.url()
    );
    let corral = start_corral(&yaml).await;
    corral.wait_healthy(2).await;
    (sim, hostile, corral)
}

async fn sim_models(s: &Sim) -> Vec<String> {
    let v: Value = reqwest::get(format!("{}/api/tags", s.url()))
        .await
        .expect("sim tags")
        .json()
        .await
        .expect("sim tags json");
    v["models"]
        .as_array()
        .expect("models list")
        .iter()
        .filter_map(|m| m["name"].as_str().map(str::to_string))
        .collect()
}

/// A client that gives up on a hung corral after the harness deadline, so a hang
/// fails the test instead of blocking it.
fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(DEADLINE)
        .build()
        .expect("http client")
}

/// Sends a fleet operation and returns its status, `"error"` message and how long it
/// took.
async fn fleet_op(req: reqwest::RequestBuilder) -> (u16, String, Duration) {
    let start = Instant::now();
    let r = req.send().await.expect("corral answers a fleet operation");
    let status = r.status().as_u16();
    let body: Value = r.json().await.unwrap_or(Value::Null);
    let error = body["error"].as_str().unwrap_or_default().to_string();
    (status, error, start.elapsed())
}

/// Pull to every box; the progress lines, each of which must parse.
async fn pull_all(c: &Corral, model: &str) -> Vec<Value> {
    let r = client()
        .post(format!("{}/api/pull", c.url()))
        .header("X-Corral-Target", "all")
        .json(&json!({ "model": model }))
        .send()
        .await
        .expect("pull to all");
    assert_eq!(r.status(), 200);
    read_lines(r)
        .await
        .expect("pull progress")
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("torn line {l:?}: {e}")))
        .collect()
}

fn error_of<'a>(lines: &'a [Value], backend: &str) -> Option<&'a str> {
    lines
        .iter()
        .find(|l| l["backend"] == backend && l.get("error").is_some())
        .and_then(|l| l["error"].as_str())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_box_fails_its_part_within_the_deadline_and_the_others_get_done() {
    let (sim, silent, c) = sim_and_hostile(Behavior::Silent).await;
    let http = client();

    let (status, error, took) = fleet_op(
        http.post(format!("{}/api/copy", c.url()))
            .json(&json!({"source": "llama3", "destination": "mine"})),
    )
    .await;
    eprintln!("copy with a silent box answered in {took:?}: {status} {error}");
    assert_eq!(status, 502);
    assert_eq!(error, "backend 'b1': no answer within 3s");
    assert!(sim_models(&sim).await.contains(&"mine:latest".to_string()));

    let lines = pull_all(&c, "mistral").await;
    assert!(
        lines
            .iter()
            .any(|l| l["backend"] == "b0" && l["status"] == "success"),
        "{lines:?}"
    );
    assert_eq!(
        error_of(&lines, "b1"),
        Some("no answer within 3s"),
        "{lines:?}"
    );
    assert!(sim_models(&sim)
        .await
        .contains(&"mistral:latest".to_string()));

    let (status, error, took) = fleet_op(
        http.delete(format!("{}/api/delete", c.url()))
            .json(&json!({"model": "llama3"})),
    )
    .await;
    eprintln!("delete with a silent box answered in {took:?}: {status} {error}");
    assert_eq!(status, 502);
    assert_eq!(error, "backend 'b1': no answer within 3s");
    assert!(!sim_models(&sim)
        .await
        .contains(&"llama3:latest".to_string()));

    // Every connection corral opened to the silent box was closed when it gave up.
    wait_for(
        "corral to close its connections to the silent box",
        || async { (silent.open_connections() == 0).then_some(()) },
    )
    .await;
    assert!(silent.requests("/api/delete") >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_leaves_takes_the_fleet_operation_with_it() {
    // first_byte far beyond the harness deadline: only the client leaving can end it.
    let sim = start_sim(&["--models", "llama3"]);
    let silent = HostileBackend::start(|_, path| {
        healthy_probe(path, &["llama3:latest"]).unwrap_or(Behavior::Silent)
    })
    .await;
    let yaml = format!(
        "timeouts: {{first_byte: 10m}}\n{HEALTH}{}  - {{name: b1, url: '{}'}}\n",
        backends_yaml(&[&sim], 2),
        silent.url()
    );
    let c = start_corral(&yaml).await;
    c.wait_healthy(2).await;

    let url = format!("{}/api/delete", c.url());
    let request = tokio::spawn(async move {
        reqwest::Client::new()
            .delete(url)
            .json(&json!({"model": "llama3"}))
            .send()
            .await
    });
    wait_for("the delete to reach the silent box", || async {
        (silent.requests("/api/delete") == 1).then_some(())
    })
    .await;
    request.abort();
    wait_for("corral to drop the silent box's connection", || async {
        (silent.open_connections() == 0).then_some(())
    })
    .await;
    // corral itself is fine and answers the next request.
    let r = reqwest::get(format!("{}/api/version", c.url()))
        .await
        .expect("version");
    assert_eq!(r.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_and_endless_fleet_answers_are_failures_not_successes() {
    let (sim, _garbage, c) = sim_and_hostile(Behavior::Garbage).await;
    let (status, error, _) = fleet_op(
        client()
            .delete(format!("{}/api/delete", c.url()))
            .json(&json!({"model": "llama3"})),
    )
    .await;
    assert_eq!(status, 502);
    assert!(
        error.starts_with("backend 'b1': answered something that is not a JSON object: \"<html>"),
        "{error}"
    );
    assert!(!sim_models(&sim)
        .await
        .contains(&"llama3:latest".to_string()));
    let lines = pull_all(&c, "mistral").await;
    let b1 = error_of(&lines, "b1").unwrap_or_default();
    assert!(
        b1.starts_with("answered something that is not a JSON object"),
        "{lines:?}"
    );
    drop(c);

    // A box that answers forever without a newline: cut at the limit, not buffered.
    let (sim, _endless, c) = sim_and_hostile(Behavior::Endless).await;
    let (status, error, _) = fleet_op(
        client()
            .post(format!("{}/api/copy", c.url()))
            .json(&json!({"source": "llama3", "destination": "mine"})),
    )
    .await;
    assert_eq!(status, 502);
    assert_eq!(error, "backend 'b1': answer larger than 4 MiB");
    assert!(sim_models(&sim).await.contains(&"mine:latest".to_string()));
    let lines = pull_all(&c, "mistral").await;
    assert_eq!(
        error_of(&lines, "b1"),
        Some("answered a line longer than 64 KiB"),
        "{lines:?}"
    );
    assert!(lines
        .iter()
        .any(|l| l["backend"] == "b0" && l["status"] == "success"));
}

/// corral's resident memory in MB, from `/proc/PID/status`.
fn rss_mb(c: &Corral) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", c.proc.child.id()))
        .expect("corral /proc status");
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS line");
    kb / 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_and_endless_probe_bodies_mark_the_box_down_at_bounded_cost() {
    let sim = start_sim(&["--models", "llama3"]);
    let endless = HostileBackend::start(|_, path| match path {
        "/api/tags" => Behavior::Endless,
        _ => healthy_probe(path, &[]).unwrap_or(Behavior::Garbage),
    })
    .await;
    let huge_body = huge_tags(100_000);
    eprintln!("huge /api/tags is {} MB", huge_body.len() / 1_000_000);
    let huge = HostileBackend::start(move |_, path| match path {
        "/api/tags" => Behavior::Json(huge_body.clone()),
        _ => healthy_probe(path, &[]).unwrap_or(Behavior::Garbage),
    })
    .await;
    let yaml = format!(
        "{HEALTH}{}  - {{name: endless, url: '{}'}}\n  - {{name: huge, url: '{}'}}\n",
        backends_yaml(&[&sim], 2),
        endless.url(),
        huge.url()
    );
    let c = start_corral(&yaml).await;

    for name in ["endless", "huge"] {
        let error = wait_for(&format!("{name} to be down with an error"), || async {
            let backends = c.admin("/api/v1/backends").await?;
            let b = backends
                .as_array()?
                .iter()
                .find(|b| b["name"] == name)?
                .clone();
            (b["healthy"] == false)
                .then(|| b["last_error"].as_str().map(str::to_string))
                .flatten()
        })
        .await;
        assert_eq!(error, "/api/tags: body larger than 4 MiB", "{name}");
    }

    // Many probe rounds later, memory is still bounded.
    wait_for("ten probes of each hostile box", || async {
        (endless.requests("/api/tags") >= 10 && huge.requests("/api/tags") >= 10).then_some(())
    })
    .await;
    let rss = rss_mb(&c);
    eprintln!("corral RSS after 10+ hostile probe rounds: {rss} MB");
    assert!(rss < 150, "corral RSS {rss} MB");

    // The good box is still probed: a model pulled onto it directly shows up...
    let r = reqwest::Client::new()
        .post(format!("{}/api/pull", sim.url()))
        .json(&json!({"model": "qwen", "stream": false}))
        .send()
        .await
        .expect("pull on the sim");
    assert_eq!(r.status(), 200);
    wait_model(&c, "qwen").await;
    // ...and serves.
    let r = c
        .post_json(
            "/api/generate",
            &json!({"model": "llama3", "prompt": "hi", "stream": false}),
        )
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-corral-backend"], "b0");
}
