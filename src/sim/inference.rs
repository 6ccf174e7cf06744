//! Native model routes: `/api/generate`, `/api/chat`, `/api/embed`, `/api/embeddings`.
//! Each request is tracked in the stats, passes the fault gate, and either streams NDJSON
//! (the default) or answers one JSON object once generation is done.

use std::sync::Arc;

use axum::extract::State;
use axum::response::Response;
use bytes::Bytes;
use futures::{Stream, StreamExt};
use serde::Deserialize;
use serde_json::{json, Value};

use super::api::resolve_model;
use super::faults;
use super::generation::{self, chat_prompt, tokenize, GenerationEvent, GenerationPlan, Metrics};
use super::json_style::JsonStyle;
use super::models::ModelEntry;
use super::respond::{
    connection_killer, dropped_connection, ndjson_line, parse_json, respond_on_first_chunk,
    timestamp_now, ApiError, OllamaShape, NDJSON,
};
use super::scheduler::KeepAlive;
use super::state::SimState;
use super::stats::RequestTracker;

/// The `options` fields the sim honours; others are accepted and ignored.
#[derive(Deserialize, Default)]
pub(super) struct RequestOptions {
    pub num_predict: Option<i64>,
}

#[derive(Deserialize)]
struct GenerateRequest {
    model: Option<String>,
    #[serde(default)]
    prompt: String,
    system: Option<String>,
    stream: Option<bool>,
    #[serde(default)]
    keep_alive: Value,
    options: Option<RequestOptions>,
}

#[derive(Deserialize)]
struct ChatRequest {
    model: Option<String>,
    #[serde(default)]
    messages: Vec<ChatMessage>,
    stream: Option<bool>,
    #[serde(default)]
    keep_alive: Value,
    options: Option<RequestOptions>,
}

#[derive(Deserialize)]
struct ChatMessage {
    #[serde(default)]
    role: String,
    content: Option<String>,
}

/// Which native response shape to produce.
#[derive(Clone, Copy)]
enum Shape {
    Generate,
    Chat,
}

impl Shape {
    /// One response object: an intermediate chunk when `done` is `None`, else the final
    /// chunk (or, for `stream:false`, the whole answer) with reason and metrics.
    fn object(self, model: &str, text: &str, done: Option<(&str, Option<Metrics>)>) -> Value {
        let mut object = json!({ "model": model, "created_at": timestamp_now() });
        match self {
            Shape::Generate => object["response"] = json!(text),
            Shape::Chat => object["message"] = json!({"role": "assistant", "content": text}),
        }
        object["done"] = json!(done.is_some());
        if let Some((reason, metrics)) = done {
            object["done_reason"] = json!(reason);
            if let (Some(fields), Ok(Value::Object(metrics))) =
                (object.as_object_mut(), serde_json::to_value(metrics))
            {
                fields.extend(metrics);
            }
        }
        object
    }
}

/// How many tokens to generate, and whether that limit came from the request.
pub(super) fn reply_length(sim: &SimState, requested: Option<i64>) -> (usize, bool) {
    match requested.map(usize::try_from) {
        Some(Ok(limit)) => (limit, true),
        // Negative means "until the model stops" in Ollama.
        _ => (sim.config.num_predict, false),
    }
}

pub(super) fn parse_keep_alive(value: &Value) -> Result<Option<KeepAlive>, ApiError> {
    KeepAlive::from_json(value).map_err(ApiError::bad_request)
}

/// Runs a model request with stats tracking: an error answer counts as failed.
pub(super) async fn tracked<F, Fut>(
    sim: Arc<SimState>,
    run: F,
    render: fn(ApiError, JsonStyle) -> Response,
) -> Response
where
    F: FnOnce(Arc<SimState>, RequestTracker) -> Fut,
    Fut: std::future::Future<Output = Result<Response, ApiError>>,
{
    let tracker = sim.stats.track();
    match run(Arc::clone(&sim), tracker.clone()).await {
        Ok(response) => response,
        Err(error) => {
            tracker.fail();
            render(error, sim.config.json_style)
        }
    }
}

