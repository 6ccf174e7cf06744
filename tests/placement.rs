//! Placement and passive health end to end, against real simulators: a load's victim
//! stops being believed resident at once, an idle box is prewarmed when a model's
//! demand outgrows its boxes, and failing backends are never ejected all together —
//! when every candidate is out, requests are still routed (panic mode) and get the
//! backends' own answers instead of corral's 503.

mod common;

use common::*;
use serde_json::{json, Value};

/// The sum of a counter's samples whose line contains every one of `parts`.
fn counter(text: &str, name: &str, parts: &[&str]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && parts.iter().all(|p| l.contains(p)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn backends(c: &Corral) -> Vec<Value> {
    let v = c.admin("/api/v1/backends").await.expect("admin backends");
    v.as_array().expect("backend list").clone()
}

async fn generate(c: &Corral, model: &str) -> (u16, String) {
    let r = c
        .post_json(
            "/api/generate",
            &json!({"model": model, "prompt": "hi", "stream": false}),
        )
        .await;
    let status = r.status().as_u16();
    (status, r.text().await.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_marks_the_model_it_evicts_as_gone_before_any_probe() {
    // One box that holds one model at a time; probes only every hour after the first.
    let sim = start_sim(&[
        "--models",
        "llama3,qwen",
        "--resident",
        "llama3",
        "--max-loaded",
        "1",
    ]);
    let c = start_corral(&format!(
        "health: {{interval: 1h}}\n{}",
        backends_yaml(&[&sim], 2)
    ))
    .await;
    wait_routable(&c, &["llama3", "qwen"]).await;
    assert_eq!(backends(&c).await[0]["resident"], json!(["llama3:latest"]));
    let (status, body) = generate(&c, "qwen").await;
    assert_eq!(status, 200, "{body}");
    // The sim evicted llama3 to load qwen; corral knows without asking.
    assert_eq!(backends(&c).await[0]["resident"], json!(["qwen:latest"]));
    assert_eq!(sim.stats().await["loads"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_box_is_prewarmed_when_demand_outgrows_the_model_s_boxes() {
    // `busy` holds the model with one slot and slow answers; `idle` has it on disk only.
    let busy = start_sim(&[
        "--models",
        "llama3",
        "--resident",
        "llama3",
        "--tokens-per-sec",
        "20",
        "--num-predict",
        "20",
    ]);
    let idle = start_sim(&["--models", "llama3"]);
    let c = start_corral(&backends_yaml(&[&busy, &idle], 1)).await;
    wait_routable(&c, &["llama3"]).await;
    c.wait_healthy(2).await;
    // One finished request teaches corral the service time (~1 s), so waiting looks
    // cheaper than a load of unknown length and requests alone would not load `idle`.
    assert_eq!(generate(&c, "llama3").await.0, 200);
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let c = c.url();
            tokio::spawn(async move {
                reqwest::Client::new()
                    .post(format!("{c}/api/generate"))
                    .json(&json!({"model": "llama3", "prompt": "hi", "stream": false}))
                    .send()
                    .await
                    .map(|r| r.status().as_u16())
            })
        })
        .collect();
    wait_for("a prewarm load on the idle box", || async {
        let text = scrape(&c).await;
        (counter(&text, "corral_model_loads_total", &["reason=\"prewarm\""]) >= 1.0).then_some(())
    })
    .await;
    let b = backends(&c).await;
    assert_eq!(b[1]["resident"], json!(["llama3:latest"]), "{b:?}");
    assert!(idle.stats().await["loads"].as_u64().unwrap() >= 1);
    for client in clients {
        assert_eq!(client.await.unwrap().unwrap(), 200);
    }
    let status = c.admin("/api/v1/status").await.unwrap();
    assert_eq!(status["placement"][0]["model"], "llama3:latest", "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_backends_are_never_all_ejected() {
    let sims: Vec<Sim> = (0..4)
        .map(|_| start_sim(&["--models", "llama3", "--resident", "llama3"]))
        .collect();
    let c = start_corral(&format!(
        "health: {{eject_after: 1, eject_base: 1h, max_ejection_percent: 50}}\n{}",
        backends_yaml(&sims.iter().collect::<Vec<_>>(), 1)
    ))
    .await;
    wait_routable(&c, &["llama3"]).await;
    c.wait_healthy(4).await;
    for s in &sims {
        s.set_fault("fail").await;
    }
    for i in 0..12 {
        let (status, body) = generate(&c, "llama3").await;
        // The backends' own error, passed through: never corral's "no healthy backend".
        assert_eq!(status, 500, "request {i}: {body}");
    }
    wait_for("the last verdict to be counted", || async {
        let text = scrape(&c).await;
        (counter(&text, "corral_requests_total", &["code=\"500\""]) >= 12.0).then_some(())
    })
    .await;
    let ejected = backends(&c)
        .await
        .iter()
        .filter(|b| b["ejected"] == true)
        .count();
    assert_eq!(ejected, 2, "half of four may go");
    let text = scrape(&c).await;
    assert!(counter(&text, "corral_backend_ejections_capped_total", &[]) >= 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_every_candidate_ejected_requests_are_routed_anyway() {
    let sim = start_sim(&["--models", "llama3", "--resident", "llama3"]);
    let c = start_corral(&format!(
        "health: {{eject_after: 1, eject_base: 1h}}\n{}",
        backends_yaml(&[&sim], 1)
    ))
    .await;
    wait_routable(&c, &["llama3"]).await;
    sim.set_fault("fail").await;
    assert_eq!(generate(&c, "llama3").await.0, 500);
    // The verdict is settled as the request is logged, just after the answer.
    wait_for("the failing box to be ejected", || async {
        (backends(&c).await[0]["ejected"] == true).then_some(())
    })
    .await;
    // The box recovered but is still ejected for an hour: panic mode finds it.
    sim.set_fault("none").await;
    let (status, body) = generate(&c, "llama3").await;
    assert_eq!(status, 200, "{body}");
    let text = scrape(&c).await;
    assert!(
        counter(&text, "corral_panic_routes_total", &[]) >= 1.0,
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connect_failure_is_charged_once_and_corral_s_own_503_is_not_busy() {
    let mut sim = start_sim(&["--models", "llama3", "--resident", "llama3"]);
    let c = start_corral(&format!(
        "health: {{interval: 1h, eject_after: 2}}\nrouting: {{max_retries: 1}}\n{}",
        backends_yaml(&[&sim], 2)
    ))
    .await;
    wait_routable(&c, &["llama3"]).await;
    // The box goes away between probes: the connect fails, the retry finds nobody.
    sim.proc.kill();
    let (status, body) = generate(&c, "llama3").await;
    assert_eq!(status, 503, "{body}");
    wait_for("the request to be logged", || async {
        let text = scrape(&c).await;
        (counter(&text, "corral_requests_total", &["code=\"503\""]) >= 1.0).then_some(())
    })
    .await;
    let b = &backends(&c).await[0];
    // One failure of two needed: not ejected. And corral's own 503 did not mark the
    // box "busy" (that would have cut its capacity).
    assert_eq!(b["ejected"], false, "{b}");
    assert_eq!(b["capacity"], 2, "{b}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connect_failure_on_the_last_try_is_charged_once() {
    let mut sim = start_sim(&["--models", "llama3", "--resident", "llama3"]);
    let c = start_corral(&format!(
        "health: {{interval: 1h, eject_after: 2}}\nrouting: {{max_retries: 0}}\n{}",
        backends_yaml(&[&sim], 2)
    ))
    .await;
    wait_routable(&c, &["llama3"]).await;
    sim.proc.kill();
    assert_eq!(generate(&c, "llama3").await.0, 502);
    wait_for("the request to be logged", || async {
        let text = scrape(&c).await;
        (counter(&text, "corral_requests_total", &["code=\"502\""]) >= 1.0).then_some(())
    })
    .await;
    assert_eq!(backends(&c).await[0]["ejected"], false);
}
