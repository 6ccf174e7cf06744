//! The load every front-end receives: a fixed set of multi-turn chat sessions derived
//! from a seed (no wall-clock randomness) — who talks to which model, what they say and
//! when they arrive. `player` sends them.

use std::time::Duration;

use serde::Serialize;

/// SplitMix64: tiny, deterministic and good enough to shape a workload.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi` (modulo bias is irrelevant at these ranges).
    fn range(&mut self, (lo, hi): (u64, u64)) -> u64 {
        lo + self.next() % (hi.saturating_sub(lo) + 1)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct WorkloadSpec {
    pub seed: u64,
    pub sessions: usize,
    pub turns: usize,
    /// Relative popularity of each fleet model, in the fleet's model order.
    pub popularity: Vec<u32>,
    /// Length of a session's first user message: the history whose cache routing
    /// should keep warm.
    pub first_message_words: (u64, u64),
    pub followup_words: (u64, u64),
    /// User think time between a reply and the next turn.
    pub think_ms: (u64, u64),
    pub arrivals: Arrivals,
    pub request_timeout_s: u64,
    /// The whole run of one front-end; whatever has not finished by then fails.
    pub deadline_s: u64,
}

/// When sessions start.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Arrivals {
    /// Starts spread evenly over `spread_ms`, each at a seeded point of its own slice.
    Steady { spread_ms: u64 },
    /// `bursts` groups of sessions `gap_ms` apart, each group starting within 100 ms:
    /// a team opening their chats at once, which finds a router's placement unready.
    Bursty { bursts: usize, gap_ms: u64 },
}

impl Arrivals {
    fn start(self, rng: &mut Rng, index: usize, sessions: usize) -> Duration {
        let sessions = sessions.max(1) as u64;
        let ms = match self {
            Arrivals::Steady { spread_ms } => {
                let slice = spread_ms / sessions;
                index as u64 * slice + rng.range((0, slice))
            }
            Arrivals::Bursty { bursts, gap_ms } => {
                let burst = index as u64 * bursts.max(1) as u64 / sessions;
                burst * gap_ms + rng.range((0, 100))
            }
        };
        Duration::from_millis(ms)
    }

    /// The same pattern `divisor` times faster, for the smoke run.
    pub fn compressed(self, divisor: u64) -> Arrivals {
        let divisor = divisor.max(1);
        match self {
            Arrivals::Steady { spread_ms } => Arrivals::Steady {
                spread_ms: spread_ms / divisor,
            },
            Arrivals::Bursty { bursts, gap_ms } => Arrivals::Bursty {
                bursts,
                gap_ms: gap_ms / divisor,
            },
        }
    }
}

impl WorkloadSpec {
    pub fn planned_requests(&self) -> usize {
        self.sessions * self.turns
    }
}

/// One scripted conversation: everything the user will say and when.
#[derive(Debug, Clone)]
pub struct Session {
    pub index: usize,
    pub id: String,
    pub model: String,
    pub system: String,
    /// One user message per turn; the first is the long one.
    pub user_messages: Vec<String>,
    pub start_after: Duration,
    /// Pause before each turn after the first.
    pub think: Vec<Duration>,
}

/// The words messages are made of: the sim counts one token per word.
const VOCABULARY: &str =
    "route model cache prompt token server latency queue request session history answer \
    question explain summarize document section paragraph policy budget report figure table result \
    measure average system network memory storage cluster deploy release config schedule review \
    design detail example context reason compare option choice number value change update";

fn words(rng: &mut Rng, count: u64) -> String {
    let vocabulary: Vec<&str> = VOCABULARY.split_whitespace().collect();
    (0..count)
        .map(|_| vocabulary[rng.range((0, vocabulary.len() as u64 - 1)) as usize])
        .collect::<Vec<_>>()
        .join(" ")
}

/// The sessions of a run. Depends only on `spec` and `models`, so every front-end gets
/// exactly the same conversations.
pub fn plan(spec: &WorkloadSpec, models: &[String]) -> Vec<Session> {
    let mut rng = Rng::new(spec.seed);
    // A few shared system prompts, as real deployments have: they are a common prefix
    // across sessions, but far shorter than a conversation's own history.
    let systems: Vec<String> = (0..4)
        .map(|k| {
            format!(
                "You are assistant number {k} of the platform team. {}",
                words(&mut rng, 40)
            )
        })
        .collect();
    let assignment = assign_models(&mut rng, &spec.popularity, spec.sessions);
    (0..spec.sessions)
        .map(|index| {
            let id = format!("s{index:03}");
            let model = models[assignment[index]].clone();
            let system = systems[rng.range((0, systems.len() as u64 - 1)) as usize].clone();
            let first_len = rng.range(spec.first_message_words);
            // The session id up front makes every first message, and so every
            // conversation key, unique.
            let mut user_messages = vec![format!(
                "Session {id}: please review this document. {}",
                words(&mut rng, first_len)
            )];
            for _ in 1..spec.turns {
                let len = rng.range(spec.followup_words);
                user_messages.push(words(&mut rng, len));
            }
            let think = (1..spec.turns)
                .map(|_| Duration::from_millis(rng.range(spec.think_ms)))
                .collect();
            Session {
                index,
                id,
                model,
                system,
                user_messages,
                start_after: spec.arrivals.start(&mut rng, index, spec.sessions),
                think,
            }
        })
        .collect()
}

/// Model index per session: counts follow `popularity` as closely as whole sessions
/// allow (largest remainder, every popular-at-all model at least once when there are
/// enough sessions), in a seeded order. Drawing each session independently would let a
/// small run invert the skew it is meant to have.
fn assign_models(rng: &mut Rng, popularity: &[u32], sessions: usize) -> Vec<usize> {
    let total: u64 = popularity.iter().map(|&w| u64::from(w)).sum::<u64>().max(1);
    let exact: Vec<f64> = popularity
        .iter()
        .map(|&w| w as f64 * sessions as f64 / total as f64)
        .collect();
    let mut counts: Vec<usize> = exact.iter().map(|e| e.floor() as usize).collect();
    let mut by_remainder: Vec<usize> = (0..exact.len()).collect();
    by_remainder
        .sort_by(|&a, &b| (exact[b] - exact[b].floor()).total_cmp(&(exact[a] - exact[a].floor())));
    let short = sessions - counts.iter().sum::<usize>();
    for &m in by_remainder.iter().take(short) {
        counts[m] += 1;
    }
    for m in 0..counts.len() {
        if counts[m] == 0 && popularity[m] > 0 {
            let (richest, _) = counts
                .iter()
                .enumerate()
                .max_by_key(|&(_, c)| *c)
                .unwrap_or((m, &0));
            if counts[richest] > 1 {
                counts[richest] -= 1;
                counts[m] += 1;
            }
        }
    }
    let mut order: Vec<usize> = counts
        .iter()
        .enumerate()
        .flat_map(|(m, &c)| std::iter::repeat_n(m, c))
        .collect();
    // Fisher–Yates, so popular sessions do not all arrive first.
    for i in (1..order.len()).rev() {
        let j = rng.range((0, i as u64)) as usize;
        order.swap(i, j);
    }
    order
}

/// A cheap fingerprint of the plan, reported so runs can be checked to have sent the
/// same conversations.
pub fn fingerprint(sessions: &[Session]) -> String {
    // FNV-1a over everything that is sent.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |text: &str| {
        for byte in text.bytes().chain([0]) {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    };
    for s in sessions {
        eat(&s.id);
        eat(&s.model);
        eat(&s.system);
        s.user_messages.iter().for_each(|m| eat(m));
    }
    format!("{hash:016x}")
}