pub(super) async fn generate(State(sim): State<Arc<SimState>>, body: Bytes) -> Response {
    tracked(
        sim,
        |sim, tracker| generate_inner(sim, tracker, body),
        ApiError::native,
    )
    .await
}

pub(super) async fn chat(State(sim): State<Arc<SimState>>, body: Bytes) -> Response {
    tracked(
        sim,
        |sim, tracker| chat_inner(sim, tracker, body),
        ApiError::native,
    )
    .await
}

async fn generate_inner(
    sim: Arc<SimState>,
    tracker: RequestTracker,
    body: Bytes,
) -> Result<Response, ApiError> {
    let request: GenerateRequest = parse_json(&body)?;
    let entry = resolve_model(&sim, request.model.as_deref())?;
    tracker.set_model(entry.name.as_str());
    let keep_alive = parse_keep_alive(&request.keep_alive)?;
    let fault = faults::gate(&sim).await?;
    let label = request.model.unwrap_or_default();
    if request.prompt.is_empty() {
        return Ok(load_only(&sim, &tracker, &entry, keep_alive, Shape::Generate, &label).await);
    }
    let mut prompt: Vec<String> = request
        .system
        .as_deref()
        .map(tokenize)
        .into_iter()
        .flatten()
        .collect();
    prompt.extend(tokenize(&request.prompt));
    let (num_predict, limit_from_request) = reply_length(
        &sim,
        request.options.and_then(|options| options.num_predict),
    );
    let plan = GenerationPlan {
        model: entry.name,
        prompt,
        reply_header: Vec::new(),
        num_predict,
        limit_from_request,
        keep_alive,
        fault,
    };
    Ok(respond(sim, tracker, plan, Shape::Generate, label, request.stream).await)
}

async fn chat_inner(
    sim: Arc<SimState>,
    tracker: RequestTracker,
    body: Bytes,
) -> Result<Response, ApiError> {
    let request: ChatRequest = parse_json(&body)?;
    let entry = resolve_model(&sim, request.model.as_deref())?;
    tracker.set_model(entry.name.as_str());
    let keep_alive = parse_keep_alive(&request.keep_alive)?;
    let fault = faults::gate(&sim).await?;
    let label = request.model.unwrap_or_default();
    if request.messages.is_empty() {
        return Ok(load_only(&sim, &tracker, &entry, keep_alive, Shape::Chat, &label).await);
    }
    let prompt = chat_prompt(request.messages.iter().map(|message| {
        (
            message.role.as_str(),
            message.content.as_deref().unwrap_or_default(),
        )
    }));
    let (num_predict, limit_from_request) = reply_length(
        &sim,
        request.options.and_then(|options| options.num_predict),
    );
    let plan = GenerationPlan {
        model: entry.name,
        prompt,
        reply_header: vec!["assistant".to_string()],
        num_predict,
        limit_from_request,
        keep_alive,
        fault,
    };
    Ok(respond(sim, tracker, plan, Shape::Chat, label, request.stream).await)
}

/// The empty request `ollama run` sends to preload a model, or (with `keep_alive: 0`)
/// the one `ollama stop` sends to unload it. One JSON object, not a stream.
async fn load_only(
    sim: &SimState,
    tracker: &RequestTracker,
    entry: &ModelEntry,
    keep_alive: Option<KeepAlive>,
    shape: Shape,
    label: &str,
) -> Response {
    let reason = if keep_alive.is_some_and(KeepAlive::is_zero) {
        sim.scheduler.expire(&entry.name);
        "unload"
    } else {
        let (model_use, _) = sim.scheduler.pin(&entry.name, keep_alive).await;
        drop(model_use);
        "load"
    };
    tracker.complete();
    sim.config
        .json_style
        .ok(&shape.object(label, "", Some((reason, None))))
}

async fn respond(
    sim: Arc<SimState>,
    tracker: RequestTracker,
    plan: GenerationPlan,
    shape: Shape,
    label: String,
    stream: Option<bool>,
) -> Response {
    let style = sim.config.json_style;
    let events = generation::generate(sim, plan, tracker);
    if stream.unwrap_or(true) {
        respond_on_first_chunk(NDJSON, ndjson_chunks(events, shape, label, style)).await
    } else {
        collect(events, shape, &label, style).await
    }
}

