//! The model index and large-set sampling: small sets are routed exactly as the old
//! algorithm (`oracle`) routes them; large ones keep keys home, prefer resident boxes
//! and follow weights.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;

use super::sample::{SAMPLE, SMALL_SET};
use super::{
    eviction_cost, oracle, Demand, DemandTable, Need, NoRoute, Pick, RouteReason, RouteRequest,
    Router,
};
use crate::config::Config;
use crate::model::ModelName;
use crate::pool::{now_ms, EjectPolicy, InFlight, Inventory, ModelUse, Pool};

const MODELS: [&str; 4] = ["m0", "m1", "m2", "unlisted"];

#[derive(Debug, Clone)]
struct BoxSpec {
    listed: [bool; 3],
    resident: [bool; 3],
    capacity: usize,
    weight: u32,
    /// 0 routable, 1 down, 2 ejected, 3 draining, 4 busy.
    health: u8,
    in_flight: usize,
    /// In-flight requests held on the first resident model.
    model_holds: usize,
    max_models: usize,
    service_ms: u64,
    load_ms: u64,
}

fn box_spec() -> impl Strategy<Value = BoxSpec> {
    (
        (any::<[bool; 3]>(), any::<[bool; 3]>(), 1..=4usize, 1..=3u32),
        (0..=6u8, 0..=4usize, 0..=2usize, 1..=3usize),
        (
            prop_oneof![Just(0u64), 1..5000u64],
            prop_oneof![Just(0u64), 1..5000u64],
        ),
    )
        .prop_map(
            |((listed, resident, capacity, weight), (health, in_flight, holds, max), (s, l))| {
                BoxSpec {
                    listed,
                    resident,
                    capacity,
                    weight,
                    health: health.saturating_sub(2),
                    in_flight,
                    model_holds: holds,
                    max_models: max,
                    service_ms: s,
                    load_ms: l,
                }
            },
        )
}

/// Holds that keep the generated load alive while the pool is routed.
type Holds = (Vec<InFlight>, Vec<ModelUse>);

fn build(strategy: &str, queue: usize, boxes: &[BoxSpec]) -> (Pool, Holds) {
    let mut yaml = format!("routing: {{strategy: {strategy}, queue_size: {queue}}}\nbackends:\n");
    for (i, b) in boxes.iter().enumerate() {
        yaml.push_str(&format!(
            "  - {{name: b{i}, url: 'h:{}', max_concurrency: {}, weight: {}}}\n",
            i + 1,
            b.capacity,
            b.weight
        ));
    }
    let pool = Pool::new(Config::parse(&yaml, "t").unwrap());
    let mut holds: Holds = (Vec::new(), Vec::new());
    let policy = EjectPolicy {
        after_failures: 1,
        base: Duration::from_secs(600),
        max: Duration::from_secs(600),
    };
    for (b, spec) in pool.load().backends.iter().zip(boxes) {
        let pick = |mask: &[bool; 3]| -> crate::model::ModelSet {
            (0..3)
                .filter(|&k| mask[k])
                .map(|k| ModelName::new(MODELS[k]))
                .collect()
        };
        b.state.record_probe(true, 1, 1);
        let inv = Inventory {
            models: pick(&spec.listed),
            resident: pick(&spec.resident),
            ..Default::default()
        };
        b.state.apply_inventory(inv, now_ms());
        b.state.residency.learn_capacity(spec.max_models);
        match spec.health {
            1 => b.state.mark_down(),
            2 => {
                b.state.passive.record_failure(policy, || true);
            }
            3 => b.state.set_draining(true),
            4 => b.state.passive.record_busy(1, Duration::from_secs(600)),
            _ => {}
        }
        if spec.service_ms > 0 {
            b.state.observe_service(spec.service_ms);
        }
        if spec.load_ms > 0 {
            b.state.observe_load(spec.load_ms);
        }
        holds
            .0
            .extend((0..spec.in_flight).map(|_| InFlight::acquire(&b.state, None)));
        if let Some(k) = (0..3).find(|&k| spec.resident[k]) {
            let m = ModelName::new(MODELS[k]);
            holds
                .1
                .extend((0..spec.model_holds).map(|_| b.state.residency.use_model(&m)));
        }
    }
    (pool, holds)
}

