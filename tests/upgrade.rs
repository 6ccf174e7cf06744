//! Zero-downtime upgrade under load: a second `corral serve --upgrade` takes the
//! sockets over from the running one (SIGQUIT; or SIGUSR2, where the running one
//! starts it) while streaming and non-streaming requests and admin reads keep coming.
//! No connection may be refused or reset, every stream must end with `done: true`, and
//! the admin port must answer from the new process once the old one has exited.

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

/// The load loop: `WORKERS` tasks cycling through streams, whole answers and admin
/// reads until stopped, counting what happened.
struct Load {
    tally: Arc<Tally>,
    phase: Arc<Phase>,
    workers: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(url: String, admin: String) -> Load {
        let tally = Arc::new(Tally::default());
        let phase = Arc::new(Phase {
            stop: AtomicBool::new(false),
            quit_sent: AtomicBool::new(false),
        });
        // Kept-alive connections, as real clients use them.
        let http = reqwest::Client::new();
        let started = Instant::now();
        let workers = (0..WORKERS)
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
        Load {
            tally,
            phase,
            workers,
        }
    }

    async fn streams_in_flight(&self) {
        wait_for("streams in flight", || {
            let n = self.tally.streams.load(Ordering::Relaxed);
            async move { (n >= WORKERS).then_some(()) }
        })
        .await;
    }

    fn signal_sent(&self) {
        self.phase.quit_sent.store(true, Ordering::Relaxed);
    }

    /// Keeps going on the new process alone for a moment, then stops.
    async fn finish(self) -> Arc<Tally> {
        let at_exit = self.tally.requests.load(Ordering::Relaxed);
        wait_for("requests after the old corral exited", || {
            let n = self.tally.requests.load(Ordering::Relaxed);
            async move { (n >= at_exit + 2 * WORKERS).then_some(()) }
        })
        .await;
        self.phase.stop.store(true, Ordering::Relaxed);
        for w in self.workers {
            w.await.expect("load worker");
        }
        self.tally
    }
}

impl Tally {
    fn report(&self, how: &str, old_ran: Duration) {
        let t = |a: &AtomicUsize| a.load(Ordering::Relaxed);
        println!(
            "{how}: {} proxied requests ({} streams, {} spanning the hand-over), {} admin \
             reads; refused {}, cut {}, failed {}; old process exited {:.1}s after the signal",
            t(&self.requests),
            t(&self.streams),
            t(&self.spanning),
            t(&self.admin),
            t(&self.refused),
            t(&self.cut),
            t(&self.failed),
            old_ran.as_secs_f64()
        );
    }

    fn assert_clean(&self, logs: impl Fn() -> String) {
        let t = |a: &AtomicUsize| a.load(Ordering::Relaxed);
        assert_eq!(t(&self.refused), 0, "connections refused\n{}", logs());
        assert_eq!(t(&self.cut), 0, "streams cut\n{}", logs());
        assert_eq!(t(&self.failed), 0, "requests failed\n{}", logs());
        assert!(t(&self.spanning) > 0, "no stream spanned the hand-over");
    }
}

/// About a second per stream: several are in flight whenever the hand-over happens.
fn slow_sim() -> Sim {
    start_sim(&[
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
    ])
}

fn send_signal(signal: &str, pid: u32) {
    let ok = Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .expect("kill")
        .success();
    assert!(ok, "kill {signal} {pid}");
}

/// With an hour of grace, an exit within the deadline means the drain finished.
async fn wait_exit(c: &mut Corral) -> std::process::ExitStatus {
    wait_for("the old corral to exit", || {
        let s = c.proc.child.try_wait().expect("try_wait");
        async move { s }
    })
    .await
}

