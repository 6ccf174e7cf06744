//! Zero-downtime upgrade under load: a second `corral serve --upgrade` takes the
//! sockets over from the running one (SIGQUIT) while streaming and non-streaming
//! requests and admin reads keep coming. No connection may be refused or reset, every
//! stream must end with `done: true`, and the admin port must answer from the new
//! process once the old one has exited.

mod common;

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

/// Bounds of the load: per worker, and for the whole run.
const WORKERS: usize = 8;
const MAX_ROUNDS: usize = 400;
const RUN_LIMIT: Duration = Duration::from_secs(90);

#[derive(Default)]
struct Tally {
    requests: AtomicUsize,
    streams: AtomicUsize,
    admin: AtomicUsize,
    refused: AtomicUsize,
    cut: AtomicUsize,
    failed: AtomicUsize,
    /// Streams that began before SIGQUIT and ended after it: served by the old process
    /// through the hand-over.
    spanning: AtomicUsize,
}

impl Tally {
    fn record_error(&self, what: &str, e: &reqwest::Error) {
        if e.is_connect() {
            self.refused.fetch_add(1, Ordering::Relaxed);
        } else {
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
        eprintln!("{what}: {e:?}");
    }
}

/// What the load loop shares: the switch that ends it and when SIGQUIT went out.
struct Phase {
    stop: AtomicBool,
    quit_sent: AtomicBool,
}

async fn stream_once(http: &reqwest::Client, url: &str, tally: &Tally, phase: &Phase) {
    let before_quit = !phase.quit_sent.load(Ordering::Relaxed);
    let body = json!({"model": "llama3", "prompt": "a story"});
    let resp = match http
        .post(format!("{url}/api/generate"))
        .json(&body)
        .send()
        .await
    {
        Ok(r) => r,
        Err(e) => return tally.record_error("stream request", &e),
    };
    tally.requests.fetch_add(1, Ordering::Relaxed);
    tally.streams.fetch_add(1, Ordering::Relaxed);
    if resp.status() != 200 {
        tally.failed.fetch_add(1, Ordering::Relaxed);
        eprintln!("stream status {}", resp.status());
        return;
    }
    let done = match read_lines(resp).await {
        Ok(lines) => lines
            .last()
            .and_then(|l| serde_json::from_str::<Value>(l).ok())
            .is_some_and(|v| v["done"] == true),
        Err(e) => {
            eprintln!("stream: {e}");
            false
        }
    };
    if !done {
        tally.cut.fetch_add(1, Ordering::Relaxed);
    } else if before_quit && phase.quit_sent.load(Ordering::Relaxed) {
        tally.spanning.fetch_add(1, Ordering::Relaxed);
    }
}

async fn whole_once(http: &reqwest::Client, url: &str, tally: &Tally) {
    let body = json!({
        "model": "llama3",
        "stream": false,
        "messages": [{"role": "user", "content": "hi"}],
    });
    match http
        .post(format!("{url}/api/chat"))
        .json(&body)
        .send()
        .await
    {
        Ok(r) => {
            tally.requests.fetch_add(1, Ordering::Relaxed);
            let status = r.status();
            let v: Option<Value> = r.json().await.ok();
            if status != 200 || v.is_none_or(|v| v["done"] != true) {
                tally.failed.fetch_add(1, Ordering::Relaxed);
                eprintln!("chat: status {status}");
            }
        }
        Err(e) => tally.record_error("chat request", &e),
    }
}

async fn admin_once(http: &reqwest::Client, admin: &str, tally: &Tally) {
    match http.get(format!("{admin}/api/v1/status")).send().await {
        Ok(r) if r.status() == 200 => {
            tally.admin.fetch_add(1, Ordering::Relaxed);
        }
        Ok(r) => {
            tally.failed.fetch_add(1, Ordering::Relaxed);
            eprintln!("admin status {}", r.status());
        }
        Err(e) => tally.record_error("admin request", &e),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrade_under_load_refuses_and_cuts_nothing() {
    // About a second per stream: several are in flight whenever the hand-over happens.
    let sim = start_sim(&[
        "--models",
        "llama3",
        "--resident",
        "llama3",
        "--parallel",
        "8",
        "--tokens-per-sec",
        "20",
        "--num-predict",
        "20",
    ]);
    let mut old = start_corral(&format!(
        "shutdown_grace: 1h\n{}",
        backends_yaml(&[&sim], 8)
    ))
    .await;
    wait_routable(&old, &["llama3"]).await;
    let url = old.url();
    let admin = admin_url(&old);
    let config_path = old.config_path();

    let tally = Arc::new(Tally::default());
    let phase = Arc::new(Phase {
        stop: AtomicBool::new(false),
        quit_sent: AtomicBool::new(false),
    });
    // Kept-alive connections, as real clients use them.
    let http = reqwest::Client::new();
    let started = Instant::now();
    let workers: Vec<_> = (0..WORKERS)
        .map(|w| {
            let (http, url, admin) = (http.clone(), url.clone(), admin.clone());
            let (tally, phase) = (tally.clone(), phase.clone());
            tokio::spawn(async move {
                for round in 0..MAX_ROUNDS {
                    if phase.stop.load(Ordering::Relaxed) || started.elapsed() > RUN_LIMIT {
                        break;
                    }
                    match (w + round) % 4 {
                        0 | 1 => stream_once(&http, &url, &tally, &phase).await,
                        2 => whole_once(&http, &url, &tally).await,
                        _ => admin_once(&http, &admin, &tally).await,
                    }
                }
            })
        })
        .collect();

    // Hand over while streams are in flight.
    wait_for("streams in flight", || {
        let n = tally.streams.load(Ordering::Relaxed);
        async move { (n >= WORKERS).then_some(()) }
    })
    .await;
    let new_log = old.dir.path().join("corral-new.log");
    // As under systemd: the new process must name itself the service's main PID.
    let notify_path = old.dir.path().join("notify.sock");
    let notify = tokio::net::UnixDatagram::bind(&notify_path).expect("bind notify socket");
    let child = Command::new(BIN)
        .args(["serve", "--upgrade", "--config"])
        .arg(&config_path)
        .env("RUST_LOG", "info")
        .env("NOTIFY_SOCKET", &notify_path)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&new_log).expect("log file"))
        .spawn()
        .expect("spawn corral serve --upgrade");
    let new = Proc::new(child, Some(new_log));
    let new_pid = new.child.id();
    // The old process waits for the new one to listen on the upgrade socket.
    let quit = Command::new("kill")
        .args(["-QUIT", &old.proc.child.id().to_string()])
        .status()
        .expect("kill");
    assert!(quit.success());
    phase.quit_sent.store(true, Ordering::Relaxed);
    let quit_at = Instant::now();

    // With an hour of grace, an exit within the deadline means the drain finished.
    let status = wait_for("the old corral to exit", || {
        let s = old.proc.child.try_wait().expect("try_wait");
        async move { s }
    })
    .await;
    let old_ran = quit_at.elapsed();
    // Keep the load on the new process alone for a moment, then stop it.
    let at_exit = tally.requests.load(Ordering::Relaxed);
    wait_for("requests after the old corral exited", || {
        let n = tally.requests.load(Ordering::Relaxed);
        async move { (n >= at_exit + 2 * WORKERS).then_some(()) }
    })
    .await;
    phase.stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.expect("load worker");
    }

