//! Harness for integration tests: real `corral` and `corral sim` processes on
//! 127.0.0.1 ephemeral ports, killed when the handle drops. Waiting is always polling
//! with a deadline, never a fixed sleep.
#![allow(dead_code)]

pub mod hostile;

use std::future::Future;
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_corral");

/// Generous: a loaded 2-core CI machine is slow, and polling returns early anyway.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// A child process killed on drop.
pub struct Proc {
    pub child: Child,
    stderr_path: Option<std::path::PathBuf>,
}

impl Proc {
    /// Takes charge of `child`; `stderr_path` is where its stderr goes, if a file.
    pub fn new(child: Child, stderr_path: Option<std::path::PathBuf>) -> Proc {
        Proc { child, stderr_path }
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The process's stderr so far (corral's log), for assertions and failure output.
    pub fn log(&self) -> String {
        self.stderr_path
            .as_ref()
            .and_then(|p| std::fs::read_to_string(p).ok())
            .unwrap_or_default()
    }

    /// Waits until the log contains `needle`: corral writes its log in batches, up to
    /// 100 ms after the event.
    pub async fn wait_log(&self, needle: &str) {
        let start = Instant::now();
        while !self.log().contains(needle) {
            if start.elapsed() > DEADLINE {
                panic!(
                    "no {needle:?} in the log within {DEADLINE:?}:\n{}",
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Polls `check` until it returns `Some`, or panics with `what` after the deadline.
pub async fn wait_for<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if start.elapsed() > DEADLINE {
            panic!("timed out after {DEADLINE:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

pub struct Sim {
    pub proc: Proc,
    pub addr: SocketAddr,
}

impl Sim {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Switches the simulator's fault mode at run time.
    pub async fn set_fault(&self, mode: &str) {
        let r = reqwest::Client::new()
            .post(format!("{}/sim/fault", self.url()))
            .json(&serde_json::json!({ "mode": mode }))
            .send()
            .await
            .expect("sim fault switch");
        assert!(r.status().is_success(), "fault switch: {}", r.status());
    }

    pub async fn stats(&self) -> serde_json::Value {
        reqwest::get(format!("{}/sim/stats", self.url()))
            .await
            .expect("sim stats")
            .json()
            .await
            .expect("sim stats json")
    }
}

/// Starts `corral sim` on an ephemeral port; `args` are extra flags. Model loads take
/// 50 ms unless `args` say otherwise, so tests do not wait on simulated loads.
pub fn start_sim(args: &[&str]) -> Sim {
    let load_time: &[&str] = if args.contains(&"--load-time") {
        &[]
    } else {
        &["--load-time", "50ms"]
    };
    let mut child = Command::new(BIN)
        .args(["sim", "--listen", "127.0.0.1:0"])
        .args(load_time)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn corral sim");
    let stdout = child.stdout.take().expect("sim stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let announced = line.strip_prefix("corral sim listening on ");
            let addr =
                announced.and_then(|a| a.strip_prefix("http://").or(a.strip_prefix("https://")));
            if let Some(addr) = addr {
                let _ = tx.send(addr.trim().to_string());
            }
        }
    });
    let addr = rx
        .recv_timeout(DEADLINE)
        .expect("sim did not print its address")
        .parse()
        .expect("sim address");
    Sim {
        proc: Proc {
            child,
            stderr_path: None,
        },
        addr,
    }
}

/// A port free right now. corral's listener is Pingora's, which takes a fixed address.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind ephemeral port")
        .port()
}

pub struct Corral {
    pub proc: Proc,
    pub addr: SocketAddr,
    pub dir: tempfile::TempDir,
}

impl Corral {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A real Ollama client (ollama-rs) pointed at this corral.
    pub fn ollama(&self) -> ollama_rs::Ollama {
        ollama_rs::Ollama::try_new(self.url()).expect("corral url")
    }

    /// POSTs a JSON body to the proxy. Each call gets its own connection, so a test
    /// never races corral closing a connection whose stream it had cut.
    pub async fn post_json(&self, path: &str, body: &serde_json::Value) -> reqwest::Response {
        reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .build()
            .expect("http client")
            .post(format!("{}{path}", self.url()))
            .json(body)
            .send()
            .await
            .expect("request to corral")
    }

    /// GETs an admin API path as JSON; `None` while the admin API is not answering.
    pub async fn admin(&self, path: &str) -> Option<serde_json::Value> {
        let url = format!("{}{path}", admin_url(self));
        reqwest::get(url).await.ok()?.json().await.ok()
    }

    /// Waits until `n` backends have passed their probes.
    pub async fn wait_healthy(&self, n: usize) {
        wait_for(&format!("{n} healthy backends"), || async {
            let v = self.admin("/api/v1/status").await?;
            (v["backends_healthy"] == n).then_some(())
        })
        .await
    }

    pub fn config_path(&self) -> std::path::PathBuf {
        self.dir.path().join("corral.yaml")
    }
}

/// A `backends:` list for these simulators, `max_concurrency` each.
pub fn backends_yaml(sims: &[&Sim], max_concurrency: usize) -> String {
    let mut out = String::from("backends:\n");
    for (i, s) in sims.iter().enumerate() {
        out.push_str(&format!(
            "  - {{name: b{i}, url: 'http://{}', max_concurrency: {max_concurrency}}}\n",
            s.addr
        ));
    }
    out
}

/// Starts `corral serve` with `yaml` plus a `listen:` line it chooses, and waits until
/// it answers and every backend in it has passed a probe.
pub async fn start_corral(yaml: &str) -> Corral {
    let admin_port = free_port();
    start_corral_admin(&format!("listen: '127.0.0.1:{admin_port}'"), yaml).await
}

/// [`start_corral`] with the content of the `admin:` mapping given (its `listen: '…'`
/// first, where [`admin_url`] looks for it).
pub async fn start_corral_admin(admin: &str, yaml: &str) -> Corral {
    start_corral_env(admin, yaml, &[]).await
}

/// [`start_corral_admin`] with extra environment variables for the process.
pub async fn start_corral_env(admin: &str, yaml: &str, env: &[(&str, &std::ffi::OsStr)]) -> Corral {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    let config = format!("listen: {addr}\nadmin: {{{admin}}}\nthreads: 2\n{yaml}");
    let path = dir.path().join("corral.yaml");
    std::fs::write(&path, config).expect("write config");
    let log_path = dir.path().join("corral.log");
    let log = std::fs::File::create(&log_path).expect("log file");
    let child = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&path)
        .env("RUST_LOG", "info")
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn corral serve");
    let corral = Corral {
        proc: Proc {
            child,
            stderr_path: Some(log_path),
        },
        addr,
        dir,
    };
    let url = corral.url();
    let client = reqwest::Client::new();
    wait_for("corral to answer HEAD /", || {
        let c = client.head(&url).send();
        async move { c.await.ok().filter(|r| r.status().is_success()) }
    })
    .await;
    // The proxy can answer before the reloader watches the file; a test that rewrote
    // the file in between would wait for a reload that never comes.
    wait_for("corral to watch its config file", || async {
        corral
            .proc
            .log()
            .contains("watching the config file")
            .then_some(())
    })
    .await;
    corral
}

/// Waits until corral's merged `/api/tags` lists `model` (i.e. a backend holding it
/// passed its probe).
pub async fn wait_model(corral: &Corral, model: &str) {
    let url = format!("{}/api/tags", corral.url());
    let want = if model.contains(':') {
        model.to_string()
    } else {
        format!("{model}:latest")
    };
    wait_for(&format!("model {model} to be listed"), || {
        let url = url.clone();
        let want = want.clone();
        async move {
            let v: serde_json::Value = reqwest::get(&url).await.ok()?.json().await.ok()?;
            v["models"]
                .as_array()?
                .iter()
                .any(|m| m["name"] == want.as_str())
                .then_some(())
        }
    })
    .await
}

/// Waits until every backend of a freshly started corral is routable: each model of
/// each sim gets routed somewhere. Simple proxy: poll a cheap `/api/show` per model.
pub async fn wait_routable(corral: &Corral, models: &[&str]) {
    for m in models {
        wait_model(corral, m).await;
    }
}

/// Reads a response body to the end, line by line, with a deadline per chunk so a
/// hang fails the test instead of blocking it.
pub async fn read_lines(resp: reqwest::Response) -> Result<Vec<String>, String> {
    use futures::StreamExt;
    let mut stream = resp.bytes_stream();
    let mut buf = Vec::new();
    loop {
        match tokio::time::timeout(DEADLINE, stream.next()).await {
            Err(_) => return Err("stream hung".into()),
            Ok(None) => break,
            Ok(Some(Ok(b))) => buf.extend_from_slice(&b),
            Ok(Some(Err(e))) => {
                let text = String::from_utf8_lossy(&buf).to_string();
                return Err(format!("stream error {e} after: {text}"));
            }
        }
    }
    Ok(String::from_utf8_lossy(&buf)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_string)
        .collect())
}

/// Runs the `corral` binary without the environment's admin settings; returns (exit
/// ok, stdout, stderr).
pub fn corral_cli(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .env_remove("CORRAL_ADMIN_TOKEN")
        .env_remove("CORRAL_API_URL")
        .output()
        .expect("run corral");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

/// corral's Prometheus text, from its admin API.
pub async fn scrape(c: &Corral) -> String {
    reqwest::get(format!("{}/metrics", admin_url(c)))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text")
}

/// The admin API base URL of a corral started by `start_corral`.
pub fn admin_url(c: &Corral) -> String {
    let text = std::fs::read_to_string(c.config_path()).expect("config");
    let line = text
        .lines()
        .find(|l| l.starts_with("admin:"))
        .expect("admin line");
    let addr = line.split('\'').nth(1).expect("admin addr");
    format!("http://{addr}")
}
