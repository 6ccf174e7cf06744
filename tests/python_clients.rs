//! The official Python clients, unchanged, through corral with a client key: `ollama`
//! reads the key from `OLLAMA_API_KEY`, `openai` takes it as `api_key`. They run from
//! the venv `make pyclients` makes under target/pyclients; without it these tests fail
//! and say so, rather than pass without having run.

mod common;

use common::*;
use serde_json::Value;

const KEY: &str = "sk-python-0123456789";

fn python() -> std::path::PathBuf {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/pyclients/bin/python");
    assert!(
        p.exists(),
        "{} is missing: run `make pyclients` (a venv with the ollama and openai packages)",
        p.display()
    );
    p
}

/// Runs `script` with the venv's python and `env`; its last stdout line is JSON.
async fn run_python(script: &str, env: &[(&str, String)]) -> Value {
    let mut cmd = tokio::process::Command::new(python());
    cmd.arg("-c").arg(script).kill_on_drop(true);
    // Nothing from the environment may stand in for what the test sets.
    for var in [
        "OLLAMA_HOST",
        "OLLAMA_API_KEY",
        "OPENAI_API_KEY",
        "OPENAI_BASE_URL",
    ] {
        cmd.env_remove(var);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = tokio::time::timeout(DEADLINE, cmd.output())
        .await
        .expect("python script hung")
        .expect("run python");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "python failed:\n{stdout}\n{stderr}");
    let last = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(last).unwrap_or_else(|e| panic!("{e}: {stdout}\n{stderr}"))
}

async fn keyed_corral(sim: &Sim) -> Corral {
    let yaml = format!(
        "clients:\n  keys:\n    - {{name: py, key: {KEY}}}\n{}",
        backends_yaml(&[sim], 2)
    );
    let c = start_corral(&yaml).await;
    wait_for("llama3 routable", || async {
        let r = reqwest::Client::new()
            .get(format!("{}/api/tags", c.url()))
            .bearer_auth(KEY)
            .send()
            .await
            .ok()?;
        let v: Value = r.json().await.ok()?;
        (!v["models"].as_array()?.is_empty()).then_some(())
    })
    .await;
    c
}

const OLLAMA_SCRIPT: &str = r#"
import json, ollama
client = ollama.Client()  # OLLAMA_HOST and OLLAMA_API_KEY from the environment
chat = client.chat(model="llama3", messages=[{"role": "user", "content": "hi"}])
chunks = list(client.generate(model="llama3", prompt="why", stream=True))
models = [m.model for m in client.list().models]
try:
    ollama.Client(headers={"Authorization": "Bearer sk-wrong-0123456789"}).chat(
        model="llama3", messages=[{"role": "user", "content": "hi"}])
    refused = None
except ollama.ResponseError as e:
    refused = e.status_code
print(json.dumps({
    "content": chat.message.content,
    "tokens": chat.prompt_eval_count + chat.eval_count + chunks[-1].prompt_eval_count + chunks[-1].eval_count,
    "chunks": len(chunks),
    "models": models,
    "refused": refused,
}))
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ollama_python_client_works_with_ollama_api_key() {
    let sim = start_sim(&["--models", "llama3"]);
    let c = keyed_corral(&sim).await;
    let v = run_python(
        OLLAMA_SCRIPT,
        &[
            ("OLLAMA_HOST", c.addr.to_string()),
            ("OLLAMA_API_KEY", KEY.to_string()),
        ],
    )
    .await;
    assert!(!v["content"].as_str().unwrap_or_default().is_empty(), "{v}");
    assert!(v["chunks"].as_u64() > Some(1), "{v}");
    assert_eq!(v["models"], serde_json::json!(["llama3:latest"]));
    assert_eq!(v["refused"], 401);
    // What the answers reported is what corral booked to the key.
    let view = c.admin("/api/v1/clients").await.expect("clients view");
    let py = &view["clients"][0];
    let booked = py["prompt_tokens"].as_u64().unwrap() + py["completion_tokens"].as_u64().unwrap();
    assert_eq!(Some(booked), v["tokens"].as_u64(), "{view}");
    assert_eq!(sim.stats().await["with_authorization"], 0);
}

const OPENAI_SCRIPT: &str = r#"
import json, os, openai
client = openai.OpenAI(base_url=os.environ["CORRAL_V1"], api_key=os.environ["CORRAL_KEY"])
answer = client.chat.completions.create(
    model="llama3", messages=[{"role": "user", "content": "hi"}])
stream = client.chat.completions.create(
    model="llama3", messages=[{"role": "user", "content": "hi"}], stream=True)
pieces = [c.choices[0].delta.content for c in stream if c.choices and c.choices[0].delta.content]
try:
    openai.OpenAI(base_url=os.environ["CORRAL_V1"], api_key="sk-wrong-0123456789").chat.completions.create(
        model="llama3", messages=[{"role": "user", "content": "hi"}])
    refused = None
except openai.AuthenticationError as e:
    refused = [e.status_code, e.code]
print(json.dumps({
    "content": answer.choices[0].message.content,
    "completion_tokens": answer.usage.completion_tokens,
    "pieces": len(pieces),
    "refused": refused,
}))
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openai_python_package_works_with_api_key() {
    let sim = start_sim(&["--models", "llama3"]);
    let c = keyed_corral(&sim).await;
    let v = run_python(
        OPENAI_SCRIPT,
        &[
            ("CORRAL_V1", format!("{}/v1", c.url())),
            ("CORRAL_KEY", KEY.to_string()),
        ],
    )
    .await;
    assert!(!v["content"].as_str().unwrap_or_default().is_empty(), "{v}");
    assert!(v["completion_tokens"].as_u64() > Some(0), "{v}");
    assert!(v["pieces"].as_u64() > Some(1), "{v}");
    assert_eq!(v["refused"], serde_json::json!([401, "invalid_api_key"]));
    assert_eq!(sim.stats().await["with_authorization"], 0);
}
