//! Prometheus metrics after real traffic: names, labels and the values the simulator
//! reported in its final chunk; the JSON view and bounded model labels.

mod common;

use common::*;
use serde_json::{json, Value};

/// The value of the sample whose line starts with `prefix` (name and labels).
fn sample(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_chat_shows_up_in_the_metrics() {
    let a = start_sim(&["--models", "llama3", "--tokens-per-sec", "200"]);
    let c = start_corral(&backends_yaml(&[&a], 2)).await;
    wait_routable(&c, &["llama3"]).await;

    let r = reqwest::Client::new()
        .post(format!("{}/api/chat", c.url()))
        .json(
            &json!({"model": "llama3", "messages": [{"role": "user", "content": "count to ten"}]}),
        )
        .send()
        .await
        .expect("chat");
    assert_eq!(r.status(), 200);
    let lines = read_lines(r).await.expect("stream");
    let last: Value = serde_json::from_str(lines.last().expect("lines")).expect("final chunk");
    assert_eq!(last["done"], true);
    let prompt = last["prompt_eval_count"]
        .as_u64()
        .expect("prompt_eval_count");
    let completion = last["eval_count"].as_u64().expect("eval_count");
    assert!(prompt > 0 && completion > 0);

    // A model nobody has is counted as `other`, not as a new label value.
    let r = reqwest::Client::new()
        .post(format!("{}/api/generate", c.url()))
        .json(&json!({"model": "no-such-model-1234", "prompt": "x"}))
        .send()
        .await
        .expect("generate");
    assert_eq!(r.status(), 404);

    // Requests are recorded when they end, just after the client saw the last byte.
    let text = wait_for("the chat and the 404 to be counted", || async {
        let t = scrape(&c).await;
        (t.contains(r#"corral_requests_total{backend="b0",code="200",endpoint="chat",model="llama3:latest"} 1"#)
            && t.contains(r#"code="404""#))
            .then_some(t)
    })
    .await;
    let ttft = sample(
        &text,
        r#"corral_time_to_first_token_seconds_count{backend="b0",model="llama3:latest"}"#,
    );
    assert_eq!(ttft, Some(1.0), "{text}");
    assert_eq!(
        sample(
            &text,
            r#"corral_tokens_total{backend="b0",kind="prompt",model="llama3:latest"}"#
        ),
        Some(prompt as f64),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            r#"corral_tokens_total{backend="b0",kind="completion",model="llama3:latest"}"#
        ),
        Some(completion as f64),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            r#"corral_request_duration_seconds_count{backend="b0",endpoint="chat",model="llama3:latest"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            r#"corral_generation_tokens_per_second_count{backend="b0",model="llama3:latest"}"#
        ),
        Some(1.0)
    );
    assert!(text.contains(r#"model="other""#), "{text}");
    assert!(!text.contains("no-such-model"), "{text}");
    assert_eq!(
        sample(&text, r#"corral_backend_up{backend="b0"}"#),
        Some(1.0)
    );
    assert_eq!(
        sample(&text, r#"corral_backend_in_flight{backend="b0"}"#),
        Some(0.0)
    );
    assert_eq!(
        sample(&text, r#"corral_backend_ejected{backend="b0"}"#),
        Some(0.0)
    );
    assert_eq!(sample(&text, "corral_queue_depth "), Some(0.0));
    assert!(text.contains("corral_queue_wait_seconds_bucket"), "{text}");
    assert!(
        text.contains("# TYPE corral_config_reloads_total counter"),
        "{text}"
    );

    // The JSON view carries the same figures.
    let v: Value = reqwest::get(format!("{}/api/v1/metrics", admin_url(&c)))
        .await
        .expect("json metrics")
        .json()
        .await
        .expect("json");
    let row = v["summary"]
        .as_array()
        .expect("summary")
        .iter()
        .find(|r| r["backend"] == "b0" && r["model"] == "llama3:latest")
        .cloned()
        .expect("row for b0/llama3");
    assert_eq!(row["requests"], 1);
    assert_eq!(row["prompt_tokens"], prompt);
    assert_eq!(row["completion_tokens"], completion);
    assert_eq!(row["ttft_count"], 1);
    assert!(v["families"]
        .as_array()
        .expect("families")
        .iter()
        .any(|f| f["name"] == "corral_time_to_first_token_seconds" && f["type"] == "histogram"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cold_loads_are_a_histogram() {
    // The first request loads the model (not resident at start): load_duration > 100 ms.
    let a = start_sim(&[
        "--models",
        "llama3",
        "--load-time",
        "300ms",
        "--tokens-per-sec",
        "500",
    ]);
    let c = start_corral(&backends_yaml(&[&a], 1)).await;
    wait_routable(&c, &["llama3"]).await;
    let r = reqwest::Client::new()
        .post(format!("{}/api/generate", c.url()))
        .json(&json!({"model": "llama3", "prompt": "x", "stream": false}))
        .send()
        .await
        .expect("generate");
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.expect("json");
    assert!(
        body["load_duration"].as_u64().unwrap_or(0) > 100_000_000,
        "{body}"
    );
    // The series exists at zero from the first probe round; wait for the load itself.
    let count = r#"corral_model_load_duration_seconds_count{backend="b0",model="llama3:latest"}"#;
    let text = wait_for("the load to be counted", || async {
        let t = scrape(&c).await;
        (sample(&t, count)? >= 1.0).then_some(t)
    })
    .await;
    assert_eq!(sample(&text, count), Some(1.0), "{text}");
    assert_eq!(
        sample(
            &text,
            r#"corral_model_loads_total{backend="b0",reason="request"}"#
        ),
        Some(1.0),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_churn_leaves_the_label_set_bounded() {
    let a = start_sim(&["--models", "llama3", "--tokens-per-sec", "1000"]);
    let c = start_corral(&format!(
        "health: {{interval: 200ms}}\n{}",
        backends_yaml(&[&a], 2)
    ))
    .await;
    wait_routable(&c, &["llama3"]).await;
    let http = reqwest::Client::new();
    let series = |text: &str| text.lines().filter(|l| !l.starts_with('#')).count();
    let churned = |text: &str| text.lines().any(|l| l.contains("model=\"churn-"));
    // One round so every series a request creates exists before the baseline.
    let gen = |model: String| {
        let http = http.clone();
        let url = format!("{}/api/generate", c.url());
        async move {
            let r = http
                .post(url)
                .json(&json!({"model": model, "prompt": "x", "stream": false}))
                .send()
                .await
                .expect("generate");
            assert_eq!(r.status(), 200, "{model}");
            let _ = r.bytes().await;
        }
    };
    gen("llama3".into()).await;
    let churn = |range: std::ops::Range<usize>| {
        let http = http.clone();
        let gen = &gen;
        let c = &c;
        async move {
            for i in range {
                let name = format!("churn-{i}");
                let r = http
                    .post(format!("{}/api/copy", c.url()))
                    .json(&json!({"source": "llama3", "destination": name}))
                    .send()
                    .await
                    .expect("copy");
                assert_eq!(r.status(), 200);
                wait_model(c, &name).await;
                gen(name.clone()).await;
                let r = http
                    .delete(format!("{}/api/delete", c.url()))
                    .json(&json!({"model": name}))
                    .send()
                    .await
                    .expect("delete");
                assert_eq!(r.status(), 200);
            }
            // Once the fleet no longer lists them, their series are gone.
            wait_for("churned models' series to be removed", || async {
                let text = scrape(c).await;
                (!churned(&text)).then_some(text)
            })
            .await
        }
    };
    // The first pairs create the series copy and delete themselves add (a fixed set
    // of endpoints); after that, churn adds no series of its own.
    let after_5 = churn(0..5).await;
    let after_20 = churn(5..20).await;
    let names = |t: &str| -> std::collections::BTreeSet<String> {
        t.lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.rsplit_once(' ').map(|(k, _)| k.to_string()))
            .collect()
    };
    let new: Vec<String> = names(&after_20)
        .difference(&names(&after_5))
        .cloned()
        .collect();
    // A delete logged just after a probe round dropped its model is counted under
    // `other`: that bucket may appear late, but it is one fixed set, not per model.
    assert!(
        new.iter().all(|s| s.contains("model=\"other\"")),
        "{} series after 5 copy+delete pairs, {} after 20; new: {new:?}",
        series(&after_5),
        series(&after_20)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_usage_targeted_requests_and_whole_answers_are_counted() {
    let a = start_sim(&["--models", "llama3", "--tokens-per-sec", "1000"]);
    let c = start_corral(&backends_yaml(&[&a], 2)).await;
    wait_routable(&c, &["llama3"]).await;
    let http = reqwest::Client::new();
    // OpenAI shape, not streamed: tokens come from `usage`.
    let r = http
        .post(format!("{}/v1/chat/completions", c.url()))
        .json(&json!({"model": "llama3", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .expect("openai chat");
    assert_eq!(r.status(), 200);
    let answer: Value = r.json().await.expect("openai json");
    let completion = answer["usage"]["completion_tokens"]
        .as_u64()
        .expect("usage");
    // Sent to one named backend: still labelled with its model.
    let r = http
        .post(format!("{}/api/generate", c.url()))
        .header("X-Corral-Target", "b0")
        .json(&json!({"model": "llama3", "prompt": "x", "stream": false}))
        .send()
        .await
        .expect("targeted generate");
    assert_eq!(r.status(), 200);
    let _ = r.bytes().await;
    let text = wait_for("both requests to be counted", || async {
        let text = scrape(&c).await;
        let n = text
            .lines()
            .filter(|l| {
                l.starts_with("corral_requests_total{") && l.contains("model=\"llama3:latest\"")
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>();
        (n >= 2.0).then_some(text)
    })
    .await;
    let tokens = sample(
        &text,
        r#"corral_tokens_total{backend="b0",kind="completion",model="llama3:latest"}"#,
    )
    .expect("completion tokens");
    assert!(tokens >= completion as f64, "{tokens} < {completion}");
    // Both answers were whole JSON documents: each has a time to first token.
    let ttft = sample(
        &text,
        r#"corral_time_to_first_token_seconds_count{backend="b0",model="llama3:latest"}"#,
    )
    .expect("ttft count");
    assert_eq!(ttft, 2.0, "{text}");
    assert!(!text.contains("model=\"none\",endpoint=\"generate\""));
}
