//! The benchmark matrix: which fleets and workloads the front-ends are compared on.
//! Each scenario varies a few dimensions of a common base (load time, number and skew
//! of models, conversation length, arrivals, box sizes, models per box, start
//! placement, JSON spelling) instead of the full cross product, which would take hours.
//! Most start empty or in the wrong placement: a fleet that starts as the router would
//! have arranged it cannot show placement at all.

use crate::fleet::{BoxSpec, FleetSpec, JsonStyle};
use crate::placement::{self, Start};
use crate::workload::{Arrivals, WorkloadSpec};

pub struct Scenario {
    /// Stable name for `--scenario` and the JSON report.
    pub id: &'static str,
    /// What the scenario varies, for the legend.
    pub about: &'static str,
    /// Part of the `--quick` smoke run.
    pub quick: bool,
    /// A `corral sim` flag the fleet needs; the scenario is skipped, with that reason,
    /// when the sim does not have it.
    pub needs_sim_flag: Option<&'static str>,
    pub start: Start,
    pub fleet: FleetSpec,
    pub workload: WorkloadSpec,
}

/// The dimensions one scenario sets; everything else is the base.
struct Shape {
    id: &'static str,
    about: &'static str,
    quick: bool,
    load_time: &'static str,
    /// Popularity per model, most popular first; its length is the number of models.
    popularity: &'static [u32],
    /// Slots of each box; its length is the number of boxes.
    parallel: &'static [usize],
    max_loaded: usize,
    start: Start,
    sessions: usize,
    turns: usize,
    think_ms: (u64, u64),
    arrivals: Arrivals,
    json_style: JsonStyle,
    deadline_s: u64,
}

const MODELS: [&str; 6] = [
    "llama3",
    "mistral",
    "phi3",
    "gemma2",
    "qwen2.5",
    "codellama",
];

/// Steady arrivals over `spread_ms`.
const fn steady(spread_ms: u64) -> Arrivals {
    Arrivals::Steady { spread_ms }
}

const fn bursty(bursts: usize, gap_ms: u64) -> Arrivals {
    Arrivals::Bursty { bursts, gap_ms }
}

/// Sized so that on 2 cores the whole matrix takes under 30 minutes: each front-end run
/// is bounded by its deadline (at most 75 s) and most end well before it. The fleets are
/// busy enough that blind routing queues behind loads and cache misses: 8–10 slots, a
/// dozen or more sessions, 1–4 s think time, ~1 s of prefill for a lost cache.
const SHAPES: &[Shape] = &[
    Shape {
        id: "fast-load",
        about: "0.3 s loads, 3 models 60/30/10, one model per box, starts empty",
        quick: true,
        load_time: "300ms",
        popularity: &[60, 30, 10],
        parallel: &[2, 2, 2, 2],
        max_loaded: 1,
        start: Start::Empty,
        sessions: 16,
        turns: 4,
        think_ms: (1000, 4000),
        arrivals: steady(10_000),
        json_style: JsonStyle::Compact,
        deadline_s: 60,
    },
    Shape {
        id: "wrong-2s",
        about: "2 s loads, 3 models 60/30/10, one model per box, starts in the wrong placement",
        quick: false,
        load_time: "2s",
        popularity: &[60, 30, 10],
        parallel: &[2, 2, 2, 2],
        max_loaded: 1,
        start: Start::Wrong,
        sessions: 14,
        turns: 4,
        think_ms: (1000, 4000),
        arrivals: steady(10_000),
        json_style: JsonStyle::Compact,
        deadline_s: 75,
    },
    Shape {
        id: "slow-load-bursty",
        about: "10 s loads, 2 models 75/25, bursts of sessions, starts empty",
        quick: false,
        load_time: "10s",
        popularity: &[75, 25],
        parallel: &[2, 2, 2, 2],
        max_loaded: 1,
        start: Start::Empty,
        sessions: 10,
        turns: 4,
        think_ms: (1000, 4000),
        arrivals: bursty(3, 12_000),
        json_style: JsonStyle::Compact,
        deadline_s: 75,
    },
    Shape {
        id: "six-models",
        about: "2 s loads, 6 models 35/25/15/10/10/5, two models per box, starts wrong",
        quick: false,
        load_time: "2s",
        popularity: &[35, 25, 15, 10, 10, 5],
        parallel: &[2, 2, 2, 2, 2],
        max_loaded: 2,
        start: Start::Wrong,
        sessions: 18,
        turns: 4,
        think_ms: (1000, 4000),
        arrivals: steady(12_000),
        json_style: JsonStyle::Compact,
        deadline_s: 75,
    },
    Shape {
        id: "single-turn-bursty",
        about: "one-turn sessions in bursts, 2 s loads, 3 models 60/30/10, starts empty",
        quick: false,
        load_time: "2s",
        popularity: &[60, 30, 10],
        parallel: &[2, 2, 2, 2],
        max_loaded: 1,
        start: Start::Empty,
        sessions: 40,
        turns: 1,
        think_ms: (0, 0),
        arrivals: bursty(4, 7_000),
        json_style: JsonStyle::Compact,
        deadline_s: 60,
    },
    Shape {
        id: "long-chat",
        about: "10-turn chats, 2 s loads, 3 models 50/35/15, two models per box, starts wrong",
        quick: false,
        load_time: "2s",
        popularity: &[50, 35, 15],
        parallel: &[2, 2, 2, 2],
        max_loaded: 2,
        start: Start::Wrong,
        sessions: 8,
        turns: 10,
        think_ms: (500, 2500),
        arrivals: steady(6_000),
        json_style: JsonStyle::Compact,
        deadline_s: 70,
    },
    Shape {
        id: "big-box",
        about: "one box with twice the slots, 2 s loads, 3 models 60/30/10, bursts, starts wrong",
        quick: true,
        load_time: "2s",
        popularity: &[60, 30, 10],
        parallel: &[4, 2, 2, 2],
        max_loaded: 1,
        start: Start::Wrong,
        sessions: 16,
        turns: 4,
        think_ms: (1000, 4000),
        arrivals: bursty(2, 10_000),
        json_style: JsonStyle::Compact,
        deadline_s: 75,
    },
    Shape {
        id: "spaced-json",
        about: "sims write spaced JSON (`\"done\": true`), 0.3 s loads, 3 models, starts wrong",
        quick: false,
        load_time: "300ms",
        popularity: &[60, 30, 10],
        parallel: &[2, 2, 2, 2],
        max_loaded: 1,
        start: Start::Wrong,
        sessions: 12,
        turns: 4,
        think_ms: (1000, 4000),
        arrivals: steady(8_000),
        json_style: JsonStyle::Spaced,
        deadline_s: 60,
    },
    Shape {
        id: "ideal-2s",
        about: "reference: the placement a good router would reach is there from the start",
        quick: false,
        load_time: "2s",
        popularity: &[60, 30, 10],
        parallel: &[2, 2, 2, 2],
        max_loaded: 1,
        start: Start::Ideal,
        sessions: 12,
        turns: 4,
        think_ms: (1000, 4000),
        arrivals: steady(8_000),
        json_style: JsonStyle::Compact,
        deadline_s: 60,
    },
];

