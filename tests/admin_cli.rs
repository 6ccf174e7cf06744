//! The client subcommands against a running corral: `status`, `backends`, `metrics`
//! (tables, `--json`, `--watch`), `backend add|remove|drain|undrain`, `serving`, and
//! their one-line errors with a non-zero exit.

mod common;

use std::process::Stdio;

use common::*;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

struct Out {
    ok: bool,
    stdout: String,
    stderr: String,
}

async fn corral(args: &[&str], env: &[(&str, &str)]) -> Out {
    let out = tokio::time::timeout(
        DEADLINE,
        Command::new(BIN)
            .args(args)
            .env_remove("CORRAL_ADMIN_TOKEN")
            .env_remove("CORRAL_API_URL")
            .envs(env.iter().copied())
            .output(),
    )
    .await
    .expect("cli finished in time")
    .expect("run cli");
    Out {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).to_string(),
        stderr: String::from_utf8_lossy(&out.stderr).to_string(),
    }
}

/// Runs a client subcommand against `api`; asserts success and returns stdout.
async fn ok(api: &str, args: &[&str]) -> String {
    let mut all = args.to_vec();
    all.extend(["--api-url", api]);
    let out = corral(&all, &[]).await;
    assert!(out.ok, "corral {args:?} failed: {}", out.stderr);
    out.stdout
}

