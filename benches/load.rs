//! Load benchmark: what a request and a streamed chunk cost through corral, next to
//! the engine's own floor (a bare Pingora proxy of the same version, with Pingora's
//! defaults and tuned with corral's allocator and runtime settings), nginx and HAProxy, all with two workers in front of one fast Ollama-shaped backend, plus
//! direct (no proxy). Systems are interleaved within each round; the tables give the
//! medians of the rounds. Non-streaming: wrk, one thread, `POST /api/chat` at 16, 64
//! and 256 connections — rps, p50/p99/p99.9, CPU seconds per 10k requests, peak RSS.
//! Streaming: 2,000 concurrent NDJSON streams at 10 chunks/s each — per-chunk delay, added
//! p99 over direct, CPU per 100k chunks, RSS. Writes `target/bench-results/load.json`.
//!
//! `make bench-load` (`QUICK=1` for the smoke run), or
//! `cargo build --release --example bare_pingora --example bare_pingora_mimalloc &&
//! cargo bench --bench load --
//! [--quick] [--only ID,ID] [--conns N,N] [--secs S] [--streams N] [--stream-secs S]
//! [--chunk-rate N] [--rounds N] [--skip requests|streams]`.

#[path = "load/backends.rs"]
mod backends;
#[path = "load/cli.rs"]
mod cli;
#[path = "load/configs.rs"]
mod configs;
#[path = "common/process.rs"]
mod process;
#[path = "load/procfs.rs"]
mod procfs;
#[path = "load/report.rs"]
mod report;
#[path = "load/stream_client.rs"]
mod stream_client;
#[path = "load/stream_server.rs"]
mod stream_server;
#[path = "load/systems.rs"]
mod systems;
#[path = "load/tools.rs"]
mod tools;
#[path = "load/wrk.rs"]
mod wrk;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use serde::Serialize;

use cli::Options;
use report::{LevelRun, RequestsRun, StreamsRun, Summary};
use stream_client::StreamPlan;
use systems::System;
use tools::{Tools, Versions};

const CORRAL: &str = env!("CARGO_BIN_EXE_corral");

/// Token chunks per stream, then the final chunk.
const CHUNKS_PER_STREAM: u32 = 40;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("stream-backend") {
        std::process::exit(stream_server::main(&args[1..]));
    }
    // `cargo test --all-targets` runs bench binaries without `--bench`; a benchmark of
    // many minutes has no place there.
    if !args.iter().any(|a| a == "--bench") {
        println!("load: run with `make bench-load` or `cargo bench --bench load`");
        return;
    }
    let options = match Options::parse(&args) {
        Ok(options) => options,
        Err(e) => {
            eprintln!("load: {e}");
            std::process::exit(2);
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("build the tokio runtime");
    let code = runtime.block_on(bench(options));
    drop(runtime);
    std::process::exit(code);
}

#[derive(Serialize)]
struct JsonReport<'a> {
    benchmark: &'static str,
    quick: bool,
    rounds: usize,
    conns: &'a [usize],
    secs_per_level: f64,
    warmup_secs: f64,
    streams: usize,
    stream_secs: f64,
    chunks_per_stream: u32,
    chunk_rate: usize,
    workers: usize,
    fd_limit: u64,
    versions: &'a Versions,
    total_wall_s: f64,
    medians: &'a [Summary],
    requests: &'a [RequestsRun],
    streaming: &'a [StreamsRun],
}

