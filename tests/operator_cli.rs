//! What an operator meets around the proxy: the demo's own admin address and a clear
//! refusal when it is taken, SIGHUP that no longer ends `demo`, `sim` or a watch, a
//! `--watch` that outlives the server it watches, tables that fit 80 columns with one
//! clear cause per error, the cause of an ejection, and messages that say what to do.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;

use common::*;
use serde_json::{json, Value};

fn hangup(pid: u32) {
    let ok = Command::new("kill")
        .args(["-HUP", &pid.to_string()])
        .status()
        .expect("kill -HUP");
    assert!(ok.success());
}

/// A process whose stdout lines arrive on a channel.
struct Spawned {
    proc: Proc,
    lines: mpsc::Receiver<String>,
}

fn spawn(args: &[&str], stderr: std::path::PathBuf) -> Spawned {
    let mut child = Command::new(BIN)
        .args(args)
        .env("RUST_LOG", "info")
        .env_remove("CORRAL_API_URL")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&stderr).expect("stderr file"))
        .spawn()
        .expect("spawn corral");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    Spawned {
        proc: Proc::new(child, Some(stderr)),
        lines,
    }
}

impl Spawned {
    /// The next stdout line that contains `want`, within the deadline.
    fn line_with(&self, want: &str) -> String {
        let start = std::time::Instant::now();
        while let Some(left) = DEADLINE.checked_sub(start.elapsed()) {
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(want) => return line,
                Ok(_) => {}
                Err(_) => break,
            }
        }
        panic!("no line with {want:?} in time; stderr: {}", self.proc.log())
    }

    fn running(&mut self) -> bool {
        self.proc.child.try_wait().expect("try_wait").is_none()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_has_its_own_admin_address_ignores_sighup_and_refuses_a_taken_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut demo = spawn(
        &[
            "demo",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ],
        dir.path().join("demo.log"),
    );
    let line = demo.line_with("Admin API on http://");
    let api = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .expect("admin url")
        .to_string();
    demo.line_with(&format!("corral status --api-url {api}"));
    let api_for_poll = api.clone();
    wait_for("the demo's three backends", || {
        let api = api_for_poll.clone();
        async move {
            let (ok, out, _) = corral_cli(&["status", "--api-url", &api]);
            (ok && out.contains("backends    3 routable / 3 total")).then_some(())
        }
    })
    .await;

    // SIGHUP (say, `kill -HUP $(pidof corral)` meant for a server) is logged, not fatal.
    hangup(demo.proc.child.id());
    wait_for("the demo to log the SIGHUP", || async {
        demo.proc.log().contains("SIGHUP ignored").then_some(())
    })
    .await;
    assert!(demo.running(), "{}", demo.proc.log());
    let (ok, _, err) = corral_cli(&["status", "--api-url", &api]);
    assert!(ok, "{err}");
    // No file to reload: the API says so.
    let r = reqwest::Client::new()
        .post(format!("{api}/api/v1/reload"))
        .send()
        .await
        .expect("reload");
    assert_eq!(r.status(), 409);
    assert_eq!(
        r.json::<Value>().await.expect("json")["code"],
        "no_config_file"
    );

    // A second demo on the same admin address fails at once, naming the flag.
    let taken = api.trim_start_matches("http://");
    let out = Command::new(BIN)
        .args(["demo", "--listen", "127.0.0.1:0", "--admin-listen", taken])
        .env("RUST_LOG", "warn")
        .output()
        .expect("second demo");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("corral:"))
        .collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(
        errors[0].starts_with(&format!(
            "corral: cannot listen on {taken} (--admin-listen): "
        )),
        "{stderr}"
    );
    assert!(errors[0].contains("--admin-listen 127.0.0.1:0"), "{stderr}");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("Try it"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sim_survives_sighup_and_takes_both_fault_spellings() {
    let a = start_sim(&[
        "--models",
        "llama3",
        "--load-time",
        "3",
        "--fault",
        "die-mid-stream",
    ]);
    hangup(a.proc.child.id());
    let fault: Value = reqwest::get(format!("{}/sim/fault", a.url()))
        .await
        .expect("sim answers after SIGHUP")
        .json()
        .await
        .expect("json");
    assert_eq!(fault["mode"], "die_mid_stream");
    let r = reqwest::Client::new()
        .post(format!("{}/sim/fault", a.url()))
        .json(&json!({"mode": "hang-mid-stream"}))
        .send()
        .await
        .expect("fault switch");
    assert_eq!(r.status(), 200);
    let b = start_sim(&["--fault", "hang_mid_stream"]);
    let fault: Value = reqwest::get(format!("{}/sim/fault", b.url()))
        .await
        .expect("sim")
        .json()
        .await
        .expect("json");
    assert_eq!(fault["mode"], "hang_mid_stream");
}

/// A dashboard started before corral (or across a restart) shows the failure and
/// keeps polling; SIGHUP redraws instead of ending it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_keeps_polling_through_errors_and_sighup() {
    let dir = tempfile::tempdir().expect("tempdir");
    let admin_port = free_port();
    let api = format!("http://127.0.0.1:{admin_port}");
    let mut watch = spawn(
        &[
            "backends",
            "--watch",
            "--interval",
            "0.2",
            "--api-url",
            &api,
        ],
        dir.path().join("watch.log"),
    );
    let first = watch.line_with("cannot reach the admin API");
    assert!(first.contains("cannot connect"), "{first}");
    assert!(!first.contains("error sending request"), "{first}");
    watch.line_with("retrying every 200ms");
    watch.line_with("cannot reach the admin API");
    hangup(watch.proc.child.id());
    watch.line_with("cannot reach the admin API");
    assert!(watch.running(), "the watch ended: {}", watch.proc.log());

    let a = start_sim(&["--models", "llama3"]);
    let c = start_corral_admin(
        &format!("listen: '127.0.0.1:{admin_port}'"),
        &backends_yaml(&[&a], 1),
    )
    .await;
    c.wait_healthy(1).await;
    let row = watch.line_with("b0");
    assert!(row.contains(" up "), "{row}");
    assert!(watch.running());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tables_fit_80_columns_and_errors_are_one_cause() {
    let many: Vec<String> = (0..12).map(|i| format!("model-number-{i}")).collect();
    let a = start_sim(&["--models", &many.join(",")]);
    let dead = free_port();
    let yaml = format!(
        "backends:\n  - {{name: a-backend-with-a-rather-long-name, url: 'http://{}'}}\n  - {{name: gone, url: 'http://127.0.0.1:{dead}'}}\n",
        a.addr
    );
    let c = start_corral(&yaml).await;
    let api = admin_url(&c);
    wait_for("the dead backend's error", || async {
        let v = c.admin("/api/v1/backends").await?;
        v.as_array()?
            .iter()
            .any(|b| b["name"] == "gone" && b["last_error"].is_string())
            .then_some(())
    })
    .await;
    wait_model(&c, "model-number-0").await;

    let (ok, table, err) = corral_cli(&["backends", "--api-url", &api]);
    assert!(ok, "{err}");
    for line in table.lines() {
        assert!(
            line.chars().count() <= 80,
            "{} columns: {line}",
            line.chars().count()
        );
    }
    let gone = table.lines().find(|l| l.starts_with("gone")).expect("row");
    assert!(gone.contains("down"), "{table}");
    assert!(gone.contains("/api/"), "{table}");

    let (ok, wide, err) = corral_cli(&["backends", "-o", "wide", "--api-url", &api]);
    assert!(ok, "{err}");
    assert!(wide.starts_with("NAME  "), "{wide}");
    assert!(wide
        .lines()
        .next()
        .is_some_and(|h| h.contains("URL") && h.contains("SOURCE")));
    assert!(wide.contains("model-number-11:latest"), "{wide}");
    assert!(wide.contains("a-backend-with-a-rather-long-name"), "{wide}");
    let v = c.admin("/api/v1/backends").await.expect("backends");
    let error = v
        .as_array()
        .and_then(|l| l.iter().find(|b| b["name"] == "gone"))
        .and_then(|b| b["last_error"].as_str())
        .expect("error")
        .to_string();
    assert!(error.contains("cannot connect: "), "{error}");
    assert!(!error.contains("error sending request"), "{error}");
    assert!(wide.contains(&error), "{wide}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ejected_backend_shows_why_even_while_its_probes_pass() {
    let a = start_sim(&["--models", "llama3", "--fault", "fail"]);
    let c = start_corral(&format!(
        "health: {{interval: 100ms, eject_after: 2, eject_base: 1m}}\n{}",
        backends_yaml(&[&a], 2)
    ))
    .await;
    wait_routable(&c, &["llama3"]).await;
    for _ in 0..2 {
        let r = c
            .post_json(
                "/api/generate",
                &json!({"model": "llama3", "prompt": "x", "stream": false}),
            )
            .await;
        assert_eq!(r.status(), 500);
    }
    let backend = || async { c.admin("/api/v1/backends").await.map(|v| v[0].clone()) };
    // Settled once each request has ended, which may be just after its answer.
    let b = wait_for("the ejection", || async {
        backend().await.filter(|b| b["ejected"] == true)
    })
    .await;
    let error = b["last_error"].as_str().expect("the cause").to_string();
    assert!(error.starts_with("ejected for 1m: "), "{error}");
    // A probe after the ejection (it sees a model pulled on the box directly) leaves
    // the cause on show.
    let r = reqwest::Client::new()
        .post(format!("{}/api/pull", a.url()))
        .json(&json!({"model": "marker", "stream": false}))
        .send()
        .await
        .expect("pull on the sim");
    assert_eq!(r.status(), 200);
    let b = wait_for("a probe to see the marker", || async {
        backend().await.filter(|b| {
            b["models"]
                .as_array()
                .is_some_and(|m| m.iter().any(|m| m == "marker:latest"))
        })
    })
    .await;
    assert_eq!(b["last_error"], error.as_str(), "{b}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_say_what_happened_and_what_to_do() {
    let a = start_sim(&["--models", "llama3"]);
    let c = start_corral(&backends_yaml(&[&a], 1)).await;
    wait_routable(&c, &["llama3"]).await;

    // The Ollama port given as the admin API.
    let (ok, _, err) = corral_cli(&["status", "--api-url", &c.url()]);
    assert!(!ok);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("is not corral's admin API"), "{err}");
    assert!(err.contains("not the Ollama port"), "{err}");

    // Cluster commands on a single replica.
    let (ok, _, err) = corral_cli(&["cluster", "status", "--api-url", &admin_url(&c)]);
    assert!(!ok);
    assert!(err.contains("single replica"), "{err}");
    assert!(err.contains("conf/cluster.yaml"), "{err}");

    // A config file that is not there: said once, with what to do.
    let (ok, _, err) = corral_cli(&["serve", "-c", "/nonexistent/corral.yaml"]);
    assert!(!ok);
    assert_eq!(err.matches("No such file or directory").count(), 1, "{err}");
    assert!(
        err.starts_with("corral: cannot read the config file /nonexistent/corral.yaml"),
        "{err}"
    );
    assert!(err.contains("-c"), "{err}");

    // Help for the options that had none.
    let (_, help, _) = corral_cli(&["serve", "--help"]);
    assert!(help.contains("The YAML config file"), "{help}");
    let (_, help, _) = corral_cli(&["backend", "add", "--help"]);
    assert!(help.contains("round_robin"), "{help}");
}
