//! The OpenAI-compatible routes Ollama serves under `/v1`: chat and text completions
//! (JSON, or SSE with `"stream": true`), embeddings, and the model list. Shapes follow
//! Ollama's `openai` package, including `system_fingerprint: "fp_ollama"` and errors as
//! `{"error":{"message","type","param","code"}}`.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::response::Response;
use bytes::{Bytes, BytesMut};
use futures::{Stream, StreamExt};
use serde::Deserialize;
use serde_json::{json, Value};

use super::api::resolve_model;
use super::faults;
use super::generation::{self, chat_prompt, tokenize, GenerationEvent, GenerationPlan, Metrics};
use super::inference::{reply_length, tracked, EmbedInput};
use super::json_style::JsonStyle;
use super::respond::{
    connection_killer, dropped_connection, respond_on_first_chunk, sse_event, unix_seconds,
    ApiError, OllamaShape, EVENT_STREAM,
};
use super::state::SimState;
use super::stats::RequestTracker;

#[derive(Deserialize, Default)]
struct StreamOptions {
    #[serde(default)]
    include_usage: bool,
}

#[derive(Deserialize)]
struct ChatCompletionRequest {
    model: Option<String>,
    #[serde(default)]
    messages: Vec<Message>,
    #[serde(default)]
    stream: bool,
    stream_options: Option<StreamOptions>,
    max_tokens: Option<i64>,
    max_completion_tokens: Option<i64>,
}

#[derive(Deserialize)]
struct Message {
    #[serde(default)]
    role: String,
    /// A string, or an array of content parts of which the `text` ones count.
    #[serde(default)]
    content: Value,
}

impl Message {
    fn text(&self) -> String {
        match &self.content {
            Value::String(text) => text.clone(),
            Value::Array(parts) => parts
                .iter()
                .filter_map(|part| part.get("text").and_then(Value::as_str))
                .collect::<Vec<_>>()
                .join(" "),
            _ => String::new(),
        }
    }
}

#[derive(Deserialize)]
struct CompletionRequest {
    model: Option<String>,
    #[serde(default)]
    prompt: String,
    #[serde(default)]
    stream: bool,
    stream_options: Option<StreamOptions>,
    max_tokens: Option<i64>,
}

/// Which OpenAI object family a response belongs to.
#[derive(Clone, Copy)]
enum Kind {
    Chat,
    Completion,
}

/// Everything needed to render one response's objects.
#[derive(Clone)]
struct Rendering {
    kind: Kind,
    id: String,
    model: String,
    include_usage: bool,
    style: JsonStyle,
}

fn usage(metrics: &Metrics) -> Value {
    json!({
        "prompt_tokens": metrics.prompt_eval_count,
        "completion_tokens": metrics.eval_count,
        "total_tokens": metrics.prompt_eval_count + metrics.eval_count,
    })
}

impl Rendering {
    fn envelope(&self, object: &str, choices: Value) -> Value {
        json!({
            "id": self.id,
            "object": object,
            "created": unix_seconds(std::time::SystemTime::now()),
            "model": self.model,
            "system_fingerprint": "fp_ollama",
            "choices": choices,
        })
    }

    fn chunk(&self, text: &str, finish_reason: Option<&str>) -> Value {
        match self.kind {
            Kind::Chat => self.envelope(
                "chat.completion.chunk",
                json!([{
                    "index": 0,
                    "delta": {"role": "assistant", "content": text},
                    "finish_reason": finish_reason,
                }]),
            ),
            Kind::Completion => self.envelope(
                "text_completion",
                json!([{"text": text, "index": 0, "finish_reason": finish_reason}]),
            ),
        }
    }

    fn whole(&self, text: &str, finish_reason: &str, metrics: &Metrics) -> Value {
        let mut answer = match self.kind {
            Kind::Chat => self.envelope(
                "chat.completion",
                json!([{
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": finish_reason,
                }]),
            ),
            Kind::Completion => self.envelope(
                "text_completion",
                json!([{"text": text, "index": 0, "finish_reason": finish_reason}]),
            ),
        };
        answer["usage"] = usage(metrics);
        answer
    }

    /// Everything after the last token: the finishing chunk, the usage chunk when asked
    /// for, and the `[DONE]` sentinel.
    fn ending(&self, finish_reason: &str, metrics: &Metrics) -> Bytes {
        let mut out = BytesMut::new();
        out.extend_from_slice(&sse_event(self.style, &self.chunk("", Some(finish_reason))));
        if self.include_usage {
            let object = match self.kind {
                Kind::Chat => "chat.completion.chunk",
                Kind::Completion => "text_completion",
            };
            let mut usage_chunk = self.envelope(object, json!([]));
            usage_chunk["usage"] = usage(metrics);
            out.extend_from_slice(&sse_event(self.style, &usage_chunk));
        }
        out.extend_from_slice(b"data: [DONE]\n\n");
        out.freeze()
    }
}

pub(super) async fn chat_completions(State(sim): State<Arc<SimState>>, body: Bytes) -> Response {
    tracked(
        sim,
        |sim, tracker| async move {
            let request: ChatCompletionRequest = super::respond::parse_json(&body)?;
            let entry = resolve_model(&sim, request.model.as_deref())?;
            tracker.set_model(entry.name.as_str());
            let fault = faults::gate(&sim).await?;
            let messages: Vec<(String, String)> = request
                .messages
                .iter()
                .map(|message| (message.role.clone(), message.text()))
                .collect();
            let prompt = chat_prompt(
                messages
                    .iter()
                    .map(|(role, text)| (role.as_str(), text.as_str())),
            );
            let (num_predict, limit_from_request) =
                reply_length(&sim, request.max_completion_tokens.or(request.max_tokens));
            let rendering = Rendering {
                kind: Kind::Chat,
                id: format!("chatcmpl-{}", sim.next_id()),
                model: request.model.unwrap_or_default(),
                include_usage: request.stream_options.unwrap_or_default().include_usage,
                style: sim.config.json_style,
            };
            let plan = GenerationPlan {
                model: entry.name,
                prompt,
                reply_header: vec!["assistant".to_string()],
                num_predict,
                limit_from_request,
                keep_alive: None,
                fault,
            };
            Ok(respond(sim, tracker, plan, rendering, request.stream).await)
        },
        ApiError::openai,
    )
    .await
}

