use std::time::{Duration, Instant};

use super::*;
use crate::config::Config;

fn table(yaml: &str, states: &ClientStates) -> ClientTable {
    let c = Config::parse(yaml, "t").unwrap().clients.unwrap();
    ClientTable::build(&c, states)
}

const KEYS: &str = "clients:\n  keys:\n    - {name: a, key: key-a-123456, max_concurrency: 2, requests_per_minute: 3, tokens_per_minute: 100}\n    - {name: b, key: key-b-123456, models: ['phi3']}\n";

#[test]
fn bearer_header_names_the_client() {
    let states = ClientStates::default();
    let t = table(KEYS, &states);
    let auth = |h: &str| {
        t.authenticate(Some(h.as_bytes()))
            .map(|c| c.key.name.clone())
    };
    assert_eq!(auth("Bearer key-a-123456").as_deref(), Some("a"));
    assert_eq!(auth("bearer  key-b-123456 ").as_deref(), Some("b"));
    assert_eq!(auth("Bearer key-a-12345"), None);
    assert_eq!(auth("Basic key-a-123456"), None);
    assert_eq!(auth("key-a-123456"), None);
    assert_eq!(auth("Bearer "), None);
    assert!(t.authenticate(None).is_none());
}

#[test]
fn limits_refuse_and_refusals_take_nothing() {
    let states = ClientStates::default();
    let t = table(KEYS, &states);
    let a = t.authenticate(Some(b"Bearer key-a-123456")).unwrap();
    let now = Instant::now();
    let g1 = a.admit(now).unwrap();
    let g2 = a.admit(now).unwrap();
    assert!(matches!(
        a.admit(now),
        Err(Refused::Concurrency { limit: 2, .. })
    ));
    assert_eq!(a.state.in_flight(), 2, "a refusal holds no slot");
    drop((g1, g2));
    // The third of three requests per minute, then the bucket is empty.
    drop(a.admit(now).unwrap());
    let e = a.admit(now).unwrap_err();
    assert_eq!(retry_after_secs(e.retry_after().unwrap()), 20);
    // Tokens are booked after the answer; the bucket in debt refuses.
    a.record_tokens(150, 0, now);
    let later = now + Duration::from_secs(20);
    let e = a.admit(later).unwrap_err();
    assert_eq!(e.limit_kind(), "tokens");
    let v = ClientView::of(&a.key, &a.state);
    assert_eq!((v.requests, v.prompt_tokens, v.in_flight), (3, 150, 0));
    assert_eq!(
        (
            v.throttled_concurrency,
            v.throttled_requests,
            v.throttled_tokens
        ),
        (1, 1, 1)
    );

    let b = t.authenticate(Some(b"Bearer key-b-123456")).unwrap();
    assert!(b.check_model(&ModelName::new("phi3"), "phi3").is_ok());
    let e = b
        .check_model(&ModelName::new("llama3"), "llama3")
        .unwrap_err();
    assert_eq!(e.to_string(), "client 'b' may not use model 'llama3'");
}

#[test]
fn state_survives_a_reload_for_names_that_stay() {
    let states = ClientStates::default();
    let t1 = table(KEYS, &states);
    let a1 = t1.authenticate(Some(b"Bearer key-a-123456")).unwrap();
    let held = a1.admit(Instant::now()).unwrap();
    // Key of `a` rotated, `b` removed, `c` added.
    let t2 = table(
        "clients:\n  keys:\n    - {name: a, key: rotated-a-123}\n    - {name: c, key: key-c-123456}\n",
        &states,
    );
    assert!(t2.authenticate(Some(b"Bearer key-a-123456")).is_none());
    assert!(t2.authenticate(Some(b"Bearer key-b-123456")).is_none());
    let a2 = t2.authenticate(Some(b"Bearer rotated-a-123")).unwrap();
    assert!(Arc::ptr_eq(&a1.state, &a2.state));
    assert_eq!(a2.state.in_flight(), 1);
    drop(held);
    assert_eq!(a2.state.in_flight(), 0);
    let names: Vec<_> = t2.clients().map(|(k, _)| k.name.as_str()).collect();
    assert_eq!(names, ["a", "c"]);
}
