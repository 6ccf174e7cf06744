//! Everything a simulated box shares across requests, built once from the CLI args.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::{bail, Context};

use super::faults::FaultSwitch;
use super::json_style::JsonStyle;
use super::models::Catalog;
use super::scheduler::{Scheduler, SchedulerConfig};
use super::stats::Stats;
use super::SimArgs;
use crate::model::ModelName;

/// The knobs route handlers read per request.
#[derive(Debug, Clone)]
pub(super) struct SimConfig {
    pub name: String,
    pub version: String,
    pub tokens_per_sec: f64,
    pub prefill_tokens_per_sec: f64,
    pub num_predict: usize,
    pub json_style: JsonStyle,
}

pub(super) struct SimState {
    pub config: SimConfig,
    pub catalog: Catalog,
    pub scheduler: Arc<Scheduler>,
    pub stats: Arc<Stats>,
    pub fault: FaultSwitch,
    /// Ollama only guards `Host` when it listens on loopback.
    pub listens_on_loopback: bool,
    next_id: AtomicU64,
}

fn parse_names(raw: &[String], flag: &str) -> anyhow::Result<Vec<ModelName>> {
    raw.iter()
        .filter(|name| !name.trim().is_empty())
        .map(|name| {
            ModelName::parse(name).with_context(|| format!("--{flag}: invalid model name {name:?}"))
        })
        .collect()
}

impl SimState {
    pub(super) fn new(args: &SimArgs, name: String) -> anyhow::Result<Arc<SimState>> {
        for (flag, rate) in [
            ("tokens-per-sec", args.tokens_per_sec),
            ("prefill-tokens-per-sec", args.prefill_tokens_per_sec),
        ] {
            if !(rate.is_finite() && rate > 0.0) {
                bail!("--{flag} must be a positive number, got {rate}");
            }
        }
        let on_disk = parse_names(&args.models, "models")?;
        let resident = parse_names(&args.resident, "resident")?;
        if let Some(missing) = resident.iter().find(|name| !on_disk.contains(name)) {
            bail!("--resident {missing} is not among --models");
        }
        if resident.len() > args.max_loaded.max(1) {
            bail!(
                "--resident lists {} models but --max-loaded is {}",
                resident.len(),
                args.max_loaded
            );
        }
        let stats = Arc::new(Stats::default());
        let scheduler = Scheduler::new(
            SchedulerConfig {
                parallel: args.parallel,
                max_loaded: args.max_loaded,
                load_time: args.load_time,
            },
            Arc::clone(&stats),
        );
        for model in resident {
            scheduler.preload(model);
        }
        Ok(Arc::new(SimState {
            config: SimConfig {
                name,
                version: args.version.clone(),
                tokens_per_sec: args.tokens_per_sec,
                prefill_tokens_per_sec: args.prefill_tokens_per_sec,
                num_predict: args.num_predict,
                json_style: args.json_style,
            },
            catalog: Catalog::new(on_disk),
            scheduler,
            stats,
            fault: FaultSwitch::new(args.fault),
            listens_on_loopback: args.listen.ip().is_loopback(),
            next_id: AtomicU64::new(1),
        }))
    }

    /// A process-unique number for OpenAI response ids.
    pub(super) fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }
}
