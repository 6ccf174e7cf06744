//! The request path's own work, per request: sniffing the model and conversation out
//! of a chat body, and choosing a backend. Each strategy is measured in the same run
//! so the affinity strategy's extra cost is seen against the round-robin baseline.
//!
//! `cargo bench --bench hot_path`

use std::sync::Arc;

use corral::config::Config;
use corral::model::ModelName;
use corral::pool::{Inventory, Pool};
use corral::proxy::sniff::{sniff_body, Sniff};
use corral::routing::{Need, RouteRequest, Router};
use criterion::{black_box, criterion_group, criterion_main, Criterion};

/// A fleet of 16 backends, each holding every model and with one resident.
fn fleet(strategy: &str) -> Pool {
    let mut yaml = format!("routing: {{strategy: {strategy}}}\nbackends:\n");
    for i in 0..16 {
        yaml.push_str(&format!(
            "  - {{name: gpu-{i}, url: '10.0.0.{i}:11434', max_concurrency: 4}}\n"
        ));
    }
    let pool = Pool::new(Config::parse(&yaml, "bench").expect("bench config"));
    let models = ["llama3", "qwen2.5:7b", "mistral"];
    for (i, b) in pool.load().backends.iter().enumerate() {
        b.state.record_probe(true, 1, 1);
        b.state.inventory.store(Arc::new(Inventory {
            models: models.iter().map(|m| ModelName::new(m)).collect(),
            resident: [ModelName::new(models[i % 3])].into_iter().collect(),
            ..Default::default()
        }));
    }
    pool
}

fn chat_body() -> Vec<u8> {
    let history: Vec<String> = (0..20)
        .map(|i| {
            let role = if i % 2 == 0 { "user" } else { "assistant" };
            format!(r#"{{"role":"{role}","content":"message number {i} with some words in it"}}"#)
        })
        .collect();
    format!(
        r#"{{"model":"llama3","messages":[{{"role":"system","content":"be brief"}},{}],"stream":true}}"#,
        history.join(",")
    )
    .into_bytes()
}

fn sniff(c: &mut Criterion) {
    let body = chat_body();
    c.bench_function("sniff_chat_body", |b| {
        b.iter(|| match sniff_body(black_box(&body), &["model"]) {
            Sniff::Complete(f) => f.conversation_key("llama3:latest"),
            _ => None,
        })
    });
}

fn pick(c: &mut Criterion) {
    let mut group = c.benchmark_group("pick_backend_16");
    for strategy in ["round_robin", "least_loaded", "affinity"] {
        let pool = fleet(strategy);
        let router = Router::default();
        let mut key = 0u64;
        group.bench_function(strategy, |b| {
            b.iter(|| {
                key = key.wrapping_add(0x9e37_79b9_7f4a_7c15);
                let req = RouteRequest {
                    key: Some(key),
                    ..RouteRequest::new(Need::Model(ModelName::new("llama3")))
                };
                router
                    .pick_backend(&pool.load(), black_box(&req), &[])
                    .map(|p| p.reason)
            })
        });
    }
    group.finish();
}

criterion_group!(benches, sniff, pick);
criterion_main!(benches);