fn need(n: usize) -> impl Strategy<Value = Need> {
    let model = (0..MODELS.len()).prop_map(|k| ModelName::new(MODELS[k]));
    prop_oneof![
        6 => model.clone().prop_map(Need::Model),
        1 => model.prop_map(Need::Lacking),
        1 => (0..=n).prop_map(|i| Need::Named(format!("b{i}"))),
        1 => Just(Need::Any),
        1 => Just(Need::Pinned),
    ]
}

fn outcome(r: Result<Pick, NoRoute>) -> Result<(String, RouteReason, bool), NoRoute> {
    r.map(|p| (p.backend.name().to_string(), p.reason, p.panic))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    /// Every fleet the routing benchmark measured is small: there the router must
    /// choose exactly what the algorithm before the index chose.
    #[test]
    fn small_sets_route_as_before(
        boxes in prop::collection::vec(box_spec(), 1..10),
        strategy in prop_oneof![Just("affinity"), Just("least_loaded"), Just("round_robin")],
        queue in prop_oneof![Just(0usize), Just(64usize)],
        demand in prop::collection::vec((0.0..8.0f64, 0..6usize), 3),
        requests in prop::collection::vec(
            (need(10), prop::option::of(any::<u64>()), 0..4usize, prop::collection::vec(0..10usize, 0..3)),
            1..6,
        ),
    ) {
        let (pool, _holds) = build(strategy, queue, &boxes);
        let table = pool.load();
        let demands = Arc::new(DemandTable::default());
        for (k, (average, now)) in demand.iter().enumerate() {
            demands.set(&ModelName::new(MODELS[k]), Demand { average: *average, now: *now });
        }
        let router = Router::new(demands.clone());
        let mut rotation = 0usize;
        for (need, key, waiting, tried) in requests {
            let req = RouteRequest { need, key, waiting };
            let tried: Vec<String> = tried.iter().map(|i| format!("b{i}")).collect();
            let got = outcome(router.pick_backend(&table, &req, &tried));
            let want = outcome(oracle::pick_backend(&demands, &mut rotation, &table, &req, &tried));
            prop_assert_eq!(got, want, "request {:?} tried {:?}", req, tried);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// Placement's price of a load, which counts the victim's other boxes through the
    /// index and stops counting once they are plenty, is the one the full count gave.
    #[test]
    fn eviction_costs_are_as_before(
        boxes in prop::collection::vec(box_spec(), 1..12),
        demand in prop::collection::vec((0.0..8.0f64, 0..6usize), 3),
    ) {
        let (pool, _holds) = build("affinity", 64, &boxes);
        let table = pool.load();
        let demands = DemandTable::default();
        for (k, (average, now)) in demand.iter().enumerate() {
            demands.set(&ModelName::new(MODELS[k]), Demand { average: *average, now: *now });
        }
        for b in &table.backends {
            prop_assert_eq!(
                eviction_cost(&table, &demands, b),
                oracle::eviction_cost(&table, &demands, b)
            );
        }
    }
}

/// `n` healthy boxes of `capacity` slots that all list `m0`; those `resident(i)` says
/// hold it.
fn large(strategy: &str, names: &[String], resident: impl Fn(usize) -> bool) -> Pool {
    let mut yaml = format!("routing: {{strategy: {strategy}, queue_size: 64}}\nbackends:\n");
    for (i, name) in names.iter().enumerate() {
        yaml.push_str(&format!(
            "  - {{name: {name}, url: 'h:{}', max_concurrency: 2, weight: {}}}\n",
            i + 1,
            1 + i % 3
        ));
    }
    let pool = Pool::new(Config::parse(&yaml, "t").unwrap());
    for (i, b) in pool.load().backends.iter().enumerate() {
        b.state.record_probe(true, 1, 1);
        let m0 = ModelName::new("m0");
        let inv = Inventory {
            models: [m0.clone()].into_iter().collect(),
            resident: resident(i).then_some(m0).into_iter().collect(),
            ..Default::default()
        };
        b.state.apply_inventory(inv, now_ms());
    }
    pool
}

fn names(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("gpu-{i}")).collect()
}

fn keyed(key: u64) -> RouteRequest {
    RouteRequest {
        key: Some(key),
        ..RouteRequest::new(Need::Model(ModelName::new("m0")))
    }
}

#[test]
fn a_key_goes_to_the_same_box_on_every_replica_of_a_large_fleet() {
    let n = 4 * SMALL_SET;
    let a = large("affinity", &names(n), |_| true);
    let b = large("affinity", &names(n), |_| true);
    let (ra, rb) = (Router::default(), Router::default());
    let mut boxes = std::collections::HashSet::new();
    for key in 0..200u64 {
        let key = key.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let pa = ra.pick_backend(&a.load(), &keyed(key), &[]).unwrap();
        let pb = rb.pick_backend(&b.load(), &keyed(key), &[]).unwrap();
        assert_eq!(pa.backend.name(), pb.backend.name());
        assert_eq!(pa.reason, RouteReason::Affinity);
        let again = ra.pick_backend(&a.load(), &keyed(key), &[]).unwrap();
        assert_eq!(again.backend.name(), pa.backend.name());
        boxes.insert(pa.backend.name().to_string());
    }
    assert!(
        boxes.len() > n / 4,
        "keys spread over the fleet: {}",
        boxes.len()
    );
}

#[test]
fn removing_a_box_from_a_large_fleet_moves_few_keys() {
    let all = names(4 * SMALL_SET);
    let removed = &all[17];
    let rest: Vec<String> = all.iter().filter(|n| *n != removed).cloned().collect();
    let (before, after) = (
        large("affinity", &all, |_| true),
        large("affinity", &rest, |_| true),
    );
    let router = Router::default();
    let keys = 2000u64;
    let mut moved = 0;
    for key in 0..keys {
        let key = key.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let was = router
            .pick_backend(&before.load(), &keyed(key), &[])
            .unwrap();
        let is = router
            .pick_backend(&after.load(), &keyed(key), &[])
            .unwrap();
        if was.backend.name() != is.backend.name() {
            moved += 1;
        }
    }
    // Its own keys (1/n) and a share of those whose window it was in (SAMPLE/n).
    let bound = keys as usize * 2 * SAMPLE / all.len();
    assert!(
        moved <= bound,
        "{moved} of {keys} keys moved (bound {bound})"
    );
}

#[test]
fn a_large_set_takes_a_resident_box_with_room_before_a_cold_one() {
    // 10 resident boxes among 200 that list the model; all full but one.
    let pool = large("affinity", &names(200), |i| i % 20 == 0);
    let table = pool.load();
    let mut holds = Vec::new();
    for b in table.backends.iter().filter(|b| b.name() != "gpu-60") {
        if b.state.has_resident(&ModelName::new("m0")) {
            holds.push(InFlight::acquire(&b.state, None));
            holds.push(InFlight::acquire(&b.state, None));
        }
    }
    let router = Router::default();
    for key in 0..100u64 {
        let p = router.pick_backend(&table, &keyed(key), &[]).unwrap();
        assert_eq!(p.backend.name(), "gpu-60");
    }
    let keyless = RouteRequest::new(Need::Model(ModelName::new("m0")));
    for _ in 0..50 {
        let p = router.pick_backend(&table, &keyless, &[]).unwrap();
        assert_eq!(
            (p.backend.name(), p.reason),
            ("gpu-60", RouteReason::Resident)
        );
    }
}

#[test]
fn a_large_set_loads_cold_only_where_no_box_holds_the_model() {
    let pool = large("affinity", &names(200), |_| false);
    let router = Router::default();
    let p = router.pick_backend(&pool.load(), &keyed(7), &[]).unwrap();
    assert_eq!(p.reason, RouteReason::Cold);
}

#[test]
fn weighted_round_robin_over_a_large_set_follows_weights() {
    let pool = large("round_robin", &names(3 * SMALL_SET), |_| true);
    let table = pool.load();
    let total: usize = table
        .backends
        .iter()
        .map(|b| b.config.weight as usize)
        .sum();
    // Round robin ignores load: full boxes take their turns too.
    let _full: Vec<InFlight> = table
        .backends
        .iter()
        .step_by(5)
        .flat_map(|b| {
            [
                InFlight::acquire(&b.state, None),
                InFlight::acquire(&b.state, None),
            ]
        })
        .collect();
    let router = Router::default();
    let req = RouteRequest::new(Need::Model(ModelName::new("m0")));
    let mut counts: HashMap<String, usize> = HashMap::new();
    for _ in 0..total {
        let p = router.pick_backend(&table, &req, &[]).unwrap();
        *counts.entry(p.backend.name().to_string()).or_default() += 1;
    }
    for b in &table.backends {
        assert_eq!(counts[b.name()], b.config.weight as usize, "{}", b.name());
    }
}

#[test]
fn pinned_and_named_in_a_large_fleet_are_exact() {
    let pool = large("least_loaded", &names(2 * SMALL_SET), |_| true);
    let table = pool.load();
    table.get("gpu-0").unwrap().state.mark_down();
    let router = Router::default();
    let pinned = router
        .pick_backend(&table, &RouteRequest::new(Need::Pinned), &["gpu-1".into()])
        .unwrap();
    // Names sort as text: gpu-0 is down and gpu-1 tried, so gpu-10 is lowest.
    assert_eq!(
        (pinned.backend.name(), pinned.reason),
        ("gpu-10", RouteReason::Pinned)
    );
    let named = RouteRequest::new(Need::Named("gpu-99".into()));
    assert_eq!(
        router
            .pick_backend(&table, &named, &[])
            .unwrap()
            .backend
            .name(),
        "gpu-99"
    );
    let unknown = RouteRequest::new(Need::Named("gpu-x".into()));
    assert!(matches!(
        router.pick_backend(&table, &unknown, &[]),
        Err(NoRoute::UnknownBackend(_))
    ));
}

#[test]
fn a_large_fleet_all_ejected_routes_in_panic_mode() {
    let pool = large("least_loaded", &names(2 * SMALL_SET), |_| true);
    let table = pool.load();
    let policy = EjectPolicy {
        after_failures: 1,
        base: Duration::from_secs(600),
        max: Duration::from_secs(600),
    };
    for b in &table.backends {
        b.state.passive.record_failure(policy, || true);
    }
    let p = Router::default()
        .pick_backend(&table, &keyed(1), &[])
        .unwrap();
    assert!(p.panic);
}

#[test]
fn the_index_follows_inventory_changes_between_table_rebuilds() {
    for n in [4, 2 * SMALL_SET] {
        let pool = large("affinity", &names(n), |_| true);
        let table = pool.load();
        let router = Router::default();
        let new = RouteRequest::new(Need::Model(ModelName::new("new")));
        assert!(matches!(
            router.pick_backend(&table, &new, &[]),
            Err(NoRoute::ModelNotFound(_))
        ));
        let b = table.get("gpu-3").unwrap();
        let inv = Inventory {
            models: [ModelName::new("new")].into_iter().collect(),
            ..Default::default()
        };
        b.state.apply_inventory(inv, now_ms());
        let p = router.pick_backend(&table, &new, &[]).unwrap();
        assert_eq!((p.backend.name(), p.reason), ("gpu-3", RouteReason::Cold));
        // A load corral starts makes it resident there at once.
        let _loading = b.state.residency.use_model(&ModelName::new("new"));
        let p = router.pick_backend(&table, &new, &[]).unwrap();
        assert_eq!(p.reason, RouteReason::Resident);
    }
}

#[test]
fn a_fleet_between_index_rebuilds_routes_by_the_live_inventory() {
    // Above the size whose index is rebuilt on every change: the changes below leave
    // it stale for a while, and picks must check it against the live state.
    let pool = large("affinity", &names(1100), |i| i % 2 == 0);
    let table = pool.load();
    let router = Router::default();
    router.pick_backend(&table, &keyed(1), &[]).unwrap();
    let other = Inventory {
        models: [ModelName::new("m1")].into_iter().collect(),
        ..Default::default()
    };
    for b in table.backends.iter().filter(|b| b.name() != "gpu-500") {
        b.state.apply_inventory(other.clone(), now_ms());
    }
    for key in 0..50u64 {
        let p = router.pick_backend(&table, &keyed(key), &[]).unwrap();
        assert_eq!(p.backend.name(), "gpu-500");
    }
    // A model added since the index was built is never called "not found".
    let new = ModelName::new("new");
    let gained = Inventory {
        models: [new.clone()].into_iter().collect(),
        ..Default::default()
    };
    table
        .get("gpu-7")
        .unwrap()
        .state
        .apply_inventory(gained, now_ms());
    match router.pick_backend(&table, &RouteRequest::new(Need::Model(new)), &[]) {
        Ok(p) => assert_eq!(p.backend.name(), "gpu-7"),
        Err(e) => assert_eq!(e, NoRoute::NoHealthy),
    }
}
