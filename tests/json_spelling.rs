//! A fleet that spells its JSON three ways — compact like Ollama, spaced like Python's
//! `json.dumps` with keys reversed, pretty-printed — routes like any other: every
//! answer succeeds, no backend is ever ejected, and each backend's final-chunk token
//! counts reach the metrics.

mod common;

use std::collections::HashMap;

use common::*;
use futures::StreamExt;
use serde_json::{json, Value};

const STYLES: [&str; 3] = ["compact", "spaced", "pretty"];
const ROUNDS: usize = 10;

/// Sum of the samples whose line starts with `prefix`.
fn total(text: &str, prefix: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Model requests answered, by status (`code="200"`) or all (`""`): the harness's own
/// `/api/tags` polls are not model requests.
fn answered(text: &str, code: &str) -> usize {
    text.lines()
        .filter(|l| l.starts_with("corral_requests_total{") && l.contains(code))
        .filter(|l| l.contains("model=\"llama3:latest\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as usize
}

/// One request of each kind: native chat and generate, OpenAI chat, streamed or not.
fn request(kind: usize, round: usize) -> (&'static str, Value, bool) {
    let prompt = format!("round {round}: say something about kind {kind}");
    let messages = json!([{"role": "user", "content": prompt}]);
    let stream = kind.is_multiple_of(2);
    match kind / 2 {
        0 => (
            "/api/chat",
            json!({"model": "llama3", "messages": messages, "stream": stream}),
            stream,
        ),
        1 => (
            "/api/generate",
            json!({"model": "llama3", "prompt": prompt, "stream": stream}),
            stream,
        ),
        _ => (
            "/v1/chat/completions",
            json!({"model": "llama3", "messages": messages, "stream": stream,
                   "stream_options": {"include_usage": round.is_multiple_of(2)}}),
            stream,
        ),
    }
}

/// Sends one request; checks the answer is whole; returns the backend that served it
/// and the (prompt, completion) tokens the answer reported, if it reported them.
async fn send(c: &Corral, path: &str, body: &Value, stream: bool) -> (String, Option<(u64, u64)>) {
    let r = c.post_json(path, body).await;
    assert_eq!(r.status(), 200, "{path} {body}");
    let backend = r
        .headers()
        .get("x-corral-backend")
        .and_then(|v| v.to_str().ok())
        .expect("x-corral-backend")
        .to_string();
    let openai = path.starts_with("/v1");
    let counts = |v: &Value| {
        if openai {
            Some((
                v["usage"]["prompt_tokens"].as_u64()?,
                v["usage"]["completion_tokens"].as_u64()?,
            ))
        } else {
            Some((v["prompt_eval_count"].as_u64()?, v["eval_count"].as_u64()?))
        }
    };
    if !stream {
        let answer: Value = r.json().await.expect("one JSON answer");
        if openai {
            assert_eq!(answer["choices"][0]["finish_reason"], "stop", "{answer}");
        } else {
            assert_eq!(answer["done"], true, "{answer}");
        }
        return (backend, counts(&answer));
    }
    let lines = read_lines(r).await.expect("whole stream");
    if openai {
        let data: Vec<&str> = lines
            .iter()
            .filter_map(|l| l.strip_prefix("data: "))
            .collect();
        assert_eq!(data.last(), Some(&"[DONE]"), "{lines:?}");
        let usage = data
            .iter()
            .filter_map(|d| serde_json::from_str::<Value>(d).ok())
            .find_map(|v| counts(&v));
        return (backend, usage);
    }
    let last: Value = serde_json::from_str(lines.last().expect("lines")).expect("final line");
    assert_eq!(last["done"], true, "{last}");
    (backend, counts(&last))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_spelling_json_three_ways_routes_like_any_other() {
    let sims: Vec<Sim> = STYLES
        .iter()
        .map(|style| {
            start_sim(&[
                "--models",
                "llama3",
                "--resident",
                "llama3",
                "--tokens-per-sec",
                "2000",
                "--parallel",
                "2",
                "--json-style",
                style,
            ])
        })
        .collect();
    // One failed answer would eject its backend: nothing is forgiven.
    let yaml = format!(
        "routing: {{strategy: round_robin}}\nhealth: {{eject_after: 1}}\n{}",
        backends_yaml(&sims.iter().collect::<Vec<_>>(), 2)
    );
    let c = start_corral(&yaml).await;
    c.wait_healthy(STYLES.len()).await;
    wait_routable(&c, &["llama3"]).await;

    let requests: Vec<(&str, Value, bool)> = (0..ROUNDS)
        .flat_map(|round| (0..6).map(move |kind| request(kind, round)))
        .collect();
    let served: Vec<(String, Option<(u64, u64)>)> = futures::stream::iter(&requests)
        .map(|(path, body, stream)| send(&c, path, body, *stream))
        .buffer_unordered(4)
        .collect()
        .await;
    assert_eq!(served.len(), ROUNDS * 6);

    let mut expected: HashMap<String, (u64, u64, usize)> = HashMap::new();
    for (backend, counts) in &served {
        let entry = expected.entry(backend.clone()).or_default();
        let (prompt, completion) = counts.unwrap_or((0, 0));
        *entry = (entry.0 + prompt, entry.1 + completion, entry.2 + 1);
    }
    assert_eq!(
        expected.len(),
        STYLES.len(),
        "every backend served: {expected:?}"
    );

    // Requests are recorded when they end, just after the client saw the last byte.
    let text = wait_for("every request to be counted", || async {
        let t = scrape(&c).await;
        (answered(&t, "") == served.len()).then_some(t)
    })
    .await;
    for (i, style) in STYLES.iter().enumerate() {
        let name = format!("b{i}");
        let (prompt, completion, requests) = expected[&name];
        let label = format!("{{backend=\"{name}\",");
        assert_eq!(
            total(&text, &format!("corral_tokens_total{label}kind=\"prompt\"")),
            prompt as f64,
            "{name} ({}) prompt tokens: {text}",
            style
        );
        assert_eq!(
            total(
                &text,
                &format!("corral_tokens_total{label}kind=\"completion\"")
            ),
            completion as f64,
            "{name} ({}) completion tokens",
            style
        );
        assert!(completion > 0);
        // First content was seen in every answer, streamed or not.
        assert_eq!(
            total(
                &text,
                &format!("corral_time_to_first_token_seconds_count{label}")
            ),
            requests as f64,
            "{name} ({}) first tokens",
            style
        );
        let only = format!("{{backend=\"{name}\"}}");
        assert_eq!(
            total(&text, &format!("corral_backend_ejections_total{only}")),
            0.0
        );
        assert_eq!(total(&text, &format!("corral_backend_ejected{only}")), 0.0);
    }
    assert_eq!(answered(&text, "code=\"200\""), served.len(), "{text}");

    let backends = c.admin("/api/v1/backends").await.expect("admin backends");
    for b in backends.as_array().expect("backend list") {
        assert_eq!(b["ejected"], false, "{b}");
        assert_eq!(b["probation"], false, "{b}");
        assert_eq!(b["healthy"], true, "{b}");
    }
    let log = c.proc.log();
    assert!(!log.contains("backend ejected"), "{log}");
}