pub(super) async fn completions(State(sim): State<Arc<SimState>>, body: Bytes) -> Response {
    tracked(
        sim,
        |sim, tracker| async move {
            let request: CompletionRequest = super::respond::parse_json(&body)?;
            let entry = resolve_model(&sim, request.model.as_deref())?;
            tracker.set_model(entry.name.as_str());
            let fault = faults::gate(&sim).await?;
            let (num_predict, limit_from_request) = reply_length(&sim, request.max_tokens);
            let rendering = Rendering {
                kind: Kind::Completion,
                id: format!("cmpl-{}", sim.next_id()),
                model: request.model.unwrap_or_default(),
                include_usage: request.stream_options.unwrap_or_default().include_usage,
                style: sim.config.json_style,
            };
            let plan = GenerationPlan {
                model: entry.name,
                prompt: tokenize(&request.prompt).collect(),
                reply_header: Vec::new(),
                num_predict,
                limit_from_request,
                keep_alive: None,
                fault,
            };
            Ok(respond(sim, tracker, plan, rendering, request.stream).await)
        },
        ApiError::openai,
    )
    .await
}

async fn respond(
    sim: Arc<SimState>,
    tracker: RequestTracker,
    plan: GenerationPlan,
    rendering: Rendering,
    stream: bool,
) -> Response {
    let events = generation::generate(sim, plan, tracker);
    if stream {
        respond_on_first_chunk(EVENT_STREAM, sse_chunks(events, rendering)).await
    } else {
        collect(events, &rendering).await
    }
}

fn sse_chunks(
    events: impl Stream<Item = GenerationEvent> + Send + 'static,
    rendering: Rendering,
) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
    events.map(move |event| match event {
        GenerationEvent::Token(text) => {
            Ok(sse_event(rendering.style, &rendering.chunk(&text, None)))
        }
        GenerationEvent::Done {
            done_reason,
            metrics,
        } => Ok(rendering.ending(done_reason, &metrics)),
        GenerationEvent::Died => Err(connection_killer()),
    })
}

async fn collect(
    events: impl Stream<Item = GenerationEvent> + Send + 'static,
    rendering: &Rendering,
) -> Response {
    let mut events = Box::pin(events);
    let mut text = String::new();
    while let Some(event) = events.next().await {
        match event {
            GenerationEvent::Token(token) => text.push_str(&token),
            GenerationEvent::Done {
                done_reason,
                metrics,
            } => {
                return rendering
                    .style
                    .ok(&rendering.whole(&text, done_reason, &metrics))
            }
            GenerationEvent::Died => break,
        }
    }
    dropped_connection()
}

#[derive(Deserialize)]
struct EmbeddingsRequest {
    model: Option<String>,
    input: Option<EmbedInput>,
}

pub(super) async fn embeddings(State(sim): State<Arc<SimState>>, body: Bytes) -> Response {
    tracked(sim, |sim, tracker| async move {
        let request: EmbeddingsRequest = super::respond::parse_json(&body)?;
        let entry = resolve_model(&sim, request.model.as_deref())?;
        tracker.set_model(entry.name.as_str());
        let texts = request
            .input
            .map(EmbedInput::into_texts)
            .ok_or_else(|| ApiError::bad_request("invalid input"))?;
        let fault = faults::gate(&sim).await?;
        let Some(outcome) = generation::embed(&sim, &entry, &texts, None, fault).await else {
            tracker.fail();
            return Ok(dropped_connection());
        };
        tracker.complete();
        let data: Vec<Value> = outcome
            .embeddings
            .into_iter()
            .enumerate()
            .map(|(index, embedding)| json!({"object": "embedding", "embedding": embedding, "index": index}))
            .collect();
        Ok(sim.config.json_style.ok(&json!({
            "object": "list",
            "data": data,
            "model": request.model,
            "usage": {
                "prompt_tokens": outcome.prompt_eval_count,
                "total_tokens": outcome.prompt_eval_count,
            },
        })))
    }, ApiError::openai)
    .await
}

fn model_object(name: &str, namespace: &str, modified_at: std::time::SystemTime) -> Value {
    json!({
        "id": name,
        "object": "model",
        "created": unix_seconds(modified_at),
        "owned_by": namespace,
    })
}

pub(super) async fn list_models(State(sim): State<Arc<SimState>>) -> Response {
    let data: Vec<Value> = sim
        .catalog
        .list()
        .iter()
        .map(|entry| {
            model_object(
                entry.name.as_str(),
                entry.name.namespace(),
                entry.modified_at,
            )
        })
        .collect();
    sim.config
        .json_style
        .ok(&json!({ "object": "list", "data": data }))
}

pub(super) async fn retrieve_model(
    State(sim): State<Arc<SimState>>,
    Path(model): Path<String>,
) -> Response {
    match resolve_model(&sim, Some(&model)) {
        Ok(entry) => sim.config.json_style.ok(&model_object(
            &model,
            entry.name.namespace(),
            entry.modified_at,
        )),
        Err(error) => error.openai(sim.config.json_style),
    }
}