async fn bench(options: Options) -> i32 {
    let started = Instant::now();
    let fd_limit = match procfs::raise_fd_limit() {
        Ok(limit) => limit,
        Err(e) => {
            eprintln!("load: {e}");
            return 2;
        }
    };
    // A proxy holds two descriptors per stream; HAProxy and nginx reserve more.
    let needed = 2 * options.streams as u64 + 512;
    if options.streaming && fd_limit < needed {
        eprintln!(
            "load: {} streams need an open-file limit of about {needed}, this one is \
             {fd_limit} (raise `ulimit -Hn` or pass --streams)",
            options.streams
        );
        return 2;
    }
    let tools = Tools::discover(CORRAL);
    let versions = tools.versions();
    print_versions(&versions, fd_limit);
    let (nginx, wrk) = if options.requests {
        match (tools.nginx.clone(), tools.wrk.clone()) {
            (Some(nginx), Some(wrk)) => (Some(nginx), Some(wrk)),
            _ => {
                eprintln!(
                    "load: the non-streaming part needs nginx (the backend) and wrk; \
                     `make bench-load` installs them"
                );
                return 2;
            }
        }
    } else {
        (None, None)
    };
    run(
        options,
        &tools,
        &versions,
        nginx.as_deref(),
        wrk.as_deref(),
        fd_limit,
        started,
    )
    .await
}

fn print_versions(v: &Versions, fd_limit: u64) {
    let or_missing = |o: &Option<String>| o.clone().unwrap_or_else(|| "not installed".into());
    eprintln!("corral:  {}", v.corral);
    eprintln!("pingora: {} (corral and both bare Pingoras)", v.pingora);
    eprintln!("nginx:   {}", or_missing(&v.nginx));
    eprintln!("haproxy: {}", or_missing(&v.haproxy));
    eprintln!("wrk:     {}", or_missing(&v.wrk));
    eprintln!(
        "kernel {}, {} CPUs, open-file limit {fd_limit}, load average {}",
        v.kernel.as_deref().unwrap_or("?"),
        v.cpus,
        procfs::load_average().map_or("?".into(), |l| format!("{l:.2}"))
    );
}

/// Why `system` cannot run here, if it cannot.
fn missing(system: System, tools: &Tools) -> Option<&'static str> {
    match system {
        System::BarePingora if tools.bare_pingora.is_none() => Some(
            "examples/bare_pingora is not built (cargo build --release --example bare_pingora)",
        ),
        System::BareTuned if tools.bare_pingora_mimalloc.is_none() => Some(
            "examples/bare_pingora_mimalloc is not built (cargo build --release --example \
             bare_pingora_mimalloc)",
        ),
        System::Nginx if tools.nginx.is_none() => Some("nginx is not installed"),
        System::Haproxy if tools.haproxy.is_none() => Some("haproxy is not installed"),
        _ => None,
    }
}

