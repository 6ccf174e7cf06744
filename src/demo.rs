//! `corral demo`: three simulated Ollama servers and the proxy in one process, so a
//! newcomer can try corral with the real `ollama` CLI and no GPU.

use std::net::SocketAddr;
use std::sync::mpsc;
use std::time::Duration;

use anyhow::Context;

use crate::config::{BackendConfig, BackendUrl, Config};
use crate::sim::{Fault, SimArgs, SimServer};

/// The demo fleet: each box holds two of three models, one of them already loaded.
const FLEET: [(&str, &[&str], &str); 3] = [
    ("sim-a", &["llama3", "qwen2.5:0.5b"], "llama3"),
    ("sim-b", &["llama3", "mistral"], "mistral"),
    ("sim-c", &["qwen2.5:0.5b", "mistral"], "qwen2.5:0.5b"),
];

fn sim_args(name: &str, models: &[&str], resident: &str) -> SimArgs {
    SimArgs {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        models: models.iter().map(|m| m.to_string()).collect(),
        resident: vec![resident.to_string()],
        parallel: 2,
        max_loaded: 1,
        load_time: Duration::from_secs(2),
        tokens_per_sec: 30.0,
        prefill_tokens_per_sec: 500.0,
        num_predict: 24,
        version: "0.12.6".to_string(),
        fault: Fault::None,
        name: Some(name.to_string()),
        json_style: crate::sim::JsonStyle::Compact,
        tls_cert: None,
        tls_key: None,
    }
}

/// Starts the simulated backends on their own runtime thread and returns their names
/// and addresses once they are listening.
fn start_fleet() -> anyhow::Result<Vec<(String, SocketAddr)>> {
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("demo-sims".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = tx.send(Err(anyhow::anyhow!(e)));
                    return;
                }
            };
            rt.block_on(async move {
                // Installed before the banner, for the whole process: the demo has no
                // config file, and a SIGHUP meant for a `corral serve` must not end it.
                crate::hangup::ignore("corral demo has no config file to reload");
                let mut servers = Vec::new();
                let mut addrs = Vec::new();
                for (name, models, resident) in FLEET {
                    match SimServer::bind(sim_args(name, models, resident)).await {
                        Ok(s) => {
                            addrs.push((name.to_string(), s.local_addr()));
                            servers.push(s);
                        }
                        Err(e) => {
                            let _ = tx.send(Err(e));
                            return;
                        }
                    }
                }
                let _ = tx.send(Ok(addrs));
                let serving = servers.into_iter().map(|s| s.serve());
                futures::future::join_all(serving).await;
            });
        })?;
    rx.recv().context("simulator thread ended early")?
}

/// The demo's listening addresses (`--listen`, `--admin-listen`).
#[derive(clap::Args, Debug, Clone)]
pub struct DemoArgs {
    /// Where the demo's Ollama endpoint listens (set OLLAMA_HOST to it).
    #[arg(long, default_value = "127.0.0.1:11434")]
    pub listen: SocketAddr,
    /// Where its admin API listens: `corral status`, `corral backends` and /metrics.
    /// Port 0 picks a free one (the banner shows it).
    #[arg(long, default_value = "127.0.0.1:11435")]
    pub admin_listen: SocketAddr,
}

/// A taken port, said in the demo's own terms: which flag, and what to do about it. A
/// second demo must fail here rather than leave `corral status` showing the first one.
fn bind_error(e: crate::startup::StartupError) -> anyhow::Error {
    match e {
        crate::startup::StartupError::Bind {
            setting,
            addr,
            source,
        } => {
            let flag = if setting == "admin.listen" {
                "--admin-listen"
            } else {
                "--listen"
            };
            anyhow::anyhow!(
                "cannot listen on {addr} ({flag}): {source}; another corral (or demo) is \
                 probably using it: stop it, or pass {flag} 127.0.0.1:0 for a free port"
            )
        }
        other => other.into(),
    }
}

pub fn run(args: DemoArgs) -> anyhow::Result<()> {
    let fleet = start_fleet()?;
    let mut config = Config::parse("", "demo")?;
    config.listen = vec![args.listen];
    config.admin.listen = args.admin_listen;
    config.health.interval = Duration::from_secs(1);
    config.threads = 2;
    for (name, addr) in &fleet {
        config.backends.push(BackendConfig {
            name: name.clone(),
            url: BackendUrl::parse(&format!("http://{addr}")).map_err(anyhow::Error::msg)?,
            max_concurrency: 2,
            weight: 1,
        });
    }
    // Bound before the banner: a taken port must not be followed by "Try it".
    let corral = crate::server::build(config).map_err(bind_error)?;
    let listen = corral.proxy_addrs.first().copied().unwrap_or(args.listen);
    let admin = corral.admin_addr;
    println!("corral demo: 3 simulated Ollama servers behind corral on http://{listen}\n");
    for ((name, addr), (_, models, resident)) in fleet.iter().zip(FLEET) {
        println!(
            "  {name:6} http://{addr:<21} models: {} (loaded: {resident})",
            models.join(", ")
        );
    }
    println!(
        "\nTry it:\n  export OLLAMA_HOST={listen}\n  ollama run llama3 'why is the sky blue?'\n  \
         curl http://{listen}/api/chat -d '{{\"model\":\"llama3\",\"messages\":[{{\"role\":\"user\",\"content\":\"hi\"}}]}}'\n  \
         curl http://{listen}/v1/chat/completions -d '{{\"model\":\"mistral\",\"stream\":true,\"messages\":[{{\"role\":\"user\",\"content\":\"hi\"}}]}}'\n\n\
         Every answer carries X-Corral-Backend (curl -i shows it).\n\n\
         Admin API on http://{admin} (and /metrics):\n  corral status{api_flag}\n  corral backends --watch{api_flag}\n\n\
         Ctrl-C stops the demo.\n",
        api_flag = if admin == SocketAddr::from(([127, 0, 0, 1], 11435)) {
            String::new()
        } else {
            format!(" --api-url http://{admin}")
        }
    );
    corral.run_forever()
}
