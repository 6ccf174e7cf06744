use std::collections::{HashMap, HashSet};
use std::time::Duration;

use super::*;
use crate::config::Config;
use crate::pool::{InFlight, Inventory, Pool};

/// A pool whose backends have passed a probe and hold `models` (a `*` suffix marks a
/// model as resident).
fn pool(yaml: &str, models: &[(&str, &[&str])]) -> Pool {
    let pool = Pool::new(Config::parse(yaml, "t").unwrap());
    let models: HashMap<_, _> = models.iter().cloned().collect();
    for b in &pool.load().backends {
        b.state.record_probe(true, 1, 1);
        let names = models[b.name()];
        let inv = Inventory {
            models: names
                .iter()
                .map(|m| ModelName::new(m.trim_end_matches('*')))
                .collect(),
            resident: names
                .iter()
                .filter(|m| m.ends_with('*'))
                .map(|m| ModelName::new(m.trim_end_matches('*')))
                .collect(),
            ..Default::default()
        };
        b.state.apply_inventory(inv, crate::pool::now_ms());
    }
    pool
}

/// One request for `model` out on `state`, as the proxy counts it.
fn serving(
    state: &Arc<crate::pool::BackendState>,
    model: &str,
) -> (InFlight, crate::pool::ModelUse) {
    (
        InFlight::acquire(state, None),
        state.residency.use_model(&ModelName::new(model)),
    )
}

fn req(model: &str) -> RouteRequest {
    RouteRequest::new(Need::Model(ModelName::new(model)))
}

fn keyed(model: &str, key: u64) -> RouteRequest {
    RouteRequest {
        key: Some(key),
        ..req(model)
    }
}

const THREE: &str =
    "routing: {strategy: least_loaded}\nbackends: [{name: a, url: 'h:1', max_concurrency: 2}, \
    {name: b, url: 'h:2', max_concurrency: 2}, {name: c, url: 'h:3', max_concurrency: 4}]";

const FOUR: &str = "backends: [{name: a, url: 'h:1', max_concurrency: 2}, {name: b, url: 'h:2', max_concurrency: 2}, \
    {name: c, url: 'h:3', max_concurrency: 2}, {name: d, url: 'h:4', max_concurrency: 2}]";

#[test]
fn only_backends_with_the_model_are_candidates() {
    let p = pool(THREE, &[("a", &["llama3"]), ("b", &["qwen"]), ("c", &[])]);
    let r = Router::default();
    for _ in 0..10 {
        assert_eq!(
            r.pick_backend(&p.load(), &req("llama3:latest"), &[])
                .unwrap()
                .backend
                .name(),
            "a"
        );
    }
    assert_eq!(
        r.pick_backend(&p.load(), &req("mistral"), &[]).unwrap_err(),
        NoRoute::ModelNotFound(ModelName::new("mistral"))
    );
    // Tried backends are skipped; nothing left is a 503, not a 404.
    assert_eq!(
        r.pick_backend(&p.load(), &req("llama3"), &["a".into()])
            .unwrap_err(),
        NoRoute::NoHealthy
    );
}

#[test]
fn unhealthy_backends_get_nothing() {
    let p = pool(THREE, &[("a", &["m"]), ("b", &["m"]), ("c", &["m"])]);
    let t = p.load();
    t.get("a").unwrap().state.mark_down();
    t.get("c").unwrap().state.mark_down();
    let r = Router::default();
    for _ in 0..10 {
        assert_eq!(
            r.pick_backend(&t, &req("m"), &[]).unwrap().backend.name(),
            "b"
        );
    }
    t.get("b").unwrap().state.mark_down();
    assert_eq!(
        r.pick_backend(&t, &RouteRequest::new(Need::Any), &[])
            .unwrap_err(),
        NoRoute::NoHealthy
    );
    // With every backend down we cannot say the model does not exist.
    assert_eq!(
        r.pick_backend(&t, &req("zzz"), &[]).unwrap_err(),
        NoRoute::NoHealthy
    );
}

