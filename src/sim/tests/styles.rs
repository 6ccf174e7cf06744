//! `--json-style`: every body, stream line and SSE event spelled as asked, saying the
//! same thing in every style.

use serde_json::{json, Value};

use super::{fast_args, ndjson, start, TestSim};
use crate::sim::{JsonStyle, SimArgs};

async fn sim(style: JsonStyle) -> TestSim {
    start(SimArgs {
        json_style: style,
        ..fast_args()
    })
    .await
}

async fn raw(sim: &TestSim, path: &str, body: Option<Value>) -> (u16, String) {
    let request = match body {
        Some(body) => sim.http.post(sim.url(path)).json(&body),
        None => sim.http.get(sim.url(path)),
    };
    let response = request.send().await.expect("request sent");
    let status = response.status().as_u16();
    (status, response.text().await.expect("body"))
}

/// Whether `text` is spelled like Python's `json.dumps`: a space after every key's
/// colon and before every key (the sim's texts hold no quotes of their own).
fn spaced(text: &str) -> bool {
    let keys = text.matches("\":").count();
    keys > 0 && text.matches("\": ").count() == keys && !text.contains(",\"")
}

/// The bodies every style is checked on: a non-streamed chat, tags, version, ps, show,
/// an error.
async fn bodies(sim: &TestSim) -> Vec<(u16, String)> {
    let chat = json!({"model": "llama3", "messages": [{"role": "user", "content": "hi"}], "stream": false});
    vec![
        raw(sim, "/api/chat", Some(chat)).await,
        raw(sim, "/api/tags", None).await,
        raw(sim, "/api/version", None).await,
        raw(sim, "/api/ps", None).await,
        raw(sim, "/api/show", Some(json!({"model": "llama3"}))).await,
        raw(sim, "/api/chat", Some(json!({"model": "nope"}))).await,
    ]
}

#[tokio::test]
async fn styles_spell_differently_and_mean_the_same() {
    let compact = sim(JsonStyle::Compact).await;
    let spaced_sim = sim(JsonStyle::Spaced).await;
    let pretty = sim(JsonStyle::Pretty).await;
    let (plain, with_spaces, indented) = (
        bodies(&compact).await,
        bodies(&spaced_sim).await,
        bodies(&pretty).await,
    );
    for ((a, b), c) in plain.iter().zip(&with_spaces).zip(&indented) {
        assert_eq!((a.0, b.0, c.0), (a.0, a.0, a.0));
        assert!(!a.1.contains("\": "), "compact: {}", a.1);
        assert!(spaced(&b.1), "spaced: {}", b.1);
        assert!(c.1.trim().lines().count() > 1, "pretty: {}", c.1);
        let parse = |text: &str| serde_json::from_str::<Value>(text).expect("JSON");
        let (mut a, mut b, mut c) = (parse(&a.1), parse(&b.1), parse(&c.1));
        // Times and durations differ between boxes; shapes and fixed values must not.
        for value in [&mut a, &mut b, &mut c] {
            for volatile in [
                "created_at",
                "expires_at",
                "modified_at",
                "total_duration",
                "load_duration",
                "prompt_eval_duration",
                "eval_duration",
            ] {
                scrub(value, volatile);
            }
        }
        assert_eq!(a, b);
        assert_eq!(a, c);
    }
}

fn scrub(value: &mut Value, key: &str) {
    match value {
        Value::Object(map) => {
            map.remove(key);
            map.values_mut().for_each(|v| scrub(v, key));
        }
        Value::Array(items) => items.iter_mut().for_each(|v| scrub(v, key)),
        _ => {}
    }
}

#[tokio::test]
async fn spaced_streams_put_done_first_and_stay_one_object_per_line() {
    for style in [JsonStyle::Spaced, JsonStyle::Pretty] {
        let sim = sim(style).await;
        let (status, text) = raw(
            &sim,
            "/api/generate",
            Some(json!({"model": "llama3", "prompt": "hi"})),
        )
        .await;
        assert_eq!(status, 200);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 6, "{text}");
        assert!(lines.iter().all(|line| spaced(line)), "{text}");
        let last = lines[5];
        assert!(last.contains("\"done\": true"), "{last}");
        assert!(
            last.find("\"done\"") < last.find("\"response\""),
            "keys reversed: {last}"
        );
        let parsed = ndjson(&text);
        assert_eq!(parsed[5]["eval_count"], 5);

        let (_, events) = raw(&sim, "/v1/chat/completions",
            Some(json!({"model": "llama3", "messages": [{"role": "user", "content": "hi"}], "stream": true}))).await;
        let data: Vec<&str> = events
            .lines()
            .filter_map(|line| line.strip_prefix("data: "))
            .collect();
        assert_eq!(data.last(), Some(&"[DONE]"));
        for chunk in &data[..data.len() - 1] {
            assert!(spaced(chunk), "{chunk}");
            serde_json::from_str::<Value>(chunk).expect("each event is one JSON line");
        }
    }
}