/// The next notification that has `line`.
async fn notification(sock: &tokio::net::UnixDatagram, line: &str) -> String {
    let mut buf = vec![0u8; 4096];
    loop {
        let n = tokio::time::timeout(DEADLINE, sock.recv(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("no {line} notification"))
            .expect("notify socket");
        let m = String::from_utf8_lossy(&buf[..n]).to_string();
        if m.lines().any(|l| l == line) {
            return m;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrade_under_load_refuses_and_cuts_nothing() {
    let sim = slow_sim();
    let mut old = start_corral(&format!(
        "shutdown_grace: 1h\n{}",
        backends_yaml(&[&sim], 8)
    ))
    .await;
    wait_routable(&old, &["llama3"]).await;
    let admin = admin_url(&old);
    let load = Load::start(old.url(), admin.clone());
    // Hand over while streams are in flight.
    load.streams_in_flight().await;

    let new_log = old.dir.path().join("corral-new.log");
    // As under systemd: the new process must name itself the service's main PID.
    let notify_path = old.dir.path().join("notify.sock");
    let notify = tokio::net::UnixDatagram::bind(&notify_path).expect("bind notify socket");
    let child = Command::new(BIN)
        .args(["serve", "--upgrade", "--config"])
        .arg(old.config_path())
        .env("RUST_LOG", "info")
        .env("NOTIFY_SOCKET", &notify_path)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&new_log).expect("log file"))
        .spawn()
        .expect("spawn corral serve --upgrade");
    let new = Proc::new(child, Some(new_log));
    // The old process waits for the new one to listen on the upgrade socket.
    send_signal("-QUIT", old.proc.child.id());
    load.signal_sent();
    let quit_at = Instant::now();
    let status = wait_exit(&mut old).await;
    let old_ran = quit_at.elapsed();
    let tally = load.finish().await;
    tally.report("upgrade under load (SIGQUIT)", old_ran);

    let admin_after = reqwest::get(format!("{admin}/api/v1/status"))
        .await
        .expect("admin port after the upgrade")
        .json::<Value>()
        .await
        .expect("status json");
    let ready = notification(&notify, "READY=1").await;
    let logs = || format!("old:\n{}\nnew:\n{}", old.proc.log(), new.log());
    assert!(
        ready
            .lines()
            .any(|l| l == format!("MAINPID={}", new.child.id())),
        "{ready:?}"
    );
    assert!(status.success(), "old exited with {status}\n{}", logs());
    tally.assert_clean(logs);
    assert_eq!(admin_after["backends_healthy"], 1);
    assert!(
        new.log().contains("corral::access"),
        "the new process served nothing\n{}",
        logs()
    );
}

/// A process this test did not start (the successor SIGUSR2 spawns), killed on drop.
struct Adopted(u32);

impl Drop for Adopted {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-KILL", &self.0.to_string()])
            .status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigusr2_upgrades_a_cluster_member_with_its_replicated_backends() {
    let sim = slow_sim();
    let data = tempfile::tempdir().expect("tempdir");
    let notify_dir = tempfile::tempdir().expect("tempdir");
    let notify_path = notify_dir.path().join("notify.sock");
    let notify = tokio::net::UnixDatagram::bind(&notify_path).expect("bind notify socket");
    let raft = free_port();
    let yaml = format!(
        "shutdown_grace: 1h\nhealth: {{interval: 200ms}}\ncluster:\n  node_id: 1\n  \
         listen: 127.0.0.1:{raft}\n  data_dir: '{}'\n  peers: {{1: '127.0.0.1:{raft}'}}\n  \
         secret: upgrade-test-secret\n",
        data.path().display()
    );
    let admin_port = free_port();
    let mut old = start_corral_env(
        &format!("listen: '127.0.0.1:{admin_port}'"),
        &yaml,
        &[("NOTIFY_SOCKET", notify_path.as_os_str())],
    )
    .await;
    let ready = notification(&notify, "READY=1").await;
    assert!(!ready.contains("MAINPID="), "{ready:?}");
    wait_for("a Raft leader", || async {
        let s = old.admin("/api/v1/cluster/status").await?;
        s["leader"].as_u64()
    })
    .await;
    // A backend that exists only in the replicated state machine.
    let admin = admin_url(&old);
    let added = reqwest::Client::new()
        .post(format!("{admin}/api/v1/backends"))
        .json(&serde_json::json!({"name": "a", "url": sim.url(), "max_concurrency": 8}))
        .send()
        .await
        .expect("add backend");
    assert!(added.status().is_success(), "{}", added.status());
    wait_routable(&old, &["llama3"]).await;

    let load = Load::start(old.url(), admin.clone());
    load.streams_in_flight().await;
    send_signal("-USR2", old.proc.child.id());
    load.signal_sent();
    let signal_at = Instant::now();
    let ready = notification(&notify, "READY=1").await;
    let new_pid: u32 = ready
        .lines()
        .find_map(|l| l.strip_prefix("MAINPID="))
        .unwrap_or_else(|| panic!("no MAINPID with READY=1: {ready:?}"))
        .parse()
        .expect("MAINPID");
    let _new = Adopted(new_pid);
    let status = wait_exit(&mut old).await;
    let old_ran = signal_at.elapsed();
    let tally = load.finish().await;
    tally.report("cluster member upgrade under load (SIGUSR2)", old_ran);

    let logs = || old.proc.log();
    assert_ne!(new_pid, old.proc.child.id());
    assert!(status.success(), "old exited with {status}\n{}", logs());
    tally.assert_clean(logs);
    let backends = reqwest::get(format!("{admin}/api/v1/backends"))
        .await
        .expect("admin port after the upgrade")
        .json::<Value>()
        .await
        .expect("backends json");
    assert_eq!(backends[0]["name"], "a", "{backends}");
    assert_eq!(backends[0]["healthy"], true, "{backends}");
    let cluster = reqwest::get(format!("{admin}/api/v1/cluster/status"))
        .await
        .expect("cluster status")
        .json::<Value>()
        .await
        .expect("cluster json");
    assert_eq!(cluster["leader"], 1, "{cluster}");
}
