//! Hot reload of the config file: rename-replace, a Kubernetes-style symlink swap,
//! SIGHUP, an invalid file, settings that need a restart, and no failed request while
//! the file is rewritten under load.

mod common;

use std::process::Command;

use common::*;
use serde_json::{json, Value};

/// The lines `start_corral` put before the caller's YAML (listen, admin, threads).
fn header(c: &Corral) -> String {
    let text = std::fs::read_to_string(c.config_path()).expect("config");
    text.lines().take(3).map(|l| format!("{l}\n")).collect()
}

/// Replaces the config the way editors and config management do: write a temporary
/// file beside it, then rename it over the old one.
fn replace_config(c: &Corral, text: &str) {
    let tmp = c.dir.path().join(".corral.yaml.tmp");
    std::fs::write(&tmp, text).expect("write temp config");
    std::fs::rename(&tmp, c.config_path()).expect("rename config");
}

fn backend(name: &str, sim: &Sim) -> String {
    format!(
        "  - {{name: {name}, url: 'http://{}', max_concurrency: 4}}\n",
        sim.addr
    )
}

async fn status(c: &Corral) -> Value {
    reqwest::get(format!("{}/api/v1/status", admin_url(c)))
        .await
        .expect("status")
        .json()
        .await
        .expect("status json")
}

