//! The request path's own work, piece by piece (criterion): choosing a backend in
//! fleets of 10 to 10,000, sniffing bodies in one and in many chunks, reading an
//! answer chunk, rebuilding and reloading a 1,000-backend table, recording a request's
//! metrics and formatting its access-log line. Strategies are measured in the same
//! run, so affinity's extra cost is seen against the least-loaded baseline.
//!
//! `cargo bench --bench hot_path` (`-- pick` etc. to run one group)

use std::time::Duration;

use bytes::Bytes;
use corral::config::Config;
use corral::metrics::{RequestRecord, TokenStats};
use corral::model::ModelName;
use corral::pool::{Inventory, Pool};
use corral::proxy::access_line::AccessLine;
use corral::proxy::observe::StreamObserver;
use corral::proxy::sniff::{sniff_body, BodySniffer, Sniff};
use corral::routing::{Need, RouteRequest, Router};
use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion};

const MODELS: [&str; 9] = [
    "llama3",
    "qwen2.5:7b",
    "mistral",
    "phi3",
    "gemma2",
    "llava",
    "codellama",
    "nomic-embed-text",
    "deepseek-r1",
];

fn fleet_yaml(strategy: &str, n: usize) -> String {
    let mut yaml = format!("routing: {{strategy: {strategy}}}\nbackends:\n");
    for i in 0..n {
        yaml.push_str(&format!(
            "  - {{name: gpu-{i}, url: '10.{}.{}.{}:11434', max_concurrency: 4}}\n",
            i / 65536,
            (i / 256) % 256,
            i % 256
        ));
    }
    yaml
}

/// `n` healthy backends, each listing 3 of 9 models with one of them resident.
fn fleet(strategy: &str, n: usize) -> Pool {
    let pool = Pool::new(Config::parse(&fleet_yaml(strategy, n), "bench").expect("bench config"));
    for (i, b) in pool.load().backends.iter().enumerate() {
        let listed: Vec<ModelName> = (0..3)
            .map(|k| ModelName::new(MODELS[(i + 3 * k) % MODELS.len()]))
            .collect();
        b.state.record_probe(true, 1, 1);
        // Through `apply_inventory`, as a probe does: it seeds the residency routing
        // reads, so one model really is resident.
        let inventory = Inventory {
            resident: [listed[0].clone()].into_iter().collect(),
            models: listed.into_iter().collect(),
            ..Default::default()
        };
        b.state.apply_inventory(inventory, 1);
    }
    pool
}

