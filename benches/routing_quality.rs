//! Routing-quality benchmark: a matrix of scenarios (`routing/scenarios.rs`), each a
//! fleet of simulated Ollama boxes and a seeded multi-turn chat workload, played
//! through five front-ends — corral `affinity`, `least_loaded`, `round_robin`, nginx
//! `least_conn` and nginx consistent hashing on a session header — each in front of a
//! fresh fleet. Prints markdown tables (legend, results, the goal check per scenario)
//! and writes the raw numbers to `target/bench-results/routing_quality.json`.
//!
//! `make bench-routing` (`QUICK=1` for the smoke run), or
//! `cargo bench --bench routing_quality -- [--quick] [--scenario ID,ID] [--only ID,ID]
//! [--seed N]`.

#[path = "routing/cli.rs"]
mod cli;
#[path = "routing/fleet.rs"]
mod fleet;
#[path = "routing/frontends.rs"]
mod frontends;
#[path = "routing/goals.rs"]
mod goals;
#[path = "routing/placement.rs"]
mod placement;
#[path = "routing/player.rs"]
mod player;
#[path = "common/process.rs"]
mod process;
#[path = "routing/report.rs"]
mod report;
#[path = "routing/scenarios.rs"]
mod scenarios;
#[path = "routing/workload.rs"]
mod workload;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Serialize;

use cli::Options;
use fleet::{Fleet, FleetSpec};
use frontends::{FrontEndSpec, Kind};
use report::{BoxReport, FrontEndReport, ScenarioReport};
use scenarios::Scenario;
use workload::{Session, WorkloadSpec};

const CORRAL: &str = env!("CARGO_BIN_EXE_corral");

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // `cargo test --all-targets` runs bench binaries without `--bench`; a benchmark of
    // many minutes has no place there.
    if !args.iter().any(|a| a == "--bench") {
        println!("routing_quality: run with `cargo bench --bench routing_quality`");
        return;
    }
    let ids: Vec<&str> = scenarios::all(0).iter().map(|s| s.id).collect();
    let options = match Options::parse(&args, &ids) {
        Ok(options) => options,
        Err(e) => {
            eprintln!("routing_quality: {e}");
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

/// What one front-end's measurement needs, shared by all of them in a scenario.
struct Context<'a> {
    fleet: &'a FleetSpec,
    workload: &'a WorkloadSpec,
    sessions: &'a [Session],
    corral: PathBuf,
    nginx: Option<PathBuf>,
}

#[derive(Serialize)]
struct JsonReport<'a> {
    benchmark: &'static str,
    quick: bool,
    seed: u64,
    nginx: Option<String>,
    total_wall_s: f64,
    scenarios: &'a [ScenarioReport],
}

/// The scenarios to run: those named, else the quick ones for a smoke run, else all;
/// shrunk for a smoke run and resized by `--sessions` / `--turns`.
fn select_scenarios(options: &Options) -> Vec<Scenario> {
    scenarios::all(options.seed)
        .into_iter()
        .filter(|s| match &options.scenarios {
            Some(ids) => ids.iter().any(|id| id == s.id),
            None => !options.quick || s.quick,
        })
        .map(|s| if options.quick { s.quick() } else { s })
        .map(|mut s| {
            s.workload.sessions = options.sessions.unwrap_or(s.workload.sessions);
            s.workload.turns = options.turns.unwrap_or(s.workload.turns);
            s
        })
        .collect()
}