async fn run(
    options: Options,
    tools: &Tools,
    versions: &Versions,
    nginx: Option<&Path>,
    wrk: Option<&Path>,
    fd_limit: u64,
    started: Instant,
) -> i32 {
    let systems: Vec<System> = options
        .systems
        .iter()
        .copied()
        .filter(|&s| match missing(s, tools) {
            Some(why) => {
                eprintln!("load: {} skipped: {why}", s.id());
                false
            }
            None => true,
        })
        .collect();
    let canned = match nginx.map(backends::start_canned_nginx).transpose() {
        Ok(b) => b,
        Err(e) => {
            eprintln!("load: the canned-JSON backend did not start: {e}");
            return 1;
        }
    };
    let streamer = if options.streaming {
        match backends::start_stream_server(CHUNKS_PER_STREAM, chunk_interval(&options)) {
            Ok(b) => Some(b),
            Err(e) => {
                eprintln!("load: the stream backend did not start: {e}");
                return 1;
            }
        }
    } else {
        None
    };
    let scratch = match tempfile::tempdir() {
        Ok(d) => d,
        Err(e) => {
            eprintln!("load: tempdir: {e}");
            return 1;
        }
    };
    let script = scratch.path().join("chat.lua");
    if let Err(e) = std::fs::write(&script, wrk::script()) {
        eprintln!("load: write {}: {e}", script.display());
        return 1;
    }
    let client = match reqwest::Client::builder().no_proxy().build() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("load: HTTP client: {e}");
            return 1;
        }
    };
    let mut requests = Vec::new();
    let mut streaming = Vec::new();
    for round in 1..=options.rounds {
        if let (Some(wrk), Some(canned)) = (wrk, &canned) {
            for &system in &systems {
                let run = requests_run(
                    system,
                    round,
                    canned.addr,
                    tools,
                    wrk,
                    &script,
                    &options,
                    &client,
                )
                .await;
                requests.push(run);
            }
        }
        if let Some(streamer) = &streamer {
            for &system in &systems {
                let run = streams_run(system, round, streamer.addr, tools, &options, &client).await;
                streaming.push(run);
            }
        }
    }
    let summaries = report::summarize(&systems, &options.conns, &requests, &streaming);
    println!();
    println!(
        "Medians of {} round(s); wrk 1 thread, {} s per level after {} s warm-up; every \
         proxy {} workers.",
        options.rounds,
        options.duration.as_secs(),
        options.warmup.as_secs(),
        systems::WORKERS
    );
    println!();
    if wrk.is_some() {
        println!("{}", report::requests_markdown(&summaries, &options.conns));
    }
    if streamer.is_some() {
        println!(
            "Streaming: {CHUNKS_PER_STREAM} chunks per stream at {} chunks/s ({} chunks/s \
             offered in all), {} s measured.",
            options.chunk_rate,
            options.chunk_rate * options.streams,
            options.stream_duration.as_secs()
        );
        println!();
        println!(
            "{}",
            report::streams_markdown(&summaries, options.chunk_rate * options.streams)
        );
    }
    println!(
        "Goals (issue 11), corral default against bare Pingora twice: with Pingora's \
         defaults, and tuned with corral's own settings ({}):",
        report::TUNED
    );
    println!();
    println!("{}", report::goals_markdown(&summaries));
    let settings = report::pingora_settings_lines(&summaries);
    if !settings.is_empty() {
        println!("Pingora settings (bare Pingora, defaults → tuned):");
        println!();
        for line in &settings {
            println!("- {line}");
        }
        println!();
    }
    for s in &summaries {
        for e in &s.errors {
            println!("{}: {e}", s.system);
        }
    }
    let total_wall_s = started.elapsed().as_secs_f64();
    let json = JsonReport {
        benchmark: "load",
        quick: options.quick,
        rounds: options.rounds,
        conns: &options.conns,
        secs_per_level: options.duration.as_secs_f64(),
        warmup_secs: options.warmup.as_secs_f64(),
        streams: options.streams,
        stream_secs: options.stream_duration.as_secs_f64(),
        chunks_per_stream: CHUNKS_PER_STREAM,
        chunk_rate: options.chunk_rate,
        workers: systems::WORKERS,
        fd_limit,
        versions,
        total_wall_s,
        medians: &summaries,
        requests: &requests,
        streaming: &streaming,
    };
    let path = process::results_dir().join("load.json");
    let written = std::fs::create_dir_all(process::results_dir())
        .map_err(|e| e.to_string())
        .and_then(|()| serde_json::to_vec_pretty(&json).map_err(|e| e.to_string()))
        .and_then(|bytes| std::fs::write(&path, bytes).map_err(|e| e.to_string()));
    match written {
        Ok(()) => println!(
            "Raw numbers: {} (total {total_wall_s:.0} s)",
            path.display()
        ),
        Err(e) => {
            eprintln!("load: write {}: {e}", path.display());
            return 1;
        }
    }
    // A system that could not be measured is a broken benchmark, not a result.
    let broken =
        requests.iter().any(|r| r.error.is_some()) || streaming.iter().any(|r| r.error.is_some());
    i32::from(broken)
}

fn chunk_interval(options: &Options) -> Duration {
    Duration::from_secs_f64(1.0 / options.chunk_rate as f64)
}

