//! The `corral` command line: parse and dispatch, nothing else.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

use corral::config::{Config, ConfigError};

/// glibc's malloc serialises corral's worker threads on its arena locks (futex waits
/// in the request-path profile); mimalloc's thread-local heaps do not.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Where transparent huge pages are on ("always", Debian's default), they back
/// mimalloc's arenas with 2 MiB pages: idle RSS doubled (8 → 15 MiB for a bare Pingora
/// proxy) and RSS after a burst of 256 connections went from 25 to 47 MiB. A proxy
/// gains nothing from huge pages, so corral opts out for itself (and what it spawns).
fn opt_out_of_huge_pages() {
    #[cfg(target_os = "linux")]
    // SAFETY: PR_SET_THP_DISABLE takes plain integers and touches no memory of ours.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
}

/// Rust ignores SIGPIPE, so `println!` into a closed pipe (`corral metrics | head -1`)
/// panics with "failed printing to stdout". A command that only prints should end
/// quietly instead, as other Unix tools do. Sockets are unaffected (Rust sends with
/// `MSG_NOSIGNAL`); the servers keep ignoring it all the same.
fn die_quietly_on_closed_stdout() {
    #[cfg(unix)]
    // SAFETY: restoring a signal's default disposition touches no memory of ours.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

#[derive(Parser)]
#[command(
    name = "corral",
    version,
    about = "One Ollama endpoint in front of many Ollama servers"
)]
struct Cli {
    /// Log as JSON lines instead of text.
    #[arg(long, global = true, env = "CORRAL_LOG_JSON", value_parser = clap::builder::BoolishValueParser::new())]
    log_json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy.
    Serve {
        /// The YAML config file (conf/corral.yaml is a commented example); corral
        /// reloads it when it changes, on SIGHUP and on `corral reload`.
        #[arg(short, long)]
        config: PathBuf,
        /// Take the listening sockets over from the corral running with this config
        /// (zero-downtime upgrade): start this, then send the old process SIGQUIT. It
        /// finishes what is in flight and exits. (SIGUSR2 to the old process does both.)
        #[arg(long)]
        upgrade: bool,
    },
    /// Validate a config file and exit: what `serve` would refuse, as FILE:line:col.
    Check {
        /// The YAML config file to check.
        #[arg(short, long)]
        config: PathBuf,
    },
    /// Run one simulated Ollama server.
    Sim(corral::sim::SimArgs),
    /// Show this replica's status (admin API).
    Status(corral::cli::ViewArgs),
    /// List the backends with health, drain state and in-flight requests.
    Backends(corral::cli::ViewArgs),
    /// Requests, time to first token and tokens per backend and model.
    Metrics(corral::cli::ViewArgs),
    /// Client keys: requests, tokens, in flight and what their limits have left.
    Clients(corral::cli::ViewArgs),
    /// Add, remove, drain, undrain or heartbeat a backend at run time.
    #[command(subcommand)]
    Backend(corral::cli::BackendCmd),
    /// Maintenance mode of this replica.
    #[command(subcommand)]
    Serving(corral::cli::ServingCmd),
    /// Re-read the running server's config file now (SIGHUP without the PID).
    ///
    /// Prints what was applied, or the file's FILE:line:col error, in which case the
    /// running config stays.
    Reload(corral::cli::ClientOpts),
    /// The replicated pool's Raft group: status, peers, add-peer, remove-peer.
    #[command(subcommand)]
    Cluster(corral::cluster::cli::ClusterCmd),
    /// Run three simulated Ollama servers behind corral, in one process.
    Demo(corral::demo::DemoArgs),
}

fn main() -> ExitCode {
    opt_out_of_huge_pages();
    let cli = Cli::parse();
    corral::logging::init(cli.log_json);
    if !matches!(
        cli.command,
        Command::Serve { .. } | Command::Sim(_) | Command::Demo(_)
    ) {
        die_quietly_on_closed_stdout();
    }
    let result = match cli.command {
        Command::Serve { config, upgrade } => serve(&config, upgrade),
        Command::Check { config } => check(&config),
        Command::Sim(args) => run_async(corral::sim::run(args)),
        Command::Demo(args) => corral::demo::run(args),
        Command::Status(a) => client(corral::cli::show(corral::cli::View::Status, a)),
        Command::Backends(a) => client(corral::cli::show(corral::cli::View::Backends, a)),
        Command::Metrics(a) => client(corral::cli::show(corral::cli::View::Metrics, a)),
        Command::Clients(a) => client(corral::cli::show(corral::cli::View::Clients, a)),
        Command::Backend(cmd) => client(corral::cli::backend(cmd)),
        Command::Serving(cmd) => client(corral::cli::serving(cmd)),
        Command::Reload(opts) => client(corral::cli::reload(opts)),
        Command::Cluster(cmd) => client(corral::cluster::cli::run(cmd)),
    };
    corral::logging::flush();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("corral: {}", one_line(&e));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes on one line, each cause once: thiserror messages often
/// embed their source already (`{path}: {source}`).
fn one_line(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.ends_with(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

fn serve(path: &std::path::Path, upgrade: bool) -> anyhow::Result<()> {
    // The file is judged before the old process is asked for anything.
    let prepared = prepare(path)?;
    let inherited = if upgrade {
        let config = prepared.pool.yaml_config();
        let sock = corral::upgrade::socket_path(&config, Some(path));
        Some(corral::upgrade::receive(&sock)?)
    } else {
        None
    };
    let launch = corral::server::Launch {
        config_path: Some(path.to_path_buf()),
        inherited,
    };
    corral::server::build_from(prepared, launch)?.run_forever()
}

/// Refuses exactly what `serve` refuses before it binds a socket.
fn check(path: &std::path::Path) -> anyhow::Result<()> {
    let prepared = prepare(path)?;
    let config = prepared.pool.yaml_config();
    println!(
        "{}: ok ({} backend{}, strategy {})",
        path.display(),
        config.backends.len(),
        if config.backends.len() == 1 { "" } else { "s" },
        config.routing.strategy.as_str()
    );
    Ok(())
}

/// The file loaded and judged as `serve` and `check` both do; errors past the parser's
/// own `file:line:col` ones name the file.
fn prepare(path: &std::path::Path) -> anyhow::Result<corral::startup::Prepared> {
    let config = Config::load(path).map_err(|e| match &e {
        ConfigError::Read { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
            anyhow::anyhow!(
                "{e}; give the path of your config file with -c (conf/corral.yaml in the \
                 source tree is a commented example)"
            )
        }
        _ => e.into(),
    })?;
    corral::startup::prepare(config).with_context(|| path.display().to_string())
}

/// Runs a client subcommand; its error is already the one line to print.
fn client(
    fut: impl std::future::Future<Output = Result<(), corral::cli::CliError>>,
) -> anyhow::Result<()> {
    run_async(async {
        corral::hangup::ignore("the client commands have no config to reload");
        fut.await.map_err(anyhow::Error::from)
    })
}

fn run_async(fut: impl std::future::Future<Output = anyhow::Result<()>>) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(fut)
}
