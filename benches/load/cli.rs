//! The load benchmark's command line: which systems, connection counts, durations,
//! streams and rounds, and the smoke-run switch.

use std::time::Duration;

use crate::systems::System;

pub const USAGE: &str = "cargo bench --bench load -- [--quick] [--only ID,ID] \
    [--conns N,N] [--secs S] [--streams N] [--stream-secs S] [--chunk-rate N] [--rounds N] \
    [--skip requests|streams]";

pub struct Options {
    pub quick: bool,
    pub systems: Vec<System>,
    /// wrk connection counts of the non-streaming part.
    pub conns: Vec<usize>,
    /// Measured time per connection count (after `warmup`).
    pub duration: Duration,
    pub warmup: Duration,
    /// Concurrent NDJSON streams of the streaming part.
    pub streams: usize,
    /// Measured time of the streaming part, after every stream has started.
    pub stream_duration: Duration,
    /// Chunks per second of each stream.
    pub chunk_rate: usize,
    pub rounds: usize,
    pub requests: bool,
    pub streaming: bool,
}

impl Options {
    pub fn parse(args: &[String]) -> Result<Options, String> {
        let quick = args.iter().any(|a| a == "--quick")
            || std::env::var("LOAD_QUICK").is_ok_and(|v| !v.is_empty() && v != "0");
        let mut options = if quick {
            Options {
                quick,
                systems: System::ALL.to_vec(),
                conns: vec![16, 64, 256],
                duration: Duration::from_secs(3),
                warmup: Duration::from_secs(1),
                streams: 500,
                stream_duration: Duration::from_secs(4),
                chunk_rate: 10,
                rounds: 1,
                requests: true,
                streaming: true,
            }
        } else {
            Options {
                quick,
                systems: System::ALL.to_vec(),
                conns: vec![16, 64, 256],
                duration: Duration::from_secs(10),
                warmup: Duration::from_secs(2),
                streams: 2000,
                stream_duration: Duration::from_secs(15),
                chunk_rate: 10,
                rounds: 3,
                requests: true,
                streaming: true,
            }
        };
        let mut args = args.iter();
        while let Some(arg) = args.next() {
            let mut value = |flag: &str| {
                args.next()
                    .cloned()
                    .ok_or_else(|| format!("{flag} needs a value"))
            };
            match arg.as_str() {
                "--bench" | "--quick" => {}
                "--only" => {
                    let raw = value(arg)?;
                    options.systems = raw
                        .split(',')
                        .map(str::trim)
                        .filter(|id| !id.is_empty())
                        .map(System::from_id)
                        .collect::<Result<_, _>>()?;
                    if options.systems.is_empty() {
                        return Err("--only needs at least one id".into());
                    }
                }
                "--conns" => {
                    let raw = value(arg)?;
                    options.conns = raw
                        .split(',')
                        .map(|n| positive(arg, n.trim()))
                        .collect::<Result<_, _>>()?;
                }
                "--secs" => {
                    options.duration = Duration::from_secs(positive(arg, &value(arg)?)? as u64)
                }
                "--stream-secs" => {
                    options.stream_duration =
                        Duration::from_secs(positive(arg, &value(arg)?)? as u64)
                }
                "--streams" => options.streams = positive(arg, &value(arg)?)?,
                "--chunk-rate" => options.chunk_rate = positive(arg, &value(arg)?)?.min(1000),
                "--rounds" => options.rounds = positive(arg, &value(arg)?)?,
                "--skip" => match value(arg)?.as_str() {
                    "requests" => options.requests = false,
                    "streams" => options.streaming = false,
                    other => return Err(format!("--skip {other:?}: requests or streams")),
                },
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

fn positive(flag: &str, raw: &str) -> Result<usize, String> {
    match raw.parse::<usize>() {
        Ok(0) => Err(format!("{flag} must be at least 1")),
        Ok(n) => Ok(n),
        Err(e) => Err(format!("{flag} {raw:?}: {e}")),
    }
}