#[allow(clippy::too_many_arguments)]
async fn requests_run(
    system: System,
    round: usize,
    backend: SocketAddr,
    tools: &Tools,
    wrk: &Path,
    script: &Path,
    options: &Options,
    client: &reqwest::Client,
) -> RequestsRun {
    let mut run = RequestsRun {
        system: system.id(),
        round,
        load_average: procfs::load_average(),
        idle_rss_mib: None,
        levels: Vec::new(),
        error: None,
    };
    let mut running = match systems::start(system, backend, tools, client).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("round {round} {}: did not start: {e}", system.id());
            run.error = Some(format!("start: {e}"));
            return run;
        }
    };
    let pid = running.pid();
    run.idle_rss_mib = pid.map(|p| procfs::memory(p).rss_mib);
    for &conns in &options.conns {
        let measured = async {
            wrk::run(wrk, script, running.addr, conns, options.warmup).await?;
            let before = pid.map(procfs::cpu_seconds);
            let result = wrk::run(wrk, script, running.addr, conns, options.duration).await?;
            let cpu_s = pid.map(procfs::cpu_seconds).zip(before).map(|(a, b)| a - b);
            Ok::<_, String>(LevelRun {
                conns,
                wrk: result,
                cpu_s,
                cpu_s_per_10k: cpu_s
                    .filter(|_| result.requests > 0)
                    .map(|c| c / result.requests as f64 * 1e4),
                peak_rss_mib: pid.map(|p| procfs::memory(p).peak_mib),
            })
        }
        .await;
        match measured {
            Ok(level) => {
                eprintln!(
                    "round {round} {:<12} c={conns:<4} {:>8.0} rps  p50 {:.3} p99 {:.3} p99.9 \
                     {:.3} ms  CPU {} s/10k  errors {}",
                    system.id(),
                    level.wrk.rps,
                    level.wrk.p50_ms,
                    level.wrk.p99_ms,
                    level.wrk.p999_ms,
                    level
                        .cpu_s_per_10k
                        .map_or("—".into(), |c| format!("{c:.3}")),
                    level.wrk.errors
                );
                run.levels.push(level);
            }
            Err(e) => {
                eprintln!("round {round} {} c={conns}: {e}", system.id());
                run.error = Some(e);
                break;
            }
        }
        if let Err(e) = running.check_alive() {
            run.error = Some(e);
            break;
        }
    }
    run
}

async fn streams_run(
    system: System,
    round: usize,
    backend: SocketAddr,
    tools: &Tools,
    options: &Options,
    client: &reqwest::Client,
) -> StreamsRun {
    let mut run = StreamsRun {
        system: system.id(),
        round,
        load_average: procfs::load_average(),
        result: None,
        error: None,
    };
    let mut running = match systems::start(system, backend, tools, client).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("round {round} {} streams: did not start: {e}", system.id());
            run.error = Some(format!("start: {e}"));
            return run;
        }
    };
    let plan = StreamPlan {
        streams: options.streams,
        lifetime: chunk_interval(options) * CHUNKS_PER_STREAM,
        measure: options.stream_duration,
    };
    match stream_client::run(running.addr, &plan, running.pid()).await {
        Ok(result) => {
            eprintln!(
                "round {round} {:<12} {} streams: {} chunks, delay p50 {:.3} p99 {:.3} p99.9 \
                 {:.3} ms, CPU {} s/100k chunks, RSS {} MiB, {} failed",
                system.id(),
                result.streams,
                result.chunks,
                result.chunk_p50_ms,
                result.chunk_p99_ms,
                result.chunk_p999_ms,
                result
                    .cpu_s_per_100k_chunks
                    .map_or("—".into(), |c| format!("{c:.3}")),
                result.rss_mib.map_or("—".into(), |r| format!("{r:.1}")),
                result.failed_streams
            );
            run.result = Some(result);
        }
        Err(e) => {
            eprintln!("round {round} {} streams: {e}", system.id());
            run.error = Some(e);
        }
    }
    if let Err(e) = running.check_alive() {
        run.error = Some(e);
    }
    run
}
