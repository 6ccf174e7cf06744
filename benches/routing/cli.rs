//! The benchmark's command line: which scenarios and front-ends to run, the seed, the
//! smoke-run switch and overrides of the workload's size.

use crate::frontends;

pub const USAGE: &str = "cargo bench --bench routing_quality -- [--quick] \
    [--scenario ID,ID] [--only FRONTEND,FRONTEND] [--seed N] [--sessions N] [--turns N]";

pub struct Options {
    pub quick: bool,
    /// Scenario ids; `None` runs the matrix (or its quick part).
    pub scenarios: Option<Vec<String>>,
    /// Front-end ids; `None` runs all five.
    pub only: Option<Vec<String>>,
    pub seed: u64,
    /// Overrides of every selected scenario's workload size, for exploring regimes.
    pub sessions: Option<usize>,
    pub turns: Option<usize>,
}

impl Options {
    /// `scenario_ids` are the known scenarios, to reject a typo before minutes of work.
    pub fn parse(args: &[String], scenario_ids: &[&str]) -> Result<Options, String> {
        let mut options = Options {
            quick: std::env::var("ROUTING_QUALITY_QUICK").is_ok_and(|v| !v.is_empty() && v != "0"),
            scenarios: None,
            only: None,
            seed: 0x00c0_77a1,
            sessions: None,
            turns: None,
        };
        let frontend_ids: Vec<&str> = frontends::ALL.iter().map(|f| f.id).collect();
        let mut args = args.iter();
        while let Some(arg) = args.next() {
            let mut value = |flag: &str| {
                args.next()
                    .cloned()
                    .ok_or_else(|| format!("{flag} needs a value"))
            };
            match arg.as_str() {
                "--bench" => {}
                "--quick" => options.quick = true,
                "--only" => options.only = Some(ids("--only", &value(arg)?, &frontend_ids)?),
                "--scenario" => {
                    options.scenarios = Some(ids("--scenario", &value(arg)?, scenario_ids)?)
                }
                "--sessions" | "--turns" => {
                    let raw = value(arg)?;
                    let n: usize = raw.parse().map_err(|e| format!("{arg} {raw:?}: {e}"))?;
                    if n == 0 {
                        return Err(format!("{arg} must be at least 1"));
                    }
                    if arg == "--sessions" {
                        options.sessions = Some(n);
                    } else {
                        options.turns = Some(n);
                    }
                }
                "--seed" => {
                    let raw = value(arg)?;
                    options.seed = raw.parse().map_err(|e| format!("--seed {raw:?}: {e}"))?;
                }
                "--help" | "-h" => return Err(USAGE.into()),
                flag if flag.starts_with("--") => {
                    return Err(format!("unknown flag {flag}\nusage: {USAGE}"))
                }
                // cargo passes a bench-name filter through; there is only one bench here.
                _ => {}
            }
        }
        Ok(options)
    }
}

/// A comma-separated list of ids, each one of `known`.
fn ids(flag: &str, raw: &str, known: &[&str]) -> Result<Vec<String>, String> {
    let ids: Vec<String> = raw
        .split(',')
        .map(str::trim)
        .filter(|id| !id.is_empty())
        .map(str::to_string)
        .collect();
    if ids.is_empty() {
        return Err(format!("{flag} needs at least one id"));
    }
    match ids.iter().find(|id| !known.contains(&id.as_str())) {
        Some(bad) => Err(format!(
            "{flag}: unknown id {bad:?} (known: {})",
            known.join(", ")
        )),
        None => Ok(ids),
    }
}
