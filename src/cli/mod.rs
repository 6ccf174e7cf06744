//! Client subcommands that talk to a running corral's admin API: `status`, `backends`,
//! `metrics`, `clients` (tables, `--json`, `--watch`), `backend add|remove|drain|undrain`,
//! `serving enable|disable` and `reload`. Each prints one clear line on stderr and exits non-zero
//! when the server is not running, the token is wrong or the backend is unknown.

mod client;
pub(crate) mod render;

pub use client::{AdminClient, CliError};

use std::time::Duration;

use clap::{Args, Subcommand};
use serde_json::{json, Value};

use crate::admin::{BackendView, StatusView};
use crate::clients::ClientsView;
use crate::metrics::MetricsView;

/// Where the admin API is and how to talk to it; accepted after any client subcommand.
#[derive(Args, Debug, Clone)]
pub struct ClientOpts {
    /// Base URL of the admin API.
    #[arg(long, env = "CORRAL_API_URL", default_value = "http://127.0.0.1:11435")]
    pub api_url: String,
    /// Admin token for mutating calls (sent as a bearer token).
    #[arg(long, env = "CORRAL_ADMIN_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Print the API's JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Options of the read-only views.
#[derive(Args, Debug, Clone)]
pub struct ViewArgs {
    #[command(flatten)]
    pub client: ClientOpts,
    /// Redraw every `--interval` seconds until interrupted; a failed poll is shown and
    /// retried at the next interval (SIGHUP redraws at once).
    #[arg(long)]
    pub watch: bool,
    /// Time between redraws with `--watch`: seconds, or a duration such as 500ms.
    #[arg(long, default_value = "2", value_parser = crate::config::parse_duration)]
    pub interval: Duration,
    /// `wide`: every column, cells uncut (tables otherwise fit 80 columns).
    #[arg(short = 'o', long, value_enum)]
    pub output: Option<Output>,
}

/// Table layouts beside the default one.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    Wide,
}

