//! End-to-end tests of the simulator over loopback HTTP: a real `SimServer` on an
//! ephemeral port, driven with reqwest and with the ollama-rs and async-openai clients.
//! Rates are cranked up so each test takes milliseconds; the only waits are bounded
//! polls of `/sim/stats` for effects that happen on the server after the client moved on.

mod clients;
mod faults;
mod manage;
mod native;
mod openai;
mod styles;

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;

use super::{SimArgs, SimServer};

pub(super) struct TestSim {
    pub addr: SocketAddr,
    pub http: reqwest::Client,
}

/// Args for a simulator that answers in milliseconds: 5 tokens per reply.
pub(super) fn fast_args() -> SimArgs {
    SimArgs {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        load_time: Duration::from_millis(20),
        tokens_per_sec: 5000.0,
        prefill_tokens_per_sec: 1_000_000.0,
        num_predict: 5,
        ..SimArgs::default()
    }
}

pub(super) async fn start(args: SimArgs) -> TestSim {
    let server = SimServer::bind(args).await.expect("simulator binds");
    let addr = server.local_addr();
    tokio::spawn(server.serve());
    TestSim {
        addr,
        http: reqwest::Client::new(),
    }
}

impl TestSim {
    pub(super) fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub(super) async fn post(&self, path: &str, body: Value) -> reqwest::Response {
        self.http
            .post(self.url(path))
            .json(&body)
            .send()
            .await
            .expect("request sent")
    }

    pub(super) async fn get_json(&self, path: &str) -> Value {
        self.http
            .get(self.url(path))
            .send()
            .await
            .expect("request sent")
            .json()
            .await
            .expect("JSON body")
    }

    pub(super) async fn stats(&self) -> Value {
        self.get_json("/sim/stats").await
    }

    pub(super) async fn set_fault(&self, mode: &str) {
        let response = self
            .post("/sim/fault", serde_json::json!({ "mode": mode }))
            .await;
        assert_eq!(response.status(), 200);
    }

    /// Polls `/sim/stats` until `done` holds (the server notices a disconnect a moment
    /// after the client drops it); panics with the last snapshot after 5 s.
    pub(super) async fn wait_for_stats(&self, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let stats = self.stats().await;
            if done(&stats) {
                return stats;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "stats never reached the expected state: {stats}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

pub(super) fn ndjson(text: &str) -> Vec<Value> {
    text.lines()
        .map(|line| serde_json::from_str(line).expect("each line is JSON"))
        .collect()
}

pub(super) const METRICS: [&str; 6] = [
    "total_duration",
    "load_duration",
    "prompt_eval_count",
    "prompt_eval_duration",
    "eval_count",
    "eval_duration",
];

/// `--load-time` reads durations as corral's YAML does, bare seconds included.
#[test]
fn load_time_takes_bare_seconds_like_the_yaml() {
    use clap::Parser;
    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        sim: SimArgs,
    }
    let load = |v: &str| Cli::try_parse_from(["sim", "--load-time", v]).map(|c| c.sim.load_time);
    assert_eq!(load("3").unwrap(), Duration::from_secs(3));
    assert_eq!(load("0.5").unwrap(), Duration::from_millis(500));
    assert_eq!(load("2s").unwrap(), Duration::from_secs(2));
    assert_eq!(load("1m30s").unwrap(), Duration::from_secs(90));
    let err = load("soon").unwrap_err().to_string();
    assert!(err.contains("invalid duration 'soon'"), "{err}");
    assert!(load("-1").is_err());
}
