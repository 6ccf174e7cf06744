//! The front-ends under comparison — corral with each routing strategy, and nginx with
//! `least_conn` and with consistent hashing on the session header — started in front of
//! one fleet and waited for until they can route to every box.

use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::Value;

use crate::fleet::{Fleet, FleetSpec, STARTUP};
use crate::process::{free_port, poll, Proc};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// corral with `routing.strategy` set to this name.
    Corral(&'static str),
    NginxLeastConn,
    /// `hash $http_x_session consistent`: nginx cannot read the JSON body, so the load
    /// generator's session header is the best key it can have.
    NginxHash,
}

#[derive(Debug, Clone, Copy)]
pub struct FrontEndSpec {
    /// Stable name for `--only` and the JSON report.
    pub id: &'static str,
    /// Row label in the table.
    pub label: &'static str,
    pub kind: Kind,
}

pub const ALL: [FrontEndSpec; 5] = [
    FrontEndSpec {
        id: "corral-affinity",
        label: "corral `affinity`",
        kind: Kind::Corral("affinity"),
    },
    FrontEndSpec {
        id: "corral-least-loaded",
        label: "corral `least_loaded`",
        kind: Kind::Corral("least_loaded"),
    },
    FrontEndSpec {
        id: "corral-round-robin",
        label: "corral `round_robin`",
        kind: Kind::Corral("round_robin"),
    },
    FrontEndSpec {
        id: "nginx-least-conn",
        label: "nginx `least_conn`",
        kind: Kind::NginxLeastConn,
    },
    FrontEndSpec {
        id: "nginx-hash",
        label: "nginx `hash $http_x_session consistent`",
        kind: Kind::NginxHash,
    },
];

/// A running front-end; dropping it stops the process and removes its files.
pub struct FrontEnd {
    pub url: String,
    proc: Proc,
    _dir: tempfile::TempDir,
}

impl FrontEnd {
    /// `Err` if the proxy died during the run (its log explains why).
    pub fn check_alive(&mut self) -> Result<(), String> {
        self.proc.check_alive()
    }
}

pub async fn start(
    spec: &FrontEndSpec,
    fleet: &Fleet,
    fleet_spec: &FleetSpec,
    corral_bin: &Path,
    nginx_bin: Option<&Path>,
    client: &reqwest::Client,
) -> Result<FrontEnd, String> {
    match spec.kind {
        Kind::Corral(strategy) => {
            start_corral(strategy, fleet, fleet_spec, corral_bin, client).await
        }
        Kind::NginxLeastConn | Kind::NginxHash => {
            let bin = nginx_bin.ok_or("nginx is not installed")?;
            start_nginx(spec.kind, fleet, bin, client).await
        }
    }
}

async fn start_corral(
    strategy: &str,
    fleet: &Fleet,
    fleet_spec: &FleetSpec,
    bin: &Path,
    client: &reqwest::Client,
) -> Result<FrontEnd, String> {
    let dir = tempfile::tempdir().map_err(|e| format!("tempdir: {e}"))?;
    let port = free_port()?;
    let admin_port = free_port()?;
    // Only keys the README documents, so a schema change elsewhere in corral cannot
    // silently change what is measured. A short health interval makes the fleet
    // routable quickly; routing itself does not depend on it. `max_concurrency` is the
    // box's `OLLAMA_NUM_PARALLEL`, as the README tells operators to set it.
    let mut config = format!(
        "listen: 127.0.0.1:{port}\n\
         admin: {{listen: '127.0.0.1:{admin_port}'}}\n\
         routing: {{strategy: {strategy}}}\n\
         health: {{interval: 500ms}}\n\
         backends:\n"
    );
    for (sim, spec_box) in fleet.sims.iter().zip(&fleet_spec.boxes) {
        config.push_str(&format!(
            "  - {{name: {}, url: 'http://{}', max_concurrency: {}}}\n",
            sim.name, sim.addr, spec_box.parallel
        ));
    }
    let path = dir.path().join("corral.yaml");
    std::fs::write(&path, &config).map_err(|e| format!("write {}: {e}", path.display()))?;
    let log = dir.path().join("corral.log");
    let log_file = std::fs::File::create(&log).map_err(|e| format!("create corral.log: {e}"))?;
    let child = Command::new(bin)
        .arg("serve")
        .arg("--config")
        .arg(&path)
        // Per-request info logging would cost CPU the 2-core machine needs for the fleet.
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log_file)
        .spawn()
        .map_err(|e| format!("spawn {} serve: {e}", bin.display()))?;
    let mut front = FrontEnd {
        url: format!("http://127.0.0.1:{port}"),
        proc: Proc::new(child, format!("corral ({strategy})"), Some(log)),
        _dir: dir,
    };
    // Routable means: every box passed a probe (version, tags and ps together) and
    // corral's view of what is resident matches the box's start — empty included — so
    // no strategy starts blind or with a stale belief.
    let admin = format!("http://127.0.0.1:{admin_port}/api/v1/backends");
    let expected: Vec<(String, Vec<String>)> = fleet
        .sims
        .iter()
        .enumerate()
        .map(|(i, sim)| {
            let mut resident: Vec<String> = fleet_spec
                .resident_names(i)
                .into_iter()
                .map(with_tag)
                .collect();
            resident.sort();
            (sim.name.clone(), resident)
        })
        .collect();
    let ready = poll("corral to see every box healthy", STARTUP, || async {
        let body: Value = client.get(&admin).send().await.ok()?.json().await.ok()?;
        let list = body
            .as_array()
            .or_else(|| body.get("backends")?.as_array())?;
        let ready = expected.iter().all(|(name, resident)| {
            list.iter().any(|b| {
                let field = |key: &str| b.get(key).cloned().unwrap_or(Value::Null);
                let mut seen: Vec<String> = field("resident")
                    .as_array()
                    .map(|r| r.iter().filter_map(|m| m.as_str().map(with_tag)).collect())
                    .unwrap_or_default();
                seen.sort();
                field("name").as_str() == Some(name.as_str())
                    && field("healthy").as_bool() == Some(true)
                    && field("models").as_array().is_some_and(|m| !m.is_empty())
                    && &seen == resident
            })
        });
        ready.then_some(())
    })
    .await;
    if let Err(e) = ready {
        let why = front
            .check_alive()
            .err()
            .unwrap_or_else(|| front.proc.log_tail());
        return Err(format!("{e}\n{why}"));
    }
    wait_models_listed(&front.url, &fleet_spec.models, client).await?;
    Ok(front)
}