/// Runs a client subcommand expected to fail; returns its single stderr line.
async fn fails(api: &str, args: &[&str], env: &[(&str, &str)]) -> String {
    let mut all = args.to_vec();
    all.extend(["--api-url", api]);
    let out = corral(&all, env).await;
    assert!(!out.ok, "corral {args:?} should fail: {}", out.stdout);
    let lines: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line on stderr: {}", out.stderr);
    lines[0].to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn views_as_tables_json_and_watch() {
    let a = start_sim(&["--models", "llama3", "--tokens-per-sec", "1000"]);
    let c = start_corral(&backends_yaml(&[&a], 2)).await;
    wait_routable(&c, &["llama3"]).await;
    let api = admin_url(&c);
    let r = reqwest::Client::new()
        .post(format!("{}/api/chat", c.url()))
        .json(&json!({"model": "llama3", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .expect("chat");
    read_lines(r).await.expect("stream");

    let status = ok(&api, &["status"]).await;
    assert!(status.contains("serving     yes"), "{status}");
    assert!(
        status.contains("backends    1 routable / 1 total"),
        "{status}"
    );
    let v: Value = serde_json::from_str(&ok(&api, &["status", "--json"]).await).expect("json");
    assert_eq!(v["backends_total"], 1);

    let table = ok(&api, &["backends"]).await;
    let mut lines = table.lines();
    assert!(
        lines.next().is_some_and(|h| h.starts_with("NAME")),
        "{table}"
    );
    let row = lines.next().expect("a row");
    assert!(
        row.starts_with("b0") && row.contains(" up ") && row.contains("llama3:latest"),
        "{table}"
    );
    let v: Value = serde_json::from_str(&ok(&api, &["backends", "--json"]).await).expect("json");
    assert_eq!(v[0]["name"], "b0");

    let m = wait_for("the chat in `corral metrics`", || {
        let api = api.clone();
        async move {
            let m = ok(&api, &["metrics"]).await;
            m.lines()
                .any(|l| l.starts_with("b0") && l.contains("llama3:latest"))
                .then_some(m)
        }
    })
    .await;
    assert!(m.starts_with("BACKEND"), "{m}");
    let v: Value = serde_json::from_str(&ok(&api, &["metrics", "--json"]).await).expect("json");
    assert!(
        v["summary"].as_array().is_some_and(|s| !s.is_empty()),
        "{v}"
    );

    // --watch redraws until interrupted; with --json it prints one document a line.
    let mut child = Command::new(BIN)
        .args([
            "status",
            "--watch",
            "--json",
            "--interval",
            "0.2",
            "--api-url",
            &api,
        ])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("watch");
    let mut out = BufReader::new(child.stdout.take().expect("stdout")).lines();
    for _ in 0..3 {
        let line = tokio::time::timeout(DEADLINE, out.next_line())
            .await
            .expect("a redraw in time")
            .expect("read")
            .expect("a line");
        let v: Value = serde_json::from_str(&line).expect("json line");
        assert_eq!(v["backends_total"], 1);
    }
    let _ = child.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_and_serving_commands() {
    let a = start_sim(&["--models", "llama3"]);
    let b = start_sim(&["--models", "mistral"]);
    let c = start_corral(&backends_yaml(&[&a], 1)).await;
    wait_routable(&c, &["llama3"]).await;
    let api = admin_url(&c);
    let b_url = format!("http://{}", b.addr);

    let out = ok(
        &api,
        &[
            "backend",
            "add",
            "extra",
            &b_url,
            "--max-concurrency",
            "3",
            "--weight",
            "2",
        ],
    )
    .await;
    assert!(out.contains("backend 'extra' added"), "{out}");
    // Where a backend came from is a wide column.
    let table = ok(&api, &["backends", "-o", "wide"]).await;
    let row = table
        .lines()
        .find(|l| l.starts_with("extra"))
        .expect("extra listed");
    assert!(row.contains("api"), "{table}");
    wait_model(&c, "mistral").await;

    let out = ok(&api, &["backend", "drain", "extra"]).await;
    assert!(out.contains("backend 'extra' draining"), "{out}");
    let table = ok(&api, &["backends"]).await;
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("extra") && l.contains("draining")),
        "{table}"
    );
    let out = ok(&api, &["backend", "undrain", "extra", "--json"]).await;
    let v: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(v["backend"]["draining"], false);
    let out = ok(&api, &["backend", "remove", "extra"]).await;
    assert!(out.contains("backend 'extra' removed"), "{out}");

    // Unknown backend, conflict with the YAML, a bad URL: one line, non-zero.
    let err = fails(&api, &["backend", "remove", "extra"], &[]).await;
    assert_eq!(err, "corral: unknown backend 'extra'");
    let err = fails(&api, &["backend", "drain", "nope"], &[]).await;
    assert_eq!(err, "corral: unknown backend 'nope'");
    let err = fails(&api, &["backend", "add", "b0", &b_url], &[]).await;
    assert!(err.contains("defined in the config file"), "{err}");
    let err = fails(&api, &["backend", "add", "x", "ftp://h"], &[]).await;
    assert!(err.contains("unsupported scheme"), "{err}");
    // Leases belong to the replicated pool; a single replica says so.
    let err = fails(&api, &["backend", "add", "x", &b_url, "--ttl", "30s"], &[]).await;
    assert!(err.contains("need the cluster"), "{err}");
    let err = fails(&api, &["backend", "heartbeat", "b0"], &[]).await;
    assert!(err.contains("need the cluster"), "{err}");
    let err = fails(&api, &["backend", "heartbeat", "nope"], &[]).await;
    assert_eq!(err, "corral: unknown backend 'nope'");

    let out = ok(&api, &["serving", "disable"]).await;
    assert!(out.contains("serving disabled"), "{out}");
    assert!(ok(&api, &["status"])
        .await
        .contains("NO (maintenance mode)"));
    let out = ok(&api, &["serving", "enable"]).await;
    assert!(out.contains("serving enabled"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_refused_and_wrong_token_are_one_line_errors() {
    let nowhere = format!("http://127.0.0.1:{}", free_port());
    let err = fails(&nowhere, &["status"], &[]).await;
    assert!(
        err.starts_with("corral: cannot reach the admin API at"),
        "{err}"
    );
    let err = fails(&nowhere, &["serving", "disable"], &[]).await;
    assert!(err.contains("is corral running?"), "{err}");

    // A corral whose admin token comes from a file.
    let a = start_sim(&["--models", "llama3"]);
    let tokens = tempfile::tempdir().expect("dir");
    let token_file = tokens.path().join("token");
    std::fs::write(&token_file, "t0ken\n").expect("token");
    let c = start_corral(&backends_yaml(&[&a], 1)).await;
    let text = std::fs::read_to_string(c.config_path()).expect("config");
    let text = text.replacen(
        "'}",
        &format!("', token_file: '{}'}}", token_file.display()),
        1,
    );
    let tmp = c.dir.path().join("next.yaml");
    std::fs::write(&tmp, text).expect("write");
    std::fs::rename(&tmp, c.config_path()).expect("rename");
    let api = admin_url(&c);
    wait_for("the token to apply", || {
        let api = api.clone();
        async move {
            let mut all = vec!["serving", "enable", "--api-url"];
            all.push(&api);
            let out = corral(&all, &[]).await;
            (!out.ok && out.stderr.contains("unauthorized")).then_some(())
        }
    })
    .await;

    let err = fails(&api, &["serving", "disable", "--token", "nope"], &[]).await;
    assert_eq!(
        err,
        "corral: unauthorized: missing or wrong admin token (--token or CORRAL_ADMIN_TOKEN)"
    );
    let err = fails(&api, &["backend", "drain", "b0"], &[]).await;
    assert!(err.contains("unauthorized"), "{err}");
    // The right token, as a flag or from the environment.
    ok(&api, &["backend", "drain", "b0", "--token", "t0ken"]).await;
    let out = corral(
        &["backend", "undrain", "b0", "--api-url", &api],
        &[("CORRAL_ADMIN_TOKEN", "t0ken")],
    )
    .await;
    assert!(out.ok, "{}", out.stderr);
    // Reads need no token.
    ok(&api, &["backends"]).await;
}