#[test]
fn least_loaded_respects_capacity_shares_ties_and_reports_full() {
    let p = pool(THREE, &[("a", &["m"]), ("b", &["m"]), ("c", &["m"])]);
    let t = p.load();
    let r = Router::default();
    // Fill to 8 in flight: capacity 2/2/4 means c ends with twice a's load.
    let mut held = Vec::new();
    for _ in 0..8 {
        let pick = r.pick_backend(&t, &req("m"), &[]).unwrap();
        held.push(InFlight::acquire(&pick.backend.state, None));
    }
    let load = |n: &str| t.get(n).unwrap().state.in_flight();
    assert_eq!((load("a"), load("b"), load("c")), (2, 2, 4));
    assert_eq!(
        r.pick_backend(&t, &req("m"), &[]).unwrap_err(),
        NoRoute::Full
    );
    drop(held);
    // Idle pool: ties rotate over all three.
    let seen: HashSet<String> = (0..3)
        .map(|_| {
            r.pick_backend(&t, &req("m"), &[])
                .unwrap()
                .backend
                .name()
                .to_string()
        })
        .collect();
    assert_eq!(seen.len(), 3);
}

#[test]
fn round_robin_follows_weights_and_ignores_load() {
    let yaml = "routing: {strategy: round_robin}\nbackends: [{name: a, url: 'h:1', weight: 2}, {name: b, url: 'h:2'}]";
    let p = pool(yaml, &[("a", &["m"]), ("b", &["m"])]);
    let r = Router::default();
    let mut counts = HashMap::new();
    let mut held = Vec::new();
    for _ in 0..30 {
        let pick = r
            .pick_backend(&p.load(), &RouteRequest::new(Need::Any), &[])
            .unwrap();
        assert_eq!(pick.reason, RouteReason::RoundRobin);
        held.push(InFlight::acquire(&pick.backend.state, None));
        *counts.entry(pick.backend.name().to_string()).or_insert(0) += 1;
    }
    assert_eq!((counts["a"], counts["b"]), (20, 10));
}

#[test]
fn pinned_and_targeted() {
    let p = pool(THREE, &[("a", &[]), ("b", &[]), ("c", &[])]);
    let r = Router::default();
    for _ in 0..5 {
        assert_eq!(
            r.pick_backend(&p.load(), &RouteRequest::new(Need::Pinned), &[])
                .unwrap()
                .backend
                .name(),
            "a"
        );
    }
    let named = RouteRequest::new(Need::Named("c".into()));
    let pick = r.pick_backend(&p.load(), &named, &[]).unwrap();
    assert_eq!(
        (pick.backend.name(), pick.reason),
        ("c", RouteReason::Targeted)
    );
    let unknown = RouteRequest::new(Need::Named("zz".into()));
    assert_eq!(
        r.pick_backend(&p.load(), &unknown, &[]).unwrap_err(),
        NoRoute::UnknownBackend("zz".into())
    );
}

#[test]
fn pull_goes_to_a_box_lacking_the_model() {
    let p = pool(THREE, &[("a", &["m"]), ("b", &[]), ("c", &["m"])]);
    let r = Router::default();
    let pull = RouteRequest::new(Need::Lacking(ModelName::new("m")));
    for _ in 0..5 {
        assert_eq!(
            r.pick_backend(&p.load(), &pull, &[])
                .unwrap()
                .backend
                .name(),
            "b"
        );
    }
}

#[test]
fn affinity_prefers_resident_boxes() {
    let p = pool(
        FOUR,
        &[
            ("a", &["m", "x*"]),
            ("b", &["m*"]),
            ("c", &["m*"]),
            ("d", &["m"]),
        ],
    );
    let r = Router::default();
    for key in 0..50 {
        let pick = r.pick_backend(&p.load(), &keyed("m", key), &[]).unwrap();
        assert!(
            matches!(pick.backend.name(), "b" | "c"),
            "{}",
            pick.backend.name()
        );
        assert_eq!(pick.reason, RouteReason::Affinity);
    }
    // Without a key: least loaded among resident boxes.
    let pick = r.pick_backend(&p.load(), &req("m"), &[]).unwrap();
    assert_eq!(pick.reason, RouteReason::Resident);
}

#[test]
fn a_key_sticks_yet_keys_spread() {
    let p = pool(
        FOUR,
        &[
            ("a", &["m*"]),
            ("b", &["m*"]),
            ("c", &["m*"]),
            ("d", &["m*"]),
        ],
    );
    let r = Router::default();
    let t = p.load();
    let home = |k| {
        r.pick_backend(&t, &keyed("m", k), &[])
            .unwrap()
            .backend
            .name()
            .to_string()
    };
    for k in 0..20 {
        assert_eq!(home(k), home(k), "key {k} moved with nothing else changing");
    }
    let spread: HashSet<String> = (0..40).map(home).collect();
    assert_eq!(spread.len(), 4, "40 keys should use every box");
    // Two routers (replicas) agree.
    let other = Router::default();
    for k in 0..20 {
        assert_eq!(
            other
                .pick_backend(&t, &keyed("m", k), &[])
                .unwrap()
                .backend
                .name(),
            home(k)
        );
    }
}

