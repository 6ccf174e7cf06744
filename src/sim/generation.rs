//! The fake model: whitespace tokenization, a deterministic reply generated one token at
//! a time at the configured rate, prompt evaluation priced by what the slot had cached,
//! and the Ollama metrics measured while doing it. Route modules turn the event stream
//! into NDJSON, SSE or a single JSON object.

use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::time::Instant;

use super::faults::{Fault, TOKENS_BEFORE_MID_STREAM_FAULT};
use super::models::ModelEntry;
use super::scheduler::{KeepAlive, SlotLease};
use super::state::SimState;
use super::stats::RequestTracker;
use crate::model::ModelName;

/// Whitespace-separated words stand in for tokens.
pub(super) fn tokenize(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split_whitespace().map(str::to_string)
}

/// The tokens a chat template would feed the model: each message's role, then its words.
pub(super) fn chat_prompt<'a>(
    messages: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Vec<String> {
    let mut prompt = Vec::new();
    for (role, content) in messages {
        prompt.push(role.to_string());
        prompt.extend(tokenize(content));
    }
    prompt
}

const VOCABULARY: [&str; 24] = [
    "lorem",
    "ipsum",
    "dolor",
    "sit",
    "amet",
    "consectetur",
    "adipiscing",
    "elit",
    "sed",
    "do",
    "eiusmod",
    "tempor",
    "incididunt",
    "ut",
    "labore",
    "et",
    "dolore",
    "magna",
    "aliqua",
    "enim",
    "ad",
    "minim",
    "veniam",
    "quis",
];

/// A small deterministic unit vector, so the same text always embeds the same way.
pub(super) fn embedding(model: &ModelName, text: &str) -> Vec<f32> {
    let digest = Sha256::digest(format!("{model}\n{text}").as_bytes());
    let raw: Vec<f32> = digest
        .iter()
        .take(8)
        .map(|byte| f32::from(*byte) / 127.5 - 1.0)
        .collect();
    let norm = raw.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm == 0.0 {
        return raw;
    }
    raw.into_iter().map(|x| x / norm).collect()
}

/// What to generate for one request.
pub(super) struct GenerationPlan {
    pub model: ModelName,
    pub prompt: Vec<String>,
    /// Tokens the template puts between the prompt and the reply (the assistant turn
    /// header). They go into the slot cache with the reply, so the next turn of the
    /// conversation, which repeats them in its history, is a cache hit.
    pub reply_header: Vec<String>,
    pub num_predict: usize,
    /// Whether `num_predict` came from the request: running into it is then `length`;
    /// the sim's own default reply length stands for the model stopping by itself.
    pub limit_from_request: bool,
    pub keep_alive: Option<KeepAlive>,
    pub fault: Fault,
}

/// Ollama's final-chunk metrics, in nanoseconds.
#[derive(Debug, Clone, Copy, Serialize)]
pub(super) struct Metrics {
    pub total_duration: u64,
    pub load_duration: u64,
    pub prompt_eval_count: usize,
    pub prompt_eval_duration: u64,
    pub eval_count: usize,
    pub eval_duration: u64,
}

#[derive(Debug, Clone)]
pub(super) enum GenerationEvent {
    /// Text of one token (with its leading space after the first).
    Token(String),
    Done {
        done_reason: &'static str,
        metrics: Metrics,
    },
    /// The simulated runner died: the connection must be cut.
    Died,
}

struct Generation {
    sim: Arc<SimState>,
    plan: GenerationPlan,
    tracker: RequestTracker,
    started: Instant,
    phase: Phase,
}

enum Phase {
    Queued,
    Generating(Box<Running>),
    Finished,
}

struct Running {
    lease: SlotLease,
    prompt_eval_count: usize,
    prompt_eval_duration: Duration,
    eval_started: Instant,
    next_token_due: Instant,
    emitted: usize,
}

/// Runs one generation. Nothing happens until the stream is polled; the first event
/// arrives after the slot wait, any load, prompt evaluation and the first token.
/// Dropping the stream cancels the generation and frees the slot at once.
pub(super) fn generate(
    sim: Arc<SimState>,
    plan: GenerationPlan,
    tracker: RequestTracker,
) -> impl Stream<Item = GenerationEvent> + Send + 'static {
    let generation = Generation {
        sim,
        plan,
        tracker,
        started: Instant::now(),
        phase: Phase::Queued,
    };
    futures::stream::unfold(generation, |mut generation| async move {
        let event = generation.step().await?;
        Some((event, generation))
    })
}

/// `1 / rate` seconds. Rates are checked positive at startup; absurdly slow ones are
/// capped at a day per token so that token deadlines stay representable.
pub(super) fn per_token(rate: f64) -> Duration {
    const SLOWEST: Duration = Duration::from_secs(24 * 3600);
    Duration::try_from_secs_f64(1.0 / rate).map_or(SLOWEST, |interval| interval.min(SLOWEST))
}

fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