/// Waits until the front-end's merged `/api/tags` lists every model.
async fn wait_models_listed(
    url: &str,
    models: &[String],
    client: &reqwest::Client,
) -> Result<(), String> {
    let tags = format!("{url}/api/tags");
    poll("every model in /api/tags", STARTUP, || async {
        let body: Value = client.get(&tags).send().await.ok()?.json().await.ok()?;
        let listed: Vec<&str> = body
            .get("models")?
            .as_array()?
            .iter()
            .filter_map(|m| m.get("name")?.as_str())
            .collect();
        models
            .iter()
            .all(|m| listed.contains(&with_tag(m).as_str()))
            .then_some(())
    })
    .await
}

fn with_tag(model: &str) -> String {
    if model.contains(':') {
        model.to_string()
    } else {
        format!("{model}:latest")
    }
}

fn nginx_config(kind: Kind, fleet: &Fleet, port: u16, prefix: &Path) -> String {
    let balance = match kind {
        Kind::NginxHash => "hash $http_x_session consistent;",
        _ => "least_conn;",
    };
    let servers: String = fleet
        .sims
        .iter()
        .map(|s| format!("        server {};\n", s.addr))
        .collect();
    let prefix = prefix.display();
    // `master_process off` keeps nginx to one process, so killing the child really
    // stops it (orphaned workers of a SIGKILLed master would keep the port) and
    // `least_conn` sees every connection instead of one worker's share. Temp paths
    // live in the run's own directory; buffers are large enough that a chat body is
    // never spooled to disk anyway.
    format!(
        "worker_processes 1;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/client_body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    client_max_body_size 0;
    client_body_buffer_size 1m;
    upstream fleet {{
        {balance}
{servers}        keepalive 32;
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://fleet;
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
            # Ollama on loopback answers 403 to a foreign Host such as `fleet`.
            proxy_set_header Host localhost;
            proxy_buffering off;
            proxy_request_buffering off;
            proxy_read_timeout 300s;
            proxy_send_timeout 300s;
        }}
    }}
}}
"
    )
}

async fn start_nginx(
    kind: Kind,
    fleet: &Fleet,
    bin: &Path,
    client: &reqwest::Client,
) -> Result<FrontEnd, String> {
    let dir = tempfile::tempdir().map_err(|e| format!("tempdir: {e}"))?;
    let port = free_port()?;
    let conf = dir.path().join("nginx.conf");
    std::fs::write(&conf, nginx_config(kind, fleet, port, dir.path()))
        .map_err(|e| format!("write {}: {e}", conf.display()))?;
    let log = dir.path().join("nginx.log");
    let log_file = std::fs::File::create(&log).map_err(|e| format!("create nginx.log: {e}"))?;
    let prefix = dir.path().display().to_string();
    let child = Command::new(bin)
        .arg("-c")
        .arg(&conf)
        .args(["-p", &prefix])
        // `-e` keeps nginx from opening its compiled-in /var/log path before the config
        // is read.
        .args(["-e", "stderr"])
        .args([
            "-g",
            &format!("daemon off; master_process off; pid {prefix}/nginx.pid; error_log stderr;"),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log_file)
        .spawn()
        .map_err(|e| format!("spawn {}: {e}", bin.display()))?;
    let mut front = FrontEnd {
        url: format!("http://127.0.0.1:{port}"),
        proc: Proc::new(child, "nginx", Some(log)),
        _dir: dir,
    };
    let version = format!("{}/api/version", front.url);
    let up = poll("nginx to proxy /api/version", STARTUP, || async {
        let r = client.get(&version).send().await.ok()?;
        r.status().is_success().then_some(())
    })
    .await;
    if let Err(e) = up {
        let why = front
            .check_alive()
            .err()
            .unwrap_or_else(|| front.proc.log_tail());
        return Err(format!("{e}\n{why}"));
    }
    Ok(front)
}