    let admin_after = reqwest::get(format!("{admin}/api/v1/status"))
        .await
        .expect("admin port after the upgrade")
        .json::<Value>()
        .await
        .expect("status json");
    let t = |a: &AtomicUsize| a.load(Ordering::Relaxed);
    println!(
        "upgrade under load: {} proxied requests ({} streams, {} spanning the hand-over), \
         {} admin reads; refused {}, cut {}, failed {}; old process exited {:.1}s after SIGQUIT",
        t(&tally.requests),
        t(&tally.streams),
        t(&tally.spanning),
        t(&tally.admin),
        t(&tally.refused),
        t(&tally.cut),
        t(&tally.failed),
        old_ran.as_secs_f64()
    );
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(DEADLINE, notify.recv(&mut buf))
        .await
        .expect("no READY=1 from the new process")
        .expect("notify socket");
    let ready = String::from_utf8_lossy(&buf[..n]).to_string();
    let logs = || format!("old:\n{}\nnew:\n{}", old.proc.log(), new.log());
    assert!(ready.lines().any(|l| l == "READY=1"), "{ready:?}");
    assert!(
        ready.lines().any(|l| l == format!("MAINPID={new_pid}")),
        "{ready:?}"
    );
    assert!(status.success(), "old exited with {status}\n{}", logs());
    assert_eq!(t(&tally.refused), 0, "connections refused\n{}", logs());
    assert_eq!(t(&tally.cut), 0, "streams cut\n{}", logs());
    assert_eq!(t(&tally.failed), 0, "requests failed\n{}", logs());
    assert!(t(&tally.spanning) > 0, "no stream spanned the hand-over");
    assert_eq!(admin_after["backends_healthy"], 1);
    assert!(
        new.log().contains("corral::access"),
        "the new process served nothing\n{}",
        logs()
    );
}
