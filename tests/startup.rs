//! Start-up refuses what is unsafe: `corral check` refuses every file `serve`
//! refuses, with the same message.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;

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