async fn bench(options: Options) -> i32 {
    let started = Instant::now();
    let nginx = process::find_program("nginx", "NGINX");
    if nginx.is_none() {
        eprintln!(
            "routing_quality: nginx not found ($NGINX, PATH, /usr/sbin/nginx): the nginx rows \
             are skipped. `make bench-routing` installs it."
        );
    }
    let corral = PathBuf::from(CORRAL);
    let frontends: Vec<&FrontEndSpec> = frontends::ALL
        .iter()
        .filter(|f| {
            options
                .only
                .as_ref()
                .is_none_or(|ids| ids.iter().any(|id| id == f.id))
        })
        .collect();
    let selected = select_scenarios(&options);
    let total = selected.len();
    let mut reports = Vec::new();
    for (index, scenario) in selected.into_iter().enumerate() {
        eprintln!(
            "== scenario {}/{total}: {} — {}",
            index + 1,
            scenario.id,
            scenario.about
        );
        let report = run_scenario(scenario, &frontends, &corral, nginx.as_deref()).await;
        reports.push(report);
    }

    println!();
    println!("{}", report::legend_markdown(&reports));
    println!("{}", report::results_markdown(&reports));
    println!("Goals: corral `affinity` against nginx `least_conn` in each scenario.");
    println!();
    println!("{}", goals::markdown(&reports));
    let total_wall_s = started.elapsed().as_secs_f64();
    let json = JsonReport {
        benchmark: "routing_quality",
        quick: options.quick,
        seed: options.seed,
        nginx: nginx.as_ref().map(|p| p.display().to_string()),
        total_wall_s,
        scenarios: &reports,
    };
    let path = process::results_dir().join("routing_quality.json");
    match report::write_json(&path, &json) {
        Ok(()) => println!(
            "Raw numbers: {} (total {total_wall_s:.0} s)",
            path.display()
        ),
        Err(e) => {
            eprintln!("routing_quality: {e}");
            return 1;
        }
    }
    // A front-end that could not be set up is a broken benchmark, not a result.
    let broken = reports
        .iter()
        .flat_map(|s| &s.results)
        .any(|r| r.status == "error");
    i32::from(broken)
}

async fn run_scenario(
    scenario: Scenario,
    frontends: &[&FrontEndSpec],
    corral: &Path,
    nginx: Option<&Path>,
) -> ScenarioReport {
    let sessions = workload::plan(&scenario.workload, &scenario.fleet.models);
    let mut report = ScenarioReport {
        id: scenario.id,
        about: scenario.about,
        status: "measured",
        note: None,
        layout: scenario.layout(),
        load_floor: load_floor(&scenario.fleet, &sessions),
        workload_fingerprint: workload::fingerprint(&sessions),
        fleet: scenario.fleet.clone(),
        workload: scenario.workload.clone(),
        goals: None,
        results: Vec::new(),
    };
    if let Some(flag) = scenario.needs_sim_flag {
        let why = match fleet::sim_accepts(corral, flag) {
            Ok(true) => None,
            Ok(false) => Some(format!("this `corral sim` has no {flag}")),
            Err(e) => Some(e),
        };
        if let Some(why) = why {
            eprintln!("   skipped: {why}");
            report.status = "skipped";
            report.note = Some(why);
            return report;
        }
    }
    describe(&scenario, &sessions);
    let ctx = Context {
        fleet: &scenario.fleet,
        workload: &scenario.workload,
        sessions: &sessions,
        corral: corral.to_path_buf(),
        nginx: nginx.map(Path::to_path_buf),
    };
    for (index, spec) in frontends.iter().enumerate() {
        eprintln!("   [{}/{}] {} ...", index + 1, frontends.len(), spec.label);
        let result = measure(spec, &ctx).await;
        match result.status {
            "measured" => eprintln!(
                "         {} of {} turns ok in {:.1} s; TTFT mean {} p90 {}; {} loads{}",
                result.ok,
                result.planned,
                result.wall_s,
                report::secs(result.ttft_mean_ms),
                report::secs(result.ttft_p90_ms),
                result.cold_loads,
                result
                    .note
                    .as_ref()
                    .map(|n| format!(" ({n})"))
                    .unwrap_or_default()
            ),
            status => eprintln!(
                "         {status}: {}",
                result.note.as_deref().unwrap_or_default()
            ),
        }
        report.results.push(result);
    }
    report.goals = Some(goals::check(&report.results));
    report
}

