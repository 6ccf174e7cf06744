//! The load every front-end receives: a fixed set of multi-turn chat sessions derived
//! from a seed (no wall-clock randomness), each streaming `/api/chat` turns through the
//! front-end and timing them at the client. A failed or timed-out turn is recorded as
//! such and ends its session; nothing is retried.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde::Serialize;
use serde_json::Value;

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
    /// Sessions start at seeded offsets within this window instead of all at once.
    pub start_spread_ms: u64,
    pub request_timeout_s: u64,
    /// The whole run of one front-end; whatever has not finished by then fails.
    pub deadline_s: u64,
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

const VOCABULARY: [&str; 48] = [
    "route",
    "model",
    "cache",
    "prompt",
    "token",
    "server",
    "latency",
    "queue",
    "request",
    "session",
    "history",
    "answer",
    "question",
    "explain",
    "summarize",
    "document",
    "section",
    "paragraph",
    "policy",
    "budget",
    "report",
    "figure",
    "table",
    "result",
    "measure",
    "average",
    "system",
    "network",
    "memory",
    "storage",
    "cluster",
    "deploy",
    "release",
    "config",
    "schedule",
    "review",
    "design",
    "detail",
    "example",
    "context",
    "reason",
    "compare",
    "option",
    "choice",
    "number",
    "value",
    "change",
    "update",
];

fn words(rng: &mut Rng, count: u64) -> String {
    (0..count)
        .map(|_| VOCABULARY[rng.range((0, VOCABULARY.len() as u64 - 1)) as usize])
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
                start_after: Duration::from_millis(rng.range((0, spec.start_spread_ms))),
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

/// What happened to one turn.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub session: usize,
    pub turn: usize,
    pub model: String,
    /// When the request was sent, from the start of the run.
    pub sent_at_ms: f64,
    pub ok: bool,
    pub error: Option<String>,
    pub ttft_ms: Option<f64>,
    pub latency_ms: f64,
    /// `eval_count / eval_duration` of the final chunk.
    pub tokens_per_sec: Option<f64>,
    /// `prompt_eval_count` of the final chunk: prompt tokens the box had to evaluate.
    pub prompt_eval_count: Option<u64>,
    pub backend: Option<String>,
    pub route: Option<String>,
}

pub struct RunResult {
    pub outcomes: Vec<Outcome>,
    pub wall: Duration,
    pub deadline_hit: bool,
}

/// Plays every session against `url` and returns the outcome of each turn sent.
pub async fn run(
    url: &str,
    sessions: &[Session],
    spec: &WorkloadSpec,
    client: &reqwest::Client,
) -> RunResult {
    let outcomes = Arc::new(Mutex::new(Vec::new()));
    let started = Instant::now();
    let timeout = Duration::from_secs(spec.request_timeout_s);
    let mut tasks = tokio::task::JoinSet::new();
    for session in sessions {
        tasks.spawn(play(
            session.clone(),
            format!("{url}/api/chat"),
            client.clone(),
            timeout,
            Arc::clone(&outcomes),
            started,
        ));
    }
    let deadline = Duration::from_secs(spec.deadline_s);
    let all_done = async {
        while let Some(joined) = tasks.join_next().await {
            if let Err(e) = joined {
                if e.is_panic() {
                    std::panic::resume_unwind(e.into_panic());
                }
            }
        }
    };
    let deadline_hit = tokio::time::timeout(deadline, all_done).await.is_err();
    // Dropping the sessions still running closes their connections: the boxes see
    // the cancellation, as with a real client giving up.
    tasks.shutdown().await;
    let wall = started.elapsed();
    let outcomes = std::mem::take(&mut *outcomes.lock().unwrap_or_else(PoisonError::into_inner));
    RunResult {
        outcomes,
        wall,
        deadline_hit,
    }
}

#[derive(Serialize, Clone)]
struct Message {
    role: &'static str,
    content: String,
}

/// Field order matters: official clients put `model` first and proxies sniff it from
/// the first bytes of the body.
#[derive(Serialize)]
struct ChatRequest<'a> {
    model: &'a str,
    messages: &'a [Message],
    stream: bool,
}