async fn backend_names(c: &Corral) -> Vec<String> {
    let v: Value = reqwest::get(format!("{}/api/v1/backends", admin_url(c)))
        .await
        .expect("backends")
        .json()
        .await
        .expect("backends json");
    v.as_array()
        .expect("array")
        .iter()
        .map(|b| b["name"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// Waits until the reload counters reach `successes` / `failures`.
async fn wait_reloads(c: &Corral, successes: u64, failures: u64) -> Value {
    let start = std::time::Instant::now();
    loop {
        let s = status(c).await;
        let r = &s["reloads"];
        if r["successes"].as_u64() >= Some(successes) && r["failures"].as_u64() >= Some(failures) {
            return s;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "timed out waiting for {successes} successful and {failures} failed reloads: {s}\n{}",
            c.proc.log()
        );
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
}

async fn generate(c: &Corral, model: &str) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{}/api/generate", c.url()))
        .json(&json!({"model": model, "prompt": "hi", "stream": false}))
        .send()
        .await
        .expect("generate")
}

async fn requests_of(c: &Corral, name: &str) -> u64 {
    let v: Value = reqwest::get(format!("{}/api/v1/backends", admin_url(c)))
        .await
        .expect("backends")
        .json()
        .await
        .expect("backends json");
    v.as_array()
        .expect("array")
        .iter()
        .find(|b| b["name"] == name)
        .and_then(|b| b["requests"].as_u64())
        .expect("backend listed")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rename_replace_adds_a_backend_and_keeps_the_others_state() {
    let a = start_sim(&["--models", "llama3", "--tokens-per-sec", "1000"]);
    let b = start_sim(&["--models", "mistral", "--tokens-per-sec", "1000"]);
    let c = start_corral(&format!("backends:\n{}", backend("a", &a))).await;
    wait_routable(&c, &["llama3"]).await;
    assert_eq!(generate(&c, "llama3").await.status(), 200);
    assert_eq!(requests_of(&c, "a").await, 1);

    let head = header(&c);
    replace_config(
        &c,
        &format!("{head}backends:\n{}{}", backend("a", &a), backend("b", &b)),
    );
    wait_model(&c, "mistral").await;
    let s = wait_reloads(&c, 1, 0).await;
    assert!(s["reloads"]["last_error"].is_null(), "{s}");
    assert_eq!(backend_names(&c).await, vec!["a", "b"]);
    // The backend that stayed kept its counters (and its health: it still serves).
    assert_eq!(requests_of(&c, "a").await, 1);
    assert_eq!(generate(&c, "llama3").await.status(), 200);
    assert_eq!(generate(&c, "mistral").await.status(), 200);

    // A changed listener needs a restart: reported, not half-applied.
    replace_config(
        &c,
        &format!(
            "{}threads: 3\nbackends:\n{}",
            head.replace("threads: 2\n", ""),
            backend("b", &b)
        ),
    );
    let s = wait_reloads(&c, 2, 0).await;
    assert_eq!(s["reloads"]["restart_needed"], json!(["threads"]), "{s}");
    assert_eq!(backend_names(&c).await, vec!["b"]);
    c.proc.wait_log("need a restart").await;
    // The removed backend's model is gone; the other still answers.
    assert_eq!(generate(&c, "mistral").await.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_even_an_unchanged_file() {
    let a = start_sim(&["--models", "llama3"]);
    let c = start_corral(&format!("backends:\n{}", backend("a", &a))).await;
    // SIGHUP before the handler is installed would end the process.
    wait_for("the reloader to start", || async {
        c.proc
            .log()
            .contains("watching the config file")
            .then_some(())
    })
    .await;
    let pid = c.proc.child.id().to_string();
    let ok = Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .expect("kill -HUP");
    assert!(ok.success());
    wait_reloads(&c, 1, 0).await;
    c.proc.wait_log("SIGHUP").await;
    wait_routable(&c, &["llama3"]).await;
    assert_eq!(generate(&c, "llama3").await.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_file_keeps_the_running_config() {
    let a = start_sim(&["--models", "llama3", "--tokens-per-sec", "1000"]);
    let c = start_corral(&format!("backends:\n{}", backend("a", &a))).await;
    wait_routable(&c, &["llama3"]).await;
    let head = header(&c);

    // Line 6 of the file: the header is 3 lines, then `backends:`, then two entries.
    replace_config(
        &c,
        &format!(
            "{head}backends:\n{}  - {{name: b, url: 'http://127.0.0.1:1', weight: 0}}\n",
            backend("a", &a)
        ),
    );
    let s = wait_reloads(&c, 0, 1).await;
    let err = s["reloads"]["last_error"].as_str().expect("last_error");
    assert!(err.contains("corral.yaml:6:"), "{err}");
    assert!(err.contains("at least 1"), "{err}");
    c.proc.wait_log("corral.yaml:6:").await;
    // Still the old pool, still serving.
    assert_eq!(backend_names(&c).await, vec!["a"]);
    assert_eq!(generate(&c, "llama3").await.status(), 200);
    let metrics = scrape(&c).await;
    assert!(
        metrics.contains(r#"corral_config_reloads_total{result="failure"} 1"#),
        "{metrics}"
    );

    // Fixing the file clears the error.
    replace_config(&c, &format!("{head}backends:\n{}", backend("a2", &a)));
    let s = wait_reloads(&c, 1, 1).await;
    assert!(s["reloads"]["last_error"].is_null(), "{s}");
    assert_eq!(backend_names(&c).await, vec!["a2"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_failed_requests_while_reloading_under_load() {
    let args = [
        "--models",
        "llama3",
        "--tokens-per-sec",
        "50",
        "--parallel",
        "4",
        "--num-predict",
        "8",
    ];
    let a = start_sim(&args);
    let b = start_sim(&args);
    let c = start_corral(&format!(
        "backends:\n{}{}",
        backend("a", &a),
        backend("b", &b)
    ))
    .await;
    wait_routable(&c, &["llama3"]).await;
    let head = header(&c);
    let url = c.url();

    // 8 clients × 25 requests, while the file is rewritten 10 times: `a` always stays,
    // `b` comes and goes, weights and strategy change.
    let load = tokio::spawn(async move {
        let http = reqwest::Client::new();
        let tasks = (0..8).map(|_| {
            let http = http.clone();
            let url = url.clone();
            tokio::spawn(async move {
                let mut failures = Vec::new();
                for _ in 0..25 {
                    let r = http
                        .post(format!("{url}/api/chat"))
                        .json(&json!({"model": "llama3", "messages": [{"role": "user", "content": "hi"}]}))
                        .send()
                        .await;
                    match r {
                        Ok(r) if r.status() == 200 => match read_lines(r).await {
                            Ok(lines) if lines.last().is_some_and(|l| l.contains("\"done\":true")) => {}
                            other => failures.push(format!("{other:?}")),
                        },
                        Ok(r) => failures.push(format!("status {}", r.status())),
                        Err(e) => failures.push(e.to_string()),
                    }
                }
                failures
            })
        });
        let mut all = Vec::new();
        for t in futures::future::join_all(tasks).await {
            all.extend(t.expect("load task"));
        }
        all
    });

    for i in 0..10u64 {
        let strategy = if i % 2 == 0 {
            "least_loaded"
        } else {
            "round_robin"
        };
        let mut text = format!("{head}routing: {{strategy: {strategy}}}\nbackends:\n");
        text.push_str(&format!(
            "  - {{name: a, url: 'http://{}', max_concurrency: 4, weight: {}}}\n",
            a.addr,
            i + 1
        ));
        if i % 2 == 1 {
            text.push_str(&backend("b", &b));
        }
        replace_config(&c, &text);
        wait_reloads(&c, i + 1, 0).await;
    }
    let failures = load.await.expect("load");
    assert!(
        failures.is_empty(),
        "{} failed: {failures:?}",
        failures.len()
    );
    let s = status(&c).await;
    assert_eq!(s["reloads"]["failures"], 0, "{s}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kubernetes_style_symlink_swap_is_a_reload() {
    let a = start_sim(&["--models", "llama3"]);
    let b = start_sim(&["--models", "mistral"]);
    let c = start_corral(&format!("backends:\n{}", backend("a", &a))).await;
    wait_routable(&c, &["llama3"]).await;
    let head = header(&c);
    let dir = c.dir.path();

    // The ConfigMap volume layout: corral.yaml -> ..data/corral.yaml, ..data -> ..v1.
    let publish = |version: &str, text: &str| {
        let vdir = dir.join(format!("..{version}"));
        std::fs::create_dir(&vdir).expect("version dir");
        std::fs::write(vdir.join("corral.yaml"), text).expect("write version");
        let tmp = dir.join("..data_tmp");
        std::os::unix::fs::symlink(format!("..{version}"), &tmp).expect("symlink");
        std::fs::rename(&tmp, dir.join("..data")).expect("swap ..data");
    };
    publish(
        "v1",
        &std::fs::read_to_string(c.config_path()).expect("config"),
    );
    let link = dir.join(".corral.yaml.link");
    std::os::unix::fs::symlink("..data/corral.yaml", &link).expect("symlink");
    std::fs::rename(&link, c.config_path()).expect("replace with symlink");

    // A new version is published by swapping `..data`.
    publish(
        "v2",
        &format!("{head}backends:\n{}{}", backend("a", &a), backend("b", &b)),
    );
    wait_model(&c, "mistral").await;
    assert_eq!(backend_names(&c).await, vec!["a", "b"]);
    assert_eq!(status(&c).await["reloads"]["failures"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_backend_finishes_its_stream() {
    let slow = [
        "--models",
        "llama3",
        "--tokens-per-sec",
        "6",
        "--num-predict",
        "40",
        "--parallel",
        "2",
    ];
    let a = start_sim(&slow);
    let b = start_sim(&slow);
    let c = start_corral(&format!(
        "routing: {{strategy: least_loaded}}\nbackends:\n{}{}",
        backend("a", &a),
        backend("b", &b)
    ))
    .await;
    wait_routable(&c, &["llama3"]).await;
    let head = header(&c);

    let stream = reqwest::Client::new()
        .post(format!("{}/api/chat", c.url()))
        .json(&json!({"model": "llama3", "messages": [{"role": "user", "content": "a story"}]}))
        .send()
        .await
        .expect("chat");
    assert_eq!(stream.status(), 200);
    let serving = stream.headers()["x-corral-backend"]
        .to_str()
        .expect("header")
        .to_string();
    let (stays, sim) = if serving == "a" { ("b", &b) } else { ("a", &a) };

    // The backend serving the stream leaves the file.
    replace_config(
        &c,
        &format!(
            "{head}routing: {{strategy: least_loaded}}\nbackends:\n{}",
            backend(stays, sim)
        ),
    );
    wait_reloads(&c, 1, 0).await;
    assert_eq!(backend_names(&c).await, vec![stays]);
    let r = reqwest::Client::new()
        .post(format!("{}/api/generate", c.url()))
        .json(&json!({"model": "llama3", "prompt": "x", "stream": false, "options": {"num_predict": 1}}))
        .send()
        .await
        .expect("generate");
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-corral-backend"], stays);

    let lines = read_lines(stream).await.expect("stream");
    assert!(
        lines.last().is_some_and(|l| l.contains("\"done\":true")),
        "{lines:?}"
    );
}