fn pick(c: &mut Criterion) {
    let mut group = c.benchmark_group("pick_backend");
    for n in [10, 100, 1_000, 10_000] {
        for strategy in ["least_loaded", "affinity", "round_robin"] {
            let pool = fleet(strategy, n);
            let router = Router::default();
            let mut key = 0u64;
            group.bench_with_input(BenchmarkId::new(strategy, n), &n, |b, _| {
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
    }
    // A probe that finds a box's models changed makes the next pick rebuild the
    // model index: the price of one inventory change.
    for n in [1_000, 10_000] {
        let pool = fleet("affinity", n);
        let router = Router::default();
        let mut sent = 1;
        group.bench_with_input(BenchmarkId::new("affinity_after_change", n), &n, |b, _| {
            b.iter(|| {
                sent += 1;
                let extra = ModelName::new(MODELS[(sent % 2) as usize]);
                let inventory = Inventory {
                    models: [ModelName::new("llama3"), extra].into_iter().collect(),
                    ..Default::default()
                };
                pool.load().backends[0]
                    .state
                    .apply_inventory(inventory, sent);
                let req = RouteRequest::new(Need::Model(ModelName::new("llama3")));
                router
                    .pick_backend(&pool.load(), black_box(&req), &[])
                    .map(|p| p.reason)
            })
        });
    }
    group.finish();
}

/// A chat body of about `size` bytes: the model first, then a long history.
fn chat_body(size: usize) -> Vec<u8> {
    let mut turns = Vec::new();
    let mut len = 0;
    let mut i = 0;
    while len < size {
        let role = if i % 2 == 0 { "user" } else { "assistant" };
        let turn =
            format!(r#"{{"role":"{role}","content":"message number {i} with some words in it"}}"#);
        len += turn.len() + 1;
        turns.push(turn);
        i += 1;
    }
    format!(
        r#"{{"model":"llama3","messages":[{{"role":"system","content":"be brief"}},{}],"stream":true}}"#,
        turns.join(",")
    )
    .into_bytes()
}

fn sniff(c: &mut Criterion) {
    let mut group = c.benchmark_group("sniff");
    for (label, size) in [("1KiB", 1024), ("60KiB", 60 * 1024)] {
        let body = Bytes::from(chat_body(size));
        group.bench_function(BenchmarkId::new("one_chunk", label), |b| {
            b.iter(|| match sniff_body(black_box(&body), &["model"]) {
                Sniff::Complete(f) => f.conversation_key("llama3:latest"),
                _ => None,
            })
        });
        // The model known, the body's length unknown (no Content-Length): reading
        // stops at the first verdict, as the proxy's loop does.
        let chunks: Vec<Bytes> = body.chunks(1024).map(Bytes::copy_from_slice).collect();
        group.bench_function(BenchmarkId::new("1KiB_chunks", label), |b| {
            b.iter(|| {
                let mut sniffer = BodySniffer::new(&["model"], false, 32 * 1024);
                for chunk in &chunks {
                    if let Some(v) = sniffer.push(chunk.clone()) {
                        return v;
                    }
                }
                sniffer.finish()
            })
        });
    }
    group.finish();
}

fn observe(c: &mut Criterion) {
    let token = Bytes::from_static(
        b"{\"model\":\"llama3\",\"created_at\":\"2026-01-01T00:00:00.000000Z\",\"message\":{\"role\":\"assistant\",\"content\":\" word\"},\"done\":false}\n",
    );
    let sse = Bytes::from_static(
        b"data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"llama3\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\" word\"},\"finish_reason\":null}]}\n\n",
    );
    let mut group = c.benchmark_group("observe_chunk");
    for (label, chunk) in [("ndjson", token), ("sse", sse)] {
        let mut observer = StreamObserver::default();
        group.bench_function(label, |b| b.iter(|| observer.feed(black_box(&chunk))));
    }
    group.finish();
}

fn table(c: &mut Criterion) {
    let yaml = fleet_yaml("affinity", 1_000);
    let config = Config::parse(&yaml, "bench").expect("bench config");
    let mut group = c.benchmark_group("table_1000_backends");
    group.sample_size(20);
    group.bench_function("rebuild", |b| {
        let pool = fleet("affinity", 1_000);
        b.iter(|| pool.publish(config.clone()))
    });
    group.bench_function("reload_parse_and_publish", |b| {
        let pool = fleet("affinity", 1_000);
        b.iter(|| pool.publish(Config::parse(black_box(&yaml), "bench").expect("parses")))
    });
    group.finish();
}

fn record(c: &mut Criterion) {
    let model = ModelName::new("llama3");
    let metrics = corral::metrics::global();
    c.bench_function("metrics_per_request", |b| {
        b.iter(|| {
            metrics.observe_request(black_box(&RequestRecord {
                backend: Some("gpu-1"),
                model: Some(&model),
                endpoint: "chat",
                status: 200,
                duration: Duration::from_millis(1200),
                ttft: Some(Duration::from_millis(180)),
                queue_wait: None,
                tokens: Some(TokenStats {
                    prompt_tokens: 42,
                    completion_tokens: 120,
                    completion_ns: 1_000_000_000,
                    load_ns: 0,
                }),
            }))
        })
    });
}

fn access_line(c: &mut Criterion) {
    // The formatting cost: corral formats the line into a reused per-thread buffer and
    // appends it to an in-memory batch that a writer thread drains.
    let line = AccessLine {
        method: "POST",
        path: "/api/chat",
        endpoint: "chat",
        model: "llama3",
        client: "-",
        backend: "gpu-1",
        route: "affinity",
        status: 200,
        attempts: 1,
        queued_ms: None,
        ttft: Some(Duration::from_micros(180_400)),
        prompt_tokens: Some(42),
        completion_tokens: Some(120),
        duration: Duration::from_micros(1_200_300),
        error: None,
    };
    let mut group = c.benchmark_group("access_log_line");
    for (name, json) in [("text", false), ("json", true)] {
        let mut out = Vec::with_capacity(512);
        group.bench_function(name, |b| {
            b.iter(|| {
                out.clear();
                black_box(&line).format(&mut out, json, std::time::SystemTime::now());
                black_box(out.len())
            })
        });
    }
    group.finish();
}

criterion_group!(benches, pick, sniff, observe, table, record, access_line);
criterion_main!(benches);