async fn play(
    session: Session,
    url: String,
    client: reqwest::Client,
    timeout: Duration,
    outcomes: Arc<Mutex<Vec<Outcome>>>,
    run_started: Instant,
) {
    // Arrivals and think times model users; they are the workload, not a wait for
    // another process.
    tokio::time::sleep(session.start_after).await;
    let mut messages = vec![Message {
        role: "system",
        content: session.system.clone(),
    }];
    for (turn, user) in session.user_messages.iter().enumerate() {
        if turn > 0 {
            tokio::time::sleep(session.think[turn - 1]).await;
        }
        messages.push(Message {
            role: "user",
            content: user.clone(),
        });
        let body = ChatRequest {
            model: &session.model,
            messages: &messages,
            stream: true,
        };
        let sent = Instant::now();
        let result = tokio::time::timeout(timeout, chat(&client, &url, &session.id, &body, sent))
            .await
            .unwrap_or_else(|_| Err(Failure::bare(format!("timed out after {timeout:?}"))));
        let mut outcome = Outcome {
            session: session.index,
            turn,
            model: session.model.clone(),
            sent_at_ms: ms(sent.duration_since(run_started)),
            ok: false,
            error: None,
            ttft_ms: None,
            latency_ms: ms(sent.elapsed()),
            tokens_per_sec: None,
            prompt_eval_count: None,
            backend: None,
            route: None,
        };
        let reply = match result {
            Ok(turn) => {
                outcome.ok = true;
                outcome.ttft_ms = Some(ms(turn.ttft));
                outcome.tokens_per_sec = turn.tokens_per_sec;
                outcome.prompt_eval_count = turn.prompt_eval_count;
                outcome.backend = turn.headers.backend;
                outcome.route = turn.headers.route;
                Some(turn.reply)
            }
            Err(failure) => {
                outcome.error = Some(failure.error);
                outcome.backend = failure.headers.backend;
                outcome.route = failure.headers.route;
                None
            }
        };
        outcomes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(outcome);
        // A user whose turn failed does not carry on as if it had been answered.
        let Some(reply) = reply else { return };
        messages.push(Message {
            role: "assistant",
            content: reply,
        });
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// corral's routing headers (absent behind nginx).
#[derive(Default)]
struct RouteHeaders {
    backend: Option<String>,
    route: Option<String>,
}

struct TurnOk {
    ttft: Duration,
    reply: String,
    tokens_per_sec: Option<f64>,
    prompt_eval_count: Option<u64>,
    headers: RouteHeaders,
}

struct Failure {
    error: String,
    headers: RouteHeaders,
}

impl Failure {
    fn bare(error: String) -> Failure {
        Failure {
            error,
            headers: RouteHeaders::default(),
        }
    }
}

/// Sends one turn and reads its NDJSON stream to the `done` line.
async fn chat(
    client: &reqwest::Client,
    url: &str,
    session_id: &str,
    body: &ChatRequest<'_>,
    sent: Instant,
) -> Result<TurnOk, Failure> {
    // The session id goes in a header only nginx's hash reads; corral must derive its
    // key from the body (X-Corral-Session is deliberately not sent).
    let response = client
        .post(url)
        .header("X-Session", session_id)
        .json(body)
        .send()
        .await
        .map_err(|e| Failure::bare(format!("send: {e}")))?;
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let headers = RouteHeaders {
        backend: header("x-corral-backend"),
        route: header("x-corral-route"),
    };
    let status = response.status();
    if !status.is_success() {
        let text = response.text().await.unwrap_or_default();
        return Err(Failure {
            error: format!(
                "HTTP {status}: {}",
                text.trim().chars().take(200).collect::<String>()
            ),
            headers,
        });
    }
    let mut stream = response.bytes_stream();
    let mut pending: Vec<u8> = Vec::new();
    let mut reader = StreamReader::default();
    let fail = |error: String, headers: RouteHeaders| Failure { error, headers };
    while let Some(chunk) = stream.next().await {
        let chunk = match chunk {
            Ok(chunk) => chunk,
            Err(e) => return Err(fail(format!("stream: {e}"), headers)),
        };
        pending.extend_from_slice(&chunk);
        while let Some(end) = pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            match reader.line(&line, sent) {
                Ok(None) => {}
                Ok(Some(done)) => return Ok(done.with(headers)),
                Err(e) => return Err(fail(e, headers)),
            }
        }
    }
    // A last line without its newline still counts.
    match reader.line(&pending, sent) {
        Ok(Some(done)) => Ok(done.with(headers)),
        Ok(None) => Err(fail("stream ended before the done line".into(), headers)),
        Err(e) => Err(fail(e, headers)),
    }
}

#[derive(Default)]
struct StreamReader {
    ttft: Option<Duration>,
    reply: String,
}

impl TurnOk {
    fn with(mut self, headers: RouteHeaders) -> TurnOk {
        self.headers = headers;
        self
    }
}

impl StreamReader {
    /// Takes one NDJSON line; `Some` once the final chunk has arrived.
    fn line(&mut self, raw: &[u8], sent: Instant) -> Result<Option<TurnOk>, String> {
        let text = String::from_utf8_lossy(raw);
        let text = text.trim();
        if text.is_empty() {
            return Ok(None);
        }
        let chunk: Value = serde_json::from_str(text)
            .map_err(|e| format!("bad NDJSON line ({e}): {text:.120}"))?;
        if let Some(error) = chunk.get("error") {
            return Err(format!("error line: {error}"));
        }
        let content = chunk
            .pointer("/message/content")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if !content.is_empty() {
            // Time to first token is taken at the client, when the first non-empty
            // content line is read: it includes queueing, load and prefill wherever
            // they happened.
            self.ttft.get_or_insert_with(|| sent.elapsed());
            self.reply.push_str(content);
        }
        if chunk.get("done").and_then(Value::as_bool) != Some(true) {
            return Ok(None);
        }
        let ttft = self
            .ttft
            .ok_or("done before any token: no time to first token")?;
        let count = chunk.get("eval_count").and_then(Value::as_f64);
        let nanos = chunk.get("eval_duration").and_then(Value::as_f64);
        let tokens_per_sec = match (count, nanos) {
            (Some(count), Some(nanos)) if nanos > 0.0 => Some(count / (nanos / 1e9)),
            _ => None,
        };
        Ok(Some(TurnOk {
            ttft,
            reply: std::mem::take(&mut self.reply),
            tokens_per_sec,
            prompt_eval_count: chunk.get("prompt_eval_count").and_then(Value::as_u64),
            headers: RouteHeaders::default(),
        }))
    }
}