#[derive(Subcommand, Debug)]
pub enum BackendCmd {
    /// Add a backend at run time (kept across restarts), or update one added earlier.
    Add {
        /// A name of your choice (1-64 of A-Z a-z 0-9 - _ .); metrics and logs show it.
        name: String,
        /// The box's address, e.g. http://10.0.0.13:11434.
        url: String,
        /// Its share of requests under `round_robin` (default 1); the other
        /// strategies weigh boxes by free slots instead.
        #[arg(long)]
        weight: Option<u32>,
        /// The box's OLLAMA_NUM_PARALLEL.
        #[arg(long)]
        max_concurrency: Option<usize>,
        /// Registration lease (e.g. 30s): the backend goes away unless `heartbeat`
        /// renews it in time. Needs a cluster.
        #[arg(long)]
        ttl: Option<String>,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Renew a backend's registration lease.
    Heartbeat {
        name: String,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Remove a backend added at run time; its in-flight requests finish.
    Remove {
        name: String,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Stop sending new requests to a backend; in-flight ones finish.
    Drain {
        name: String,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Send requests to a drained backend again.
    Undrain {
        name: String,
        #[command(flatten)]
        client: ClientOpts,
    },
}

#[derive(Subcommand, Debug)]
pub enum ServingCmd {
    /// Take proxied requests again.
    Enable {
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Maintenance mode: /readyz fails and new proxied requests get 503 + Retry-After
    /// while in-flight streams finish.
    Disable {
        #[command(flatten)]
        client: ClientOpts,
    },
}

/// Which read-only view to show.
#[derive(Debug, Clone, Copy)]
pub enum View {
    Status,
    Backends,
    Metrics,
    Clients,
}

/// Shows a view once, or keeps redrawing it with `--watch`. A watch outlives the
/// server it watches: a failed poll (corral restarting, the network) is shown with the
/// time and retried at the next interval instead of ending the dashboard.
pub async fn show(view: View, args: ViewArgs) -> Result<(), CliError> {
    let client = AdminClient::new(&args.client)?;
    let interval = args.interval.max(Duration::from_millis(100));
    let wide = args.output == Some(Output::Wide);
    let json = args.client.json;
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    loop {
        let drawn = render_view(&client, view, json, wide).await;
        if !args.watch {
            println!("{}", drawn?);
            return Ok(());
        }
        match drawn {
            Ok(text) if json => println!("{text}"),
            // Clear the screen and home the cursor, like `watch`.
            Ok(text) => println!("\x1b[2J\x1b[H{text}"),
            // JSON lines stay parseable: the failure goes to stderr.
            Err(e) if json => eprintln!("corral: {e} (retrying every {})", secs(interval)),
            Err(e) => println!(
                "\x1b[2J\x1b[H{} corral: {e}\nretrying every {}; Ctrl-C to stop",
                clock(),
                secs(interval)
            ),
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = recv_hup(&mut hup) => {}
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}

/// A SIGHUP, or never when it cannot be watched.
async fn recv_hup(hup: &mut Option<tokio::signal::unix::Signal>) {
    match hup {
        Some(s) => {
            s.recv().await;
        }
        None => std::future::pending().await,
    }
}

fn secs(d: Duration) -> String {
    humantime::format_duration(Duration::from_millis(d.as_millis() as u64)).to_string()
}

/// The local wall-clock time of day is not worth a time zone crate: UTC, said so.
fn clock() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let (h, m, s) = ((now / 3600) % 24, (now / 60) % 60, now % 60);
    format!("{h:02}:{m:02}:{s:02} UTC")
}

async fn render_view(
    client: &AdminClient,
    view: View,
    json: bool,
    wide: bool,
) -> Result<String, CliError> {
    let path = match view {
        View::Status => "/api/v1/status",
        View::Backends => "/api/v1/backends",
        View::Metrics => "/api/v1/metrics",
        View::Clients => "/api/v1/clients",
    };
    let value = client.get(path).await?;
    if json {
        // One document per line so `--watch --json` output is JSON lines.
        return Ok(value.to_string());
    }
    let bad = |e: serde_json::Error| CliError::Unexpected(format!("{path}: {e}"));
    Ok(match view {
        View::Status => render::status(&serde_json::from_value::<StatusView>(value).map_err(bad)?),
        View::Backends => render::backends(
            &serde_json::from_value::<Vec<BackendView>>(value).map_err(bad)?,
            wide,
        ),
        View::Metrics => render::metrics(
            &serde_json::from_value::<MetricsView>(value).map_err(bad)?,
            wide,
        ),
        View::Clients => render::clients(
            &serde_json::from_value::<ClientsView>(value).map_err(bad)?,
            wide,
        ),
    })
}

/// Runs `corral backend ...`.
pub async fn backend(cmd: BackendCmd) -> Result<(), CliError> {
    let (client_opts, result) = match cmd {
        BackendCmd::Add {
            name,
            url,
            weight,
            max_concurrency,
            ttl,
            client,
        } => {
            let mut body = json!({ "name": name, "url": url });
            if let Some(w) = weight {
                body["weight"] = json!(w);
            }
            if let Some(m) = max_concurrency {
                body["max_concurrency"] = json!(m);
            }
            if let Some(t) = ttl {
                body["ttl"] = json!(t);
            }
            let c = AdminClient::new(&client)?;
            let r = c.post("/api/v1/backends", Some(body)).await;
            (
                client,
                r.map(|v| done(&v, &format!("backend '{name}' added"))),
            )
        }
        BackendCmd::Remove { name, client } => {
            let c = AdminClient::new(&client)?;
            let r = c.delete(&format!("/api/v1/backends/{}", seg(&name))).await;
            let msg = |v: &Value| {
                format!(
                    "backend '{name}' removed ({} in flight finishing)",
                    v["in_flight"].as_u64().unwrap_or(0)
                )
            };
            (client, r.map(|v| done(&v, &msg(&v))))
        }
        BackendCmd::Drain { name, client } => {
            let c = AdminClient::new(&client)?;
            let r = c
                .post(&format!("/api/v1/backends/{}/drain", seg(&name)), None)
                .await;
            let msg = |v: &Value| {
                format!(
                    "backend '{name}' draining ({} in flight finishing)",
                    v["backend"]["in_flight"].as_u64().unwrap_or(0)
                )
            };
            (client, r.map(|v| done(&v, &msg(&v))))
        }
        BackendCmd::Heartbeat { name, client } => {
            let c = AdminClient::new(&client)?;
            let r = c
                .post(&format!("/api/v1/backends/{}/heartbeat", seg(&name)), None)
                .await;
            (
                client,
                r.map(|v| done(&v, &format!("backend '{name}' lease renewed"))),
            )
        }
        BackendCmd::Undrain { name, client } => {
            let c = AdminClient::new(&client)?;
            let r = c
                .post(&format!("/api/v1/backends/{}/undrain", seg(&name)), None)
                .await;
            (
                client,
                r.map(|v| done(&v, &format!("backend '{name}' takes requests again"))),
            )
        }
    };
    print_result(&client_opts, result?);
    Ok(())
}

/// Runs `corral serving enable|disable`.
pub async fn serving(cmd: ServingCmd) -> Result<(), CliError> {
    let (client, on) = match cmd {
        ServingCmd::Enable { client } => (client, true),
        ServingCmd::Disable { client } => (client, false),
    };
    let c = AdminClient::new(&client)?;
    let path = if on {
        "/api/v1/serving/enable"
    } else {
        "/api/v1/serving/disable"
    };
    let v = c.post(path, None).await?;
    let msg = if on {
        "serving enabled"
    } else {
        "serving disabled: /readyz fails and new requests get 503 until `corral serving enable`"
    };
    print_result(&client, done(&v, msg));
    Ok(())
}

/// Runs `corral reload`: the server re-reads its config file now, as on SIGHUP.
pub async fn reload(opts: ClientOpts) -> Result<(), CliError> {
    let c = AdminClient::new(&opts)?;
    let v = c.post("/api/v1/reload", None).await.map_err(|e| match e {
        // The file's own `FILE:line:col: message`, and what it means for the server.
        CliError::Api(msg) => {
            CliError::Api(format!("{msg} (not applied: the running config stays)"))
        }
        other => other,
    })?;
    let backends = v["backends"].as_u64().unwrap_or(0);
    let mut line = format!(
        "config reloaded from {} ({backends} backend{})",
        v["file"].as_str().unwrap_or("the config file"),
        if backends == 1 { "" } else { "s" }
    );
    let pending: Vec<&str> = v["restart_needed"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if !pending.is_empty() {
        line.push_str(&format!(
            "; restart needed to apply: {}",
            pending.join(", ")
        ));
    }
    print_result(&opts, Done { json: v, line });
    Ok(())
}

/// A result: the API's JSON and the line a human reads.
struct Done {
    json: Value,
    line: String,
}

fn done(v: &Value, line: &str) -> Done {
    let mut line = line.to_string();
    if v["persisted"] == json!(false) {
        line.push_str(" (not persisted: no state_dir configured)");
    }
    Done {
        json: v.clone(),
        line,
    }
}

fn print_result(opts: &ClientOpts, d: Done) {
    if opts.json {
        println!("{}", d.json);
    } else {
        println!("{}", d.line);
    }
}

/// A backend name as one URL path segment.
fn seg(name: &str) -> String {
    name.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