impl Generation {
    async fn step(&mut self) -> Option<GenerationEvent> {
        if matches!(self.phase, Phase::Queued) {
            let running = self.start().await;
            self.phase = Phase::Generating(Box::new(running));
        }
        let Phase::Generating(running) = &mut self.phase else {
            return None;
        };
        let fault = self.plan.fault;
        if fault.strikes_mid_stream()
            && running.emitted == TOKENS_BEFORE_MID_STREAM_FAULT.min(self.plan.num_predict)
        {
            if fault == Fault::HangMidStream {
                std::future::pending::<()>().await;
            }
            // The runner dies while computing the next token. Yielding once lets hyper
            // flush the tokens it already holds: the error aborts the connection and
            // discards whatever is still in hyper's write buffer.
            tokio::time::sleep_until(running.next_token_due).await;
            tokio::task::yield_now().await;
            self.phase = Phase::Finished;
            self.tracker.fail();
            return Some(GenerationEvent::Died);
        }
        if running.emitted < self.plan.num_predict {
            tokio::time::sleep_until(running.next_token_due).await;
            running.next_token_due += per_token(self.sim.config.tokens_per_sec);
            let seed = self.plan.prompt.len();
            let word = VOCABULARY[(seed + running.emitted) % VOCABULARY.len()];
            running.lease.remember(word);
            let text = if running.emitted == 0 {
                word.to_string()
            } else {
                format!(" {word}")
            };
            running.emitted += 1;
            self.sim.stats.record_generated_token();
            return Some(GenerationEvent::Token(text));
        }
        Some(self.finish())
    }

    async fn start(&mut self) -> Running {
        let plan = &self.plan;
        let mut lease = self
            .sim
            .scheduler
            .acquire(&plan.model, &plan.prompt, plan.keep_alive)
            .await;
        let cached = lease.cached_prefix();
        let uncached = plan.prompt.len() - cached;
        self.sim.stats.record_prompt(cached, uncached);
        let prefill_started = Instant::now();
        let prefill_cost = per_token(self.sim.config.prefill_tokens_per_sec)
            .checked_mul(u32::try_from(uncached).unwrap_or(u32::MAX))
            .unwrap_or(Duration::MAX);
        tokio::time::sleep(prefill_cost).await;
        let prompt_eval_duration = prefill_started.elapsed();
        for token in &plan.reply_header {
            lease.remember(token);
        }
        let eval_started = Instant::now();
        Running {
            lease,
            prompt_eval_count: uncached,
            prompt_eval_duration,
            eval_started,
            next_token_due: eval_started + per_token(self.sim.config.tokens_per_sec),
            emitted: 0,
        }
    }

    fn finish(&mut self) -> GenerationEvent {
        let Phase::Generating(running) = std::mem::replace(&mut self.phase, Phase::Finished) else {
            return GenerationEvent::Died;
        };
        let Running {
            lease,
            prompt_eval_count,
            prompt_eval_duration,
            eval_started,
            emitted,
            ..
        } = *running;
        let metrics = Metrics {
            total_duration: nanos(self.started.elapsed()),
            load_duration: nanos(lease.load_duration()),
            prompt_eval_count,
            prompt_eval_duration: nanos(prompt_eval_duration),
            eval_count: emitted,
            eval_duration: nanos(eval_started.elapsed()),
        };
        // The slot is free before the client sees `done`, as in Ollama, so a follow-up
        // request never finds its own previous turn still holding the slot.
        drop(lease);
        self.tracker.complete();
        let done_reason = if self.plan.limit_from_request {
            "length"
        } else {
            "stop"
        };
        GenerationEvent::Done {
            done_reason,
            metrics,
        }
    }
}

/// An embedding request's answer and its measured cost.
pub(super) struct EmbedOutcome {
    pub embeddings: Vec<Vec<f32>>,
    pub total_duration: u64,
    pub load_duration: u64,
    pub prompt_eval_count: usize,
}

/// Embeds `texts` on a slot of the model, paying load and prompt evaluation like a
/// generation (embeddings reuse no cache). `None` means the runner died mid-answer
/// (`die_mid_stream`); under `hang_mid_stream` this never returns.
pub(super) async fn embed(
    sim: &SimState,
    entry: &ModelEntry,
    texts: &[String],
    keep_alive: Option<KeepAlive>,
    fault: Fault,
) -> Option<EmbedOutcome> {
    let started = Instant::now();
    let lease = sim.scheduler.acquire(&entry.name, &[], keep_alive).await;
    let token_count: usize = texts.iter().map(|text| tokenize(text).count()).sum();
    let cost = per_token(sim.config.prefill_tokens_per_sec)
        .checked_mul(u32::try_from(token_count).unwrap_or(u32::MAX))
        .unwrap_or(Duration::MAX);
    tokio::time::sleep(cost).await;
    sim.stats.record_prompt(0, token_count);
    let load_duration = nanos(lease.load_duration());
    drop(lease);
    match fault {
        Fault::HangMidStream => std::future::pending().await,
        Fault::DieMidStream => None,
        _ => Some(EmbedOutcome {
            embeddings: texts
                .iter()
                .map(|text| embedding(&entry.name, text))
                .collect(),
            total_duration: nanos(started.elapsed()),
            load_duration,
            prompt_eval_count: token_count,
        }),
    }
}