/// The whole matrix, in run order.
pub fn all(seed: u64) -> Vec<Scenario> {
    SHAPES.iter().map(|shape| build(shape, seed)).collect()
}

fn build(shape: &Shape, seed: u64) -> Scenario {
    let models: Vec<String> = MODELS[..shape.popularity.len()]
        .iter()
        .map(|m| m.to_string())
        .collect();
    let resident = placement::resident(
        shape.start,
        shape.popularity,
        shape.parallel.len(),
        shape.max_loaded,
    );
    let boxes = shape
        .parallel
        .iter()
        .zip(resident)
        .map(|(&parallel, resident)| BoxSpec { parallel, resident })
        .collect();
    Scenario {
        id: shape.id,
        about: shape.about,
        quick: shape.quick,
        needs_sim_flag: (shape.json_style != JsonStyle::Compact).then_some("--json-style"),
        start: shape.start,
        fleet: FleetSpec {
            models,
            boxes,
            max_loaded: shape.max_loaded,
            load_time: shape.load_time.into(),
            tokens_per_sec: 50,
            // With first messages of ~1000 words, a lost prompt cache costs ~1 s.
            prefill_tokens_per_sec: 1000,
            num_predict: 20,
            json_style: shape.json_style,
        },
        workload: WorkloadSpec {
            seed,
            sessions: shape.sessions,
            turns: shape.turns,
            popularity: shape.popularity.to_vec(),
            first_message_words: (700, 1300),
            followup_words: (15, 45),
            think_ms: shape.think_ms,
            arrivals: shape.arrivals,
            request_timeout_s: 60,
            deadline_s: shape.deadline_s,
        },
    }
}

impl Scenario {
    /// The smoke-run version: a third of the sessions (at least 4), two turns, shorter
    /// messages, think times and arrivals, and a 20 s deadline, so that a scenario's five
    /// front-ends take well under a minute.
    pub fn quick(mut self) -> Scenario {
        let w = &mut self.workload;
        w.sessions = (w.sessions / 3).max(4);
        w.turns = w.turns.min(2);
        w.first_message_words = (350, 650);
        w.think_ms = (w.think_ms.0 / 3, w.think_ms.1 / 3);
        w.arrivals = w.arrivals.compressed(3);
        w.request_timeout_s = 20;
        w.deadline_s = 20;
        self
    }

    /// Slots and start residency per box, e.g. `4x[phi3] 2x[-]`, for the log.
    pub fn layout(&self) -> String {
        let fleet = &self.fleet;
        (0..fleet.boxes.len())
            .map(|i| {
                let resident = fleet.resident_names(i);
                let resident = if resident.is_empty() {
                    "-".to_string()
                } else {
                    resident.join("+")
                };
                format!("{}x[{resident}]", fleet.boxes[i].parallel)
            })
            .collect::<Vec<_>>()
            .join(" ")
    }
}
