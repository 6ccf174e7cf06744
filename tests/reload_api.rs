//! `POST /api/v1/reload` and `corral reload`: the config file re-read on request, the
//! same path as SIGHUP, with the result in the answer — applied, or refused with the
//! file's `FILE:line:col` while the running config stays — and the admin token required
//! like every other write.

mod common;

use common::*;
use serde_json::Value;

/// The three lines `start_corral` put before the caller's YAML.
fn header(c: &Corral) -> String {
    let text = std::fs::read_to_string(c.config_path()).expect("config");
    text.lines().take(3).map(|l| format!("{l}\n")).collect()
}

/// Replaces the file in one step (rename), as config management does.
fn replace_config(c: &Corral, text: &str) {
    let tmp = c.dir.path().join(".next.yaml");
    std::fs::write(&tmp, text).expect("write temp config");
    std::fs::rename(&tmp, c.config_path()).expect("rename config");
}

fn entry(name: &str, sim: &Sim) -> String {
    format!("  - {{name: {name}, url: 'http://{}'}}\n", sim.addr)
}

async fn names(c: &Corral) -> Vec<String> {
    let v = c.admin("/api/v1/backends").await.expect("backends");
    v.as_array()
        .expect("array")
        .iter()
        .map(|b| b["name"].as_str().unwrap_or_default().to_string())
        .collect()
}

async fn post_reload(c: &Corral, token: Option<&str>) -> (u16, Value) {
    let mut req = reqwest::Client::new().post(format!("{}/api/v1/reload", admin_url(c)));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let r = req.send().await.expect("reload call");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_applies_now_or_says_where_the_file_is_wrong() {
    let a = start_sim(&["--models", "llama3"]);
    let b = start_sim(&["--models", "mistral"]);
    let c = start_corral(&format!("backends:\n{}", entry("a", &a))).await;
    let api = admin_url(&c);
    let file = c.config_path().display().to_string();
    // serve names the address clients should use.
    assert!(
        c.proc.log().contains("Ollama endpoint listening")
            && c.proc.log().contains(&c.addr.to_string()),
        "{}",
        c.proc.log()
    );

    // An unchanged file: forced, like SIGHUP, and counted.
    let (ok, stdout, stderr) = corral_cli(&["reload", "--api-url", &api]);
    assert!(ok, "{}", stderr);
    assert_eq!(
        stdout.trim(),
        format!("config reloaded from {file} (1 backend)")
    );
    let s = c.admin("/api/v1/status").await.expect("status");
    assert!(s["reloads"]["successes"].as_u64() >= Some(1), "{s}");

    // A new backend is in the pool when the command returns: no waiting on a watch.
    let head = header(&c);
    replace_config(
        &c,
        &format!("{head}backends:\n{}{}", entry("a", &a), entry("b", &b)),
    );
    let (ok, stdout, stderr) = corral_cli(&["reload", "--api-url", &api, "--json"]);
    assert!(ok, "{}", stderr);
    let v: Value = serde_json::from_str(&stdout).expect("json");
    assert_eq!(v["reloaded"], true);
    assert_eq!(v["backends"], 2);
    assert_eq!(names(&c).await, ["a", "b"]);

    // An invalid file: 422 with FILE:line:col, and nothing changes. Line 6: the
    // header's three lines, `backends:`, then the second entry.
    replace_config(
        &c,
        &format!(
            "{head}backends:\n{}  - {{name: z, url: 'http://127.0.0.1:1', weight: 0}}\n",
            entry("a", &a)
        ),
    );
    let (status, body) = post_reload(&c, None).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["code"], "config_invalid");
    let msg = body["error"].as_str().expect("error");
    assert!(msg.starts_with(&format!("{file}:6:")), "{msg}");
    let (ok, _, stderr) = corral_cli(&["reload", "--api-url", &api]);
    assert!(!ok);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{}", stderr);
    assert!(
        lines[0].starts_with(&format!("corral: {file}:6:")),
        "{}",
        lines[0]
    );
    assert!(
        lines[0].ends_with("(not applied: the running config stays)"),
        "{}",
        lines[0]
    );
    assert_eq!(names(&c).await, ["a", "b"]);

    // Settings bound at start-up are reported, the rest applied.
    replace_config(
        &c,
        &format!(
            "{}threads: 3\nbackends:\n{}",
            head.replace("threads: 2\n", ""),
            entry("b", &b)
        ),
    );
    let (ok, stdout, stderr) = corral_cli(&["reload", "--api-url", &api]);
    assert!(ok, "{}", stderr);
    assert!(
        stdout.contains("(1 backend); restart needed to apply: threads"),
        "{}",
        stdout
    );
    assert_eq!(names(&c).await, ["b"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_needs_the_admin_token() {
    let a = start_sim(&["--models", "llama3"]);
    let c = start_corral(&format!("backends:\n{}", entry("a", &a))).await;
    let api = admin_url(&c);
    // Set a token; the reload that applies it needs none yet.
    let text = std::fs::read_to_string(c.config_path()).expect("config");
    replace_config(&c, &text.replacen("'}", "', token: s3cret}", 1));
    let (ok, _, stderr) = corral_cli(&["reload", "--api-url", &api]);
    assert!(ok, "{}", stderr);

    let (status, body) = post_reload(&c, None).await;
    assert_eq!(status, 401, "{body}");
    let (status, _) = post_reload(&c, Some("wrong")).await;
    assert_eq!(status, 401);
    let (ok, _, stderr) = corral_cli(&["reload", "--api-url", &api]);
    assert!(!ok);
    assert!(stderr.contains("unauthorized"), "{}", stderr);
    let (ok, _, stderr) = corral_cli(&["reload", "--api-url", &api, "--token", "s3cret"]);
    assert!(ok, "{}", stderr);
    let (status, body) = post_reload(&c, Some("s3cret")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["backends"], 1);
}
