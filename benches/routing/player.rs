//! Plays a planned workload through one front-end: every session streams its
//! `/api/chat` turns, timed at the client. A failed or timed-out turn is recorded as
//! such and ends its session; nothing is retried.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde::Serialize;
use serde_json::Value;

use crate::workload::{Session, WorkloadSpec};

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