#[test]
fn an_overloaded_home_spills_to_the_next_box() {
    let p = pool(
        FOUR,
        &[
            ("a", &["m*"]),
            ("b", &["m*"]),
            ("c", &["m*"]),
            ("d", &["m*"]),
        ],
    );
    let r = Router::default();
    let t = p.load();
    let key = 7;
    let pick = r.pick_backend(&t, &keyed("m", key), &[]).unwrap();
    assert_eq!(pick.reason, RouteReason::Affinity);
    let home = pick.backend.clone();
    // With every box equally busy the home box keeps its key up to its capacity.
    let even: Vec<_> = t
        .backends
        .iter()
        .map(|b| InFlight::acquire(&b.state, None))
        .collect();
    let pick = r.pick_backend(&t, &keyed("m", key), &[]).unwrap();
    assert_eq!(
        (pick.backend.name(), pick.reason),
        (home.name(), RouteReason::Affinity)
    );
    drop(even);
    let _one = InFlight::acquire(&home.state, None);
    // One in flight at home while the rest of the fleet idles is over bound × the
    // average: spill, to the key's second choice, which every replica computes alike.
    let pick = r.pick_backend(&t, &keyed("m", key), &[]).unwrap();
    assert_eq!(pick.reason, RouteReason::Spill);
    assert_ne!(pick.backend.name(), home.name());
    let again = r.pick_backend(&t, &keyed("m", key), &[]).unwrap();
    assert_eq!(again.backend.name(), pick.backend.name());
}

#[test]
fn cold_load_only_when_cheaper_than_waiting() {
    let p = pool(
        FOUR,
        &[
            ("a", &["m*"]),
            ("b", &["m", "x*"]),
            ("c", &["m", "y*"]),
            ("d", &["z*"]),
        ],
    );
    let r = Router::default();
    let t = p.load();
    let a = t.get("a").unwrap().state.clone();
    let _full = [serving(&a, "m"), serving(&a, "m")];
    // Never saw a request finish: a load is the safe bet, on an idle box.
    let pick = r.pick_backend(&t, &keyed("m", 1), &[]).unwrap();
    assert_eq!(pick.reason, RouteReason::Cold);
    assert!(matches!(pick.backend.name(), "b" | "c"));
    // Requests finish in 1 s, a load takes 20 s: waiting wins, the request queues.
    a.observe_service(1_000);
    for name in ["b", "c"] {
        t.get(name).unwrap().state.observe_load(20_000);
    }
    assert_eq!(
        r.pick_backend(&t, &keyed("m", 1), &[]).unwrap_err(),
        NoRoute::Full
    );
    // With 60 requests ahead the wait (30 s) exceeds the load: go cold.
    let busy = RouteRequest {
        waiting: 60,
        ..keyed("m", 1)
    };
    assert_eq!(
        r.pick_backend(&t, &busy, &[]).unwrap().reason,
        RouteReason::Cold
    );
}

#[test]
fn cold_prefers_idle_boxes() {
    let p = pool(
        FOUR,
        &[
            ("a", &["m", "x*"]),
            ("b", &["m", "y*"]),
            ("c", &[]),
            ("d", &[]),
        ],
    );
    let r = Router::default();
    let t = p.load();
    let _busy = InFlight::acquire(&t.get("a").unwrap().state, None);
    for k in 0..20 {
        let pick = r.pick_backend(&t, &keyed("m", k), &[]).unwrap();
        assert_eq!((pick.backend.name(), pick.reason), ("b", RouteReason::Cold));
    }
}

#[test]
fn a_busy_backend_does_not_attract_traffic() {
    let p = pool(THREE, &[("a", &["m"]), ("b", &["m"]), ("c", &["m"])]);
    let r = Router::default();
    let t = p.load();
    // `a` answered 503 busy with one request out: it counts as full for a while,
    // so although it is the emptiest box, the others take the work.
    t.get("a")
        .unwrap()
        .state
        .passive
        .record_busy(1, Duration::from_secs(60));
    let _x = InFlight::acquire(&t.get("a").unwrap().state, None);
    for _ in 0..4 {
        let pick = r.pick_backend(&t, &req("m"), &[]).unwrap();
        assert_ne!(pick.backend.name(), "a");
    }
}
