//! Start-up and reload refuse what is unsafe: `corral check` refuses every file
//! `serve` refuses, with the same message; a listen address that is taken stops
//! `serve` and `demo` at once with one line; a reload cannot leave the admin API open
//! to the network without a token.

mod common;

use std::net::TcpListener;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use common::*;
use serde_json::Value;

/// What a finished corral process said.
struct Outcome {
    success: bool,
    stdout: String,
    stderr: String,
}

/// Runs corral with `args` until it exits; a process still running at the deadline
/// fails the test (it did not refuse).
async fn run(args: &[&str], dir: &Path) -> Outcome {
    let out_path = dir.join("out.txt");
    let err_path = dir.join("err.txt");
    let child = Command::new(BIN)
        .args(args)
        .env_remove("CORRAL_STARTUP_TEST_UNSET")
        .env_remove("STATE_DIRECTORY")
        // The demo's simulators log at info on their own thread; keep them out of the
        // way of the one error line.
        .env("RUST_LOG", "warn")
        .stdout(std::fs::File::create(&out_path).expect("stdout file"))
        .stderr(std::fs::File::create(&err_path).expect("stderr file"))
        .spawn()
        .expect("spawn corral");
    let mut proc = Proc::new(child, Some(err_path.clone()));
    let status = wait_for(&format!("corral {args:?} to exit"), || {
        let exited = proc.child.try_wait().expect("try_wait");
        async move { exited }
    })
    .await;
    let read = |p: &Path| std::fs::read_to_string(p).expect("output file");
    Outcome {
        success: status.success(),
        stdout: read(&out_path),
        stderr: read(&err_path),
    }
}

/// Writes `yaml` to a fresh file and runs `check`, then `serve`, on it.
async fn check_and_serve(yaml: &str) -> (Outcome, Outcome) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("c.yaml");
    std::fs::write(&path, yaml).expect("write config");
    let path = path.to_str().expect("utf-8 path");
    let check = run(&["check", "-c", path], dir.path()).await;
    let serve = run(&["serve", "-c", path], dir.path()).await;
    (check, serve)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_refuses_every_config_serve_refuses_with_the_same_message() {
    let state = tempfile::tempdir().expect("tempdir");
    std::fs::write(state.path().join("state.json"), "{not json").expect("state file");
    // Port 0 wherever a socket could be bound: a serve that wrongly started would
    // collide with nothing (and fail the test by not exiting).
    let admin = "admin: {listen: '127.0.0.1:0'}";
    let cases = [
        (
            "admin: {listen: '127.0.0.1:0', token: '${CORRAL_STARTUP_TEST_UNSET}'}".to_string(),
            "${CORRAL_STARTUP_TEST_UNSET}, which is not set",
        ),
        (
            "admin: {listen: '127.0.0.1:0', token_file: /nonexistent/corral-token}".into(),
            "admin.token_file /nonexistent/corral-token: ",
        ),
        (
            "admin: {listen: '127.0.0.1:0', token: t, token_file: /etc/hostname}".into(),
            "admin.token and admin.token_file are both set",
        ),
        (
            "admin: {listen: '0.0.0.0:0'}".into(),
            "admin.listen 0.0.0.0:0 is not a loopback address",
        ),
        (
            format!("{admin}\nthreads: 0"),
            "threads: must be at least 1",
        ),
        (
            "admin: {listen: '127.0.0.1:1'}\nlisten: [127.0.0.1:0, 0.0.0.0:1]".into(),
            "listen 0.0.0.0:1 and admin.listen 127.0.0.1:1 cannot both listen there",
        ),
        (
            format!("{admin}\nstate_dir: '{}'", state.path().display()),
            "invalid state file",
        ),
    ];
    for (case, why) in cases {
        let mut yaml = format!("{case}\n");
        for (key, line) in [
            ("listen:", "listen: 127.0.0.1:0\n"),
            ("threads:", "threads: 1\n"),
        ] {
            if !case.lines().any(|l| l.starts_with(key)) {
                yaml.push_str(line);
            }
        }
        let (check, serve) = check_and_serve(&yaml).await;
        assert!(!check.success, "check accepted:\n{yaml}\n{}", check.stdout);
        assert!(!serve.success, "serve accepted:\n{yaml}");
        assert!(check.stderr.contains(why), "{yaml}\n{}", check.stderr);
        assert!(check.stderr.starts_with("corral: "), "{}", check.stderr);
        assert_eq!(check.stderr.lines().count(), 1, "{}", check.stderr);
        assert_eq!(serve.stderr, check.stderr, "{yaml}");
    }
}