fn ndjson_chunks(
    events: impl Stream<Item = GenerationEvent> + Send + 'static,
    shape: Shape,
    label: String,
    style: JsonStyle,
) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
    events.map(move |event| match event {
        GenerationEvent::Token(text) => Ok(ndjson_line(style, &shape.object(&label, &text, None))),
        GenerationEvent::Done {
            done_reason,
            metrics,
        } => Ok(ndjson_line(
            style,
            &shape.object(&label, "", Some((done_reason, Some(metrics)))),
        )),
        GenerationEvent::Died => Err(connection_killer()),
    })
}

async fn collect(
    events: impl Stream<Item = GenerationEvent> + Send + 'static,
    shape: Shape,
    label: &str,
    style: JsonStyle,
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
                let answer = shape.object(label, &text, Some((done_reason, Some(metrics))));
                return style.ok(&answer);
            }
            GenerationEvent::Died => break,
        }
    }
    dropped_connection()
}

#[derive(Deserialize)]
#[serde(untagged)]
pub(super) enum EmbedInput {
    One(String),
    Many(Vec<String>),
}

impl EmbedInput {
    pub(super) fn into_texts(self) -> Vec<String> {
        match self {
            EmbedInput::One(text) => vec![text],
            EmbedInput::Many(texts) => texts,
        }
    }
}

#[derive(Deserialize)]
struct EmbedRequest {
    model: Option<String>,
    input: Option<EmbedInput>,
    #[serde(default)]
    keep_alive: Value,
}

#[derive(Deserialize)]
struct LegacyEmbeddingsRequest {
    model: Option<String>,
    #[serde(default)]
    prompt: String,
    #[serde(default)]
    keep_alive: Value,
}

pub(super) async fn embed(State(sim): State<Arc<SimState>>, body: Bytes) -> Response {
    tracked(
        sim,
        |sim, tracker| async move {
            let request: EmbedRequest = parse_json(&body)?;
            let entry = resolve_model(&sim, request.model.as_deref())?;
            tracker.set_model(entry.name.as_str());
            let keep_alive = parse_keep_alive(&request.keep_alive)?;
            let fault = faults::gate(&sim).await?;
            let texts = request
                .input
                .map(EmbedInput::into_texts)
                .unwrap_or_default();
            let Some(outcome) = generation::embed(&sim, &entry, &texts, keep_alive, fault).await
            else {
                tracker.fail();
                return Ok(dropped_connection());
            };
            tracker.complete();
            Ok(sim.config.json_style.ok(&json!({
                "model": request.model,
                "embeddings": outcome.embeddings,
                "total_duration": outcome.total_duration,
                "load_duration": outcome.load_duration,
                "prompt_eval_count": outcome.prompt_eval_count,
            })))
        },
        ApiError::native,
    )
    .await
}

pub(super) async fn embeddings(State(sim): State<Arc<SimState>>, body: Bytes) -> Response {
    tracked(
        sim,
        |sim, tracker| async move {
            let request: LegacyEmbeddingsRequest = parse_json(&body)?;
            let entry = resolve_model(&sim, request.model.as_deref())?;
            tracker.set_model(entry.name.as_str());
            let keep_alive = parse_keep_alive(&request.keep_alive)?;
            let fault = faults::gate(&sim).await?;
            // The legacy route answers an empty prompt with an empty vector.
            let texts: Vec<String> = Some(request.prompt)
                .filter(|p| !p.is_empty())
                .into_iter()
                .collect();
            let Some(mut outcome) =
                generation::embed(&sim, &entry, &texts, keep_alive, fault).await
            else {
                tracker.fail();
                return Ok(dropped_connection());
            };
            tracker.complete();
            let embedding = outcome.embeddings.pop().unwrap_or_default();
            Ok(sim.config.json_style.ok(&json!({ "embedding": embedding })))
        },
        ApiError::native,
    )
    .await
}