/// Models the sessions ask for that no box holds at start: each costs at least one
/// load whatever the router does.
fn load_floor(fleet: &FleetSpec, sessions: &[Session]) -> usize {
    let resident: BTreeSet<&str> = (0..fleet.boxes.len())
        .flat_map(|i| fleet.resident_names(i))
        .collect();
    sessions
        .iter()
        .map(|s| s.model.as_str())
        .collect::<BTreeSet<_>>()
        .difference(&resident)
        .count()
}

fn describe(scenario: &Scenario, sessions: &[Session]) {
    let f = &scenario.fleet;
    let w = &scenario.workload;
    eprintln!(
        "   boxes {} (start {:?}; max-loaded {}, load {}, prefill {} tok/s, {} tok/s, {} \
         tokens/reply, JSON {:?}); {} sessions x {} turns, arrivals {:?}, think {:?} ms, \
         models {:?} at {:?} % (sessions per model {:?}), seed {}, workload {}",
        scenario.layout(),
        scenario.start,
        f.max_loaded,
        f.load_time,
        f.prefill_tokens_per_sec,
        f.tokens_per_sec,
        f.num_predict,
        f.json_style,
        w.sessions,
        w.turns,
        w.arrivals,
        w.think_ms,
        f.models,
        w.popularity,
        f.models
            .iter()
            .map(|m| sessions.iter().filter(|s| &s.model == m).count())
            .collect::<Vec<_>>(),
        w.seed,
        workload::fingerprint(sessions),
    );
}

async fn measure(spec: &FrontEndSpec, ctx: &Context<'_>) -> FrontEndReport {
    let planned = ctx.workload.planned_requests();
    let needs_nginx = matches!(spec.kind, Kind::NginxLeastConn | Kind::NginxHash);
    if needs_nginx && ctx.nginx.is_none() {
        return FrontEndReport::unmeasured(spec, "skipped", "nginx not installed".into(), planned);
    }
    match try_measure(spec, ctx).await {
        Ok(report) => report,
        Err(e) => FrontEndReport::unmeasured(spec, "error", e, planned),
    }
}

async fn try_measure(spec: &FrontEndSpec, ctx: &Context<'_>) -> Result<FrontEndReport, String> {
    let logs = tempfile::tempdir().map_err(|e| format!("tempdir: {e}"))?;
    // A fresh client per front-end: no pooled connection outlives its proxy.
    let client = reqwest::Client::builder()
        .no_proxy()
        .tcp_nodelay(true)
        .build()
        .map_err(|e| format!("HTTP client: {e}"))?;
    let fleet = Fleet::start(ctx.fleet, &ctx.corral, logs.path())?;
    let mut front = frontends::start(
        spec,
        &fleet,
        ctx.fleet,
        &ctx.corral,
        ctx.nginx.as_deref(),
        &client,
    )
    .await?;
    let before = fleet.stats(&client).await?;
    let run = player::run(&front.url, ctx.sessions, ctx.workload, &client).await;
    let mut notes = Vec::new();
    if let Err(e) = front.check_alive() {
        notes.push(format!("front-end died during the run: {e}"));
    }
    // Cancelled turns (deadline) must settle before the counters are read.
    if let Err(e) = fleet.wait_idle(&client, Duration::from_secs(15)).await {
        notes.push(e);
    }
    let after = fleet.stats(&client).await?;
    let boxes = fleet
        .sims
        .iter()
        .zip(after.iter().zip(&before))
        .map(|(sim, (after, before))| BoxReport {
            name: sim.name.clone(),
            during_run: after.since(before),
        })
        .collect();
    let note = (!notes.is_empty()).then(|| notes.join("; "));
    Ok(FrontEndReport::measured(
        spec,
        ctx.workload.planned_requests(),
        run,
        boxes,
        note,
    ))
}