/// A config whose listeners are free except for `taken`, put in `setting`'s place.
fn config_with(setting: &str, taken: std::net::SocketAddr, dir: &Path) -> String {
    let free = |s: &str| {
        if s == setting {
            taken.to_string()
        } else {
            "127.0.0.1:0".into()
        }
    };
    let cluster = if setting == "cluster.listen" {
        format!(
            "cluster: {{node_id: 1, listen: '{taken}', data_dir: '{}', peers: {{1: '{taken}'}}, secret: sharedsecret}}\n",
            dir.join("raft").display()
        )
    } else {
        String::new()
    };
    format!(
        "listen: {}\nadmin: {{listen: '{}'}}\nthreads: 1\n{cluster}",
        free("listen"),
        free("admin.listen")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_taken_port_stops_serve_and_demo_with_one_line() {
    let held = TcpListener::bind("127.0.0.1:0").expect("hold a port");
    let taken = held.local_addr().expect("held address");
    for setting in ["listen", "admin.listen", "cluster.listen"] {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c.yaml");
        std::fs::write(&path, config_with(setting, taken, dir.path())).expect("config");
        let started = Instant::now();
        let serve = run(&["serve", "-c", path.to_str().expect("path")], dir.path()).await;
        eprintln!(
            "serve with {setting} taken exited in {:?}",
            started.elapsed()
        );
        assert!(!serve.success, "{setting}: serve kept running");
        let want = format!("corral: cannot listen on {taken} ({setting}): ");
        assert!(serve.stderr.starts_with(&want), "{}", serve.stderr);
        assert_eq!(serve.stderr.lines().count(), 1, "{}", serve.stderr);
    }

    let dir = tempfile::tempdir().expect("tempdir");
    let listen = taken.to_string();
    let started = Instant::now();
    let demo = run(
        &["demo", "--listen", &listen, "--admin-listen", "127.0.0.1:0"],
        dir.path(),
    )
    .await;
    eprintln!("demo exited in {:?}", started.elapsed());
    assert!(!demo.success, "demo kept running");
    assert!(!demo.stdout.contains("Try it"), "{}", demo.stdout);
    let want = format!("corral: cannot listen on {taken} (--listen): ");
    let errors: Vec<&str> = demo
        .stderr
        .lines()
        .filter(|l| l.starts_with("corral:"))
        .collect();
    assert_eq!(errors.len(), 1, "{}", demo.stderr);
    assert!(errors[0].starts_with(&want), "{}", demo.stderr);
    drop(held);
}

async fn status(admin: &str) -> Value {
    reqwest::get(format!("{admin}/api/v1/status"))
        .await
        .expect("status")
        .json()
        .await
        .expect("status json")
}

async fn disable_serving(admin: &str, token: Option<&str>) -> u16 {
    let mut req = reqwest::Client::new().post(format!("{admin}/api/v1/serving/disable"));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    req.send().await.expect("serving/disable").status().as_u16()
}

/// The admin listener is restart-only: a reload that moves it to loopback and drops
/// the token must be judged on the listener that keeps serving, the public one.
/// Bound on 0.0.0.0 because that is the case; every request goes to 127.0.0.1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_cannot_drop_the_token_of_a_public_admin_listener() {
    let admin_port = free_port();
    let c = start_corral_admin(
        &format!("listen: '0.0.0.0:{admin_port}', token: s3cret"),
        "backends: []\n",
    )
    .await;
    let admin = format!("http://127.0.0.1:{admin_port}");
    wait_for("the admin API", || {
        let url = format!("{admin}/healthz");
        async move { reqwest::get(url).await.ok().filter(|r| r.status() == 200) }
    })
    .await;
    assert_eq!(disable_serving(&admin, None).await, 401);

    let text = std::fs::read_to_string(c.config_path()).expect("config");
    let loopback = free_port();
    let opened = text.replace(
        &format!("listen: '0.0.0.0:{admin_port}', token: s3cret"),
        &format!("listen: '127.0.0.1:{loopback}'"),
    );
    assert_ne!(opened, text);
    let tmp = c.dir.path().join(".corral.yaml.tmp");
    std::fs::write(&tmp, opened).expect("write config");
    std::fs::rename(&tmp, c.config_path()).expect("replace config");

    let s = wait_for("the reload to fail", || {
        let admin = admin.clone();
        async move {
            let s = status(&admin).await;
            (s["reloads"]["failures"] == 1).then_some(s)
        }
    })
    .await;
    assert_eq!(s["reloads"]["successes"], 0, "{s}");
    let error = s["reloads"]["last_error"].as_str().expect("last_error");
    let file = c.config_path().display().to_string();
    assert!(error.starts_with(&file), "{error}");
    assert!(
        error.contains(&format!("0.0.0.0:{admin_port} is not a loopback")),
        "{error}"
    );
    c.proc.wait_log("config reload failed").await;
    let log = c.proc.log();
    assert!(
        log.contains("config reload failed") && log.contains(&file),
        "{log}"
    );
    let metrics = reqwest::get(format!("{admin}/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text");
    assert!(
        metrics.contains("corral_config_reloads_total{result=\"failure\"} 1"),
        "{metrics}"
    );

    // The old config, token included, still guards the writes.
    assert_eq!(disable_serving(&admin, None).await, 401);
    assert_eq!(disable_serving(&admin, Some("s3cret")).await, 200);
}
