//! `Type=notify` as systemd sees it: corral is started with `NOTIFY_SOCKET` pointing
//! at a datagram socket this test owns, and must send READY=1 only once the proxy port
//! answers and its first probe round is over — including the probe of a backend that
//! never answers, which takes `health.timeout` — then WATCHDOG=1 while it runs,
//! RELOADING=1 and READY=1 around a SIGHUP reload, and STOPPING=1 on SIGTERM.

mod common;

use std::process::{Command, Stdio};

use common::hostile::{Behavior, HostileBackend};
use common::*;
use serde_json::Value;
use tokio::net::UnixDatagram;

/// The next datagram, or a panic after the deadline.
async fn next_message(sock: &UnixDatagram) -> String {
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(DEADLINE, sock.recv(&mut buf))
        .await
        .expect("no notification before the deadline")
        .expect("recv on the notify socket");
    String::from_utf8_lossy(&buf[..n]).to_string()
}

/// Reads notifications until one has `line`; returns it.
async fn wait_message(sock: &UnixDatagram, line: &str) -> String {
    loop {
        let m = next_message(sock).await;
        if m.lines().any(|l| l == line) {
            return m;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_after_listeners_and_first_probe_round_then_watchdog_reload_and_stopping() {
    let sim = start_sim(&["--models", "llama3"]);
    // Its probe only ends with health.timeout: READY=1 before that would be early.
    let silent = HostileBackend::start(|_, _| Behavior::Silent).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let notify_path = dir.path().join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).expect("bind notify socket");
    let (port, admin_port) = (free_port(), free_port());
    let config = dir.path().join("corral.yaml");
    std::fs::write(
        &config,
        format!(
            "listen: 127.0.0.1:{port}\nadmin: {{listen: '127.0.0.1:{admin_port}'}}\n\
             threads: 2\nhealth: {{timeout: 1s}}\nbackends:\n\
             \x20 - {{name: sim, url: '{}'}}\n\
             \x20 - {{name: silent, url: '{}'}}\n",
            sim.url(),
            silent.url()
        ),
    )
    .expect("write config");
    let log = dir.path().join("corral.log");
    let child = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&config)
        .env("RUST_LOG", "info")
        .env("NOTIFY_SOCKET", &notify_path)
        // Half a second: pings every quarter second.
        .env("WATCHDOG_USEC", "500000")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log file"))
        .spawn()
        .expect("spawn corral serve");
    let mut corral = Proc::new(child, Some(log));

    let ready = next_message(&notify).await;
    // What holds the moment READY=1 arrives.
    let head = reqwest::Client::new()
        .head(format!("http://127.0.0.1:{port}/"))
        .send()
        .await;
    let backends: Value = reqwest::get(format!("http://127.0.0.1:{admin_port}/api/v1/backends"))
        .await
        .expect("admin API at READY")
        .json()
        .await
        .expect("backends json");
    assert!(
        ready.lines().any(|l| l == "READY=1"),
        "first message {ready:?}\n{}",
        corral.log()
    );
    assert!(ready.contains("STATUS="), "{ready:?}");
    assert!(!ready.contains("MAINPID="), "not an upgrade: {ready:?}");
    assert!(head.is_ok_and(|r| r.status() == 200), "proxy port at READY");
    let list = backends.as_array().expect("backend list");
    let by_name = |n: &str| list.iter().find(|b| b["name"] == n).expect("backend");
    assert_eq!(by_name("sim")["healthy"], true, "{backends}");
    assert!(
        by_name("silent")["last_error"].is_string(),
        "READY=1 before the silent backend's probe ended: {backends}"
    );

    // WATCHDOG=1, repeatedly.
    for _ in 0..3 {
        wait_message(&notify, "WATCHDOG=1").await;
    }

    // `systemctl reload`: RELOADING=1 (with the clock systemd 253+ wants), then READY=1.
    let pid = corral.child.id().to_string();
    let kill = |signal: &str| {
        assert!(Command::new("kill")
            .args([signal, &pid])
            .status()
            .expect("kill")
            .success());
    };
    kill("-HUP");
    let reloading = wait_message(&notify, "RELOADING=1").await;
    assert!(reloading.contains("MONOTONIC_USEC="), "{reloading:?}");
    wait_message(&notify, "READY=1").await;

    kill("-TERM");
    wait_message(&notify, "STOPPING=1").await;
    let status = wait_for("corral to exit", || {
        let s = corral.child.try_wait().expect("try_wait");
        async move { s }
    })
    .await;
    assert!(status.success(), "{}", corral.log());
}
