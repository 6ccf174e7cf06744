//! The simulated Ollama fleet a front-end is measured against: `corral sim` child
//! processes on 127.0.0.1 ephemeral ports and their `/sim/stats` counters.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;

use crate::process::{poll, Proc};

/// The shape of the fleet. Every front-end gets a fresh fleet built from the same spec,
/// so no run inherits another's prompt caches or residency.
#[derive(Debug, Clone, Serialize)]
pub struct FleetSpec {
    /// Models on every box's disk, most popular first.
    pub models: Vec<String>,
    pub boxes: Vec<BoxSpec>,
    /// Models a box keeps loaded at once (`OLLAMA_MAX_LOADED_MODELS`).
    pub max_loaded: usize,
    pub load_time: String,
    pub tokens_per_sec: u32,
    pub prefill_tokens_per_sec: u32,
    pub num_predict: u32,
    pub json_style: JsonStyle,
}

/// One simulated box. Each is its own `corral sim` process, so boxes may differ.
#[derive(Debug, Clone, Serialize)]
pub struct BoxSpec {
    /// Slots per loaded model (`OLLAMA_NUM_PARALLEL`); also corral's `max_concurrency`.
    pub parallel: usize,
    /// Indexes in `FleetSpec::models` of the models loaded at start (none: empty box).
    pub resident: Vec<usize>,
}

/// How the sims spell their JSON. Real Ollama writes compact JSON; Python-based
/// Ollama-compatible servers put spaces after `:` and `,`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum JsonStyle {
    Compact,
    Spaced,
}

impl JsonStyle {
    /// The sim's `--json-style` value; `None` for the sim's default (compact), so a
    /// sim without the flag still runs every compact fleet.
    fn flag_value(self) -> Option<&'static str> {
        match self {
            JsonStyle::Compact => None,
            JsonStyle::Spaced => Some("spaced"),
        }
    }
}

impl FleetSpec {
    /// The names of the models box `index` starts with.
    pub fn resident_names(&self, index: usize) -> Vec<&str> {
        self.boxes[index]
            .resident
            .iter()
            .filter_map(|&m| self.models.get(m).map(String::as_str))
            .collect()
    }
}

pub struct Sim {
    pub name: String,
    pub addr: SocketAddr,
    _proc: Proc,
}

pub struct Fleet {
    pub sims: Vec<Sim>,
}

/// How long a process gets to come up. Generous: a 2-core machine running a
/// benchmark is slow, and polling returns as soon as it is ready anyway.
pub const STARTUP: Duration = Duration::from_secs(30);

impl Fleet {
    pub fn start(spec: &FleetSpec, bin: &Path, log_dir: &Path) -> Result<Fleet, String> {
        // Spawn every box first, then collect the addresses: the boxes boot in parallel.
        let mut pending = Vec::new();
        for (index, spec_box) in spec.boxes.iter().enumerate() {
            let name = format!("box{index}");
            if let Some(bad) = spec_box.resident.iter().find(|&&m| m >= spec.models.len()) {
                return Err(format!("{name}: resident model index {bad} out of range"));
            }
            if (1..spec_box.resident.len())
                .any(|i| spec_box.resident[..i].contains(&spec_box.resident[i]))
            {
                return Err(format!(
                    "{name}: a model is resident twice in {:?}",
                    spec_box.resident
                ));
            }
            let log = log_dir.join(format!("{name}.log"));
            let log_file = std::fs::File::create(&log)
                .map_err(|e| format!("create {}: {e}", log.display()))?;
            let mut command = Command::new(bin);
            command
                .args(["sim", "--listen", "127.0.0.1:0", "--name", &name])
                .args(["--models", &spec.models.join(",")])
                .args(["--parallel", &spec_box.parallel.to_string()])
                .args(["--max-loaded", &spec.max_loaded.to_string()])
                .args(["--load-time", &spec.load_time])
                .args(["--tokens-per-sec", &spec.tokens_per_sec.to_string()])
                .args([
                    "--prefill-tokens-per-sec",
                    &spec.prefill_tokens_per_sec.to_string(),
                ])
                .args(["--num-predict", &spec.num_predict.to_string()]);
            let resident = spec.resident_names(index);
            if !resident.is_empty() {
                command.args(["--resident", &resident.join(",")]);
            }
            if let Some(style) = spec.json_style.flag_value() {
                command.args(["--json-style", style]);
            }
            let mut child = command
                .env("RUST_LOG", "warn")
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(log_file)
                .spawn()
                .map_err(|e| format!("spawn {} sim: {e}", bin.display()))?;
            let stdout = child.stdout.take().expect("stdout was piped");
            let (tx, rx) = mpsc::channel();
            // The reader keeps draining stdout after the address line so the sim can
            // never block on a full pipe.
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                    if let Some(addr) = line.strip_prefix("corral sim listening on http://") {
                        let _ = tx.send(addr.trim().to_string());
                    }
                }
            });
            pending.push((name.clone(), rx, Proc::new(child, name, Some(log))));
        }
        let mut sims = Vec::new();
        for (name, rx, mut proc) in pending {
            let line = rx.recv_timeout(STARTUP).map_err(|_| {
                let why = proc.check_alive().err().unwrap_or_default();
                format!("{name} did not print its address within {STARTUP:?} {why}")
            })?;
            let addr = line
                .parse()
                .map_err(|e| format!("{name} printed a bad address {line:?}: {e}"))?;
            sims.push(Sim {
                name,
                addr,
                _proc: proc,
            });
        }
        Ok(Fleet { sims })
    }

    /// Every box's counters, in box order.
    pub async fn stats(&self, client: &reqwest::Client) -> Result<Vec<SimStats>, String> {
        let mut all = Vec::new();
        for sim in &self.sims {
            let url = format!("http://{}/sim/stats", sim.addr);
            let body: Value = client
                .get(&url)
                .send()
                .await
                .and_then(|r| r.error_for_status())
                .map_err(|e| format!("GET {url}: {e}"))?
                .json()
                .await
                .map_err(|e| format!("GET {url}: bad JSON: {e}"))?;
            all.push(SimStats::from_json(&body));
        }
        Ok(all)
    }

    /// Waits until no box has a request in flight, so that requests the client gave up
    /// on have settled into `cancelled` before the counters are read.
    pub async fn wait_idle(
        &self,
        client: &reqwest::Client,
        deadline: Duration,
    ) -> Result<(), String> {
        poll("the fleet to go idle", deadline, || async {
            let stats = self.stats(client).await.ok()?;
            stats.iter().all(|s| s.active == 0).then_some(())
        })
        .await
    }
}

/// Whether `corral sim` knows `flag` (its `--help` lists it), so a scenario that needs
/// a newer sim is skipped with a reason instead of failing to start its fleet.
pub fn sim_accepts(bin: &Path, flag: &str) -> Result<bool, String> {
    let out = Command::new(bin)
        .args(["sim", "--help"])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{} sim --help: {e}", bin.display()))?;
    let help = String::from_utf8_lossy(&out.stdout);
    Ok(help
        .split(|c: char| c.is_whitespace() || c == ',' || c == '=')
        .any(|word| word == flag))
}

/// The `/sim/stats` counters the report uses. Read field by field so that counters the
/// sim adds later do not break the bench.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct SimStats {
    pub requests: u64,
    pub active: u64,
    pub completed: u64,
    pub cancelled: u64,
    pub failed: u64,
    pub loads: u64,
    pub evictions: u64,
    pub prompt_tokens_cached: u64,
    pub prompt_tokens_evaluated: u64,
}

impl SimStats {
    fn from_json(v: &Value) -> SimStats {
        let n = |key: &str| v.get(key).and_then(Value::as_u64).unwrap_or(0);
        SimStats {
            requests: n("requests"),
            active: n("active"),
            completed: n("completed"),
            cancelled: n("cancelled"),
            failed: n("failed"),
            loads: n("loads"),
            evictions: n("evictions"),
            prompt_tokens_cached: n("prompt_tokens_cached"),
            prompt_tokens_evaluated: n("prompt_tokens_evaluated"),
        }
    }

    /// What happened between two snapshots (`active` is a level, so it keeps `self`'s).
    pub fn since(&self, before: &SimStats) -> SimStats {
        SimStats {
            requests: self.requests.saturating_sub(before.requests),
            active: self.active,
            completed: self.completed.saturating_sub(before.completed),
            cancelled: self.cancelled.saturating_sub(before.cancelled),
            failed: self.failed.saturating_sub(before.failed),
            loads: self.loads.saturating_sub(before.loads),
            evictions: self.evictions.saturating_sub(before.evictions),
            prompt_tokens_cached: self
                .prompt_tokens_cached
                .saturating_sub(before.prompt_tokens_cached),
            prompt_tokens_evaluated: self
                .prompt_tokens_evaluated
                .saturating_sub(before.prompt_tokens_evaluated),
        }
    }
}
