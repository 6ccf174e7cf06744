//! Placement under load, without processes: a discrete-time fleet where every request
//! is routed by the real `Router`, holds its slot for a service time (longer when it
//! had to load its model), and waits FIFO when the router says "full". Residency is
//! corral's own belief, changed only by the loads routing causes — as if every box
//! were Ollama with LRU eviction. Demand is sampled as the placement loop does.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;

use super::*;
use crate::config::Config;
use crate::pool::{now_ms, InFlight, Inventory, ModelUse, Pool};

/// Virtual time per step, for demand sampling.
const STEP: Duration = Duration::from_millis(100);

struct Fleet {
    pool: Pool,
    router: Router,
    models: Vec<ModelName>,
    /// (finishes at step, slot, model hold)
    running: Vec<(usize, InFlight, ModelUse)>,
    waiting: HashMap<usize, VecDeque<u64>>,
    /// Loads per (backend, model).
    loads: HashMap<(String, usize), usize>,
    failed: usize,
}

impl Fleet {
    /// `slots[i]` slots on box i, each holding at most `max_models` models; `resident[i]`
    /// is the model index loaded on box i at the start (`None`: empty).
    fn new(slots: &[usize], max_models: usize, models: usize, resident: &[Option<usize>]) -> Fleet {
        let backends: Vec<String> = slots
            .iter()
            .enumerate()
            .map(|(i, s)| format!("{{name: b{i}, url: 'h:{}', max_concurrency: {s}}}", i + 1))
            .collect();
        let yaml = format!("backends: [{}]", backends.join(", "));
        let pool = Pool::new(Config::parse(&yaml, "t").expect("valid test config"));
        let names: Vec<ModelName> = (0..models)
            .map(|m| ModelName::new(&format!("m{m}")))
            .collect();
        for (i, b) in pool.load().backends.iter().enumerate() {
            b.state.record_probe(true, 1, 1);
            // Every box has every model on disk; it is seen once holding `max_models`.
            let full: Vec<ModelName> = names.iter().take(max_models).cloned().collect();
            b.state.residency.apply_probe(&full, 0);
            let inv = Inventory {
                models: names.iter().cloned().collect(),
                resident: resident[i].map(|m| names[m].clone()).into_iter().collect(),
                ..Default::default()
            };
            b.state.apply_inventory(inv, now_ms());
            b.state.observe_service(1_000);
            b.state.observe_load(300);
        }
        Fleet {
            pool,
            router: Router::new(Arc::new(DemandTable::default())),
            models: names,
            running: Vec::new(),
            waiting: HashMap::new(),
            loads: HashMap::new(),
            failed: 0,
        }
    }

    fn send(&mut self, step: usize, model: usize, key: u64) -> bool {
        let req = RouteRequest {
            need: Need::Model(self.models[model].clone()),
            key: Some(key),
            waiting: self.waiting.get(&model).map_or(0, VecDeque::len),
        };
        match self.router.pick_backend(&self.pool.load(), &req, &[]) {
            Ok(pick) => {
                let state = &pick.backend.state;
                let slot = InFlight::acquire(state, None);
                let used = state.residency.use_model(&self.models[model]);
                let mut service = 10;
                if used.loads {
                    *self
                        .loads
                        .entry((pick.backend.name().to_string(), model))
                        .or_default() += 1;
                    service += 3;
                }
                self.running.push((step + service, slot, used));
                true
            }
            Err(NoRoute::Full) => false,
            Err(_) => {
                self.failed += 1;
                true
            }
        }
    }

    /// One step: finish what is due, serve waiters FIFO, then the new arrivals.
    fn step(&mut self, step: usize, arrivals: &[(usize, u64)]) {
        self.running.retain(|(end, _, _)| *end > step);
        for model in 0..self.models.len() {
            while let Some(&key) = self.waiting.get(&model).and_then(|q| q.front()) {
                if !self.send(step, model, key) {
                    break;
                }
                self.waiting.entry(model).or_default().pop_front();
            }
        }
        for &(model, key) in arrivals {
            let queued = self.waiting.get(&model).is_some_and(|q| !q.is_empty());
            if queued || !self.send(step, model, key) {
                self.waiting.entry(model).or_default().push_back(key);
            }
        }
        let queued: HashMap<ModelName, usize> = self
            .waiting
            .iter()
            .map(|(m, q)| (self.models[*m].clone(), q.len()))
            .collect();
        self.router
            .demand()
            .sample(&self.pool.load(), &queued, STEP);
    }

    /// Boxes believed to hold `model` now.
    fn replicas(&self, model: usize) -> usize {
        self.pool
            .load()
            .backends
            .iter()
            .filter(|b| b.state.has_resident(&self.models[model]))
            .count()
    }

    fn total_loads(&self) -> usize {
        self.loads.values().sum()
    }

    fn max_loads_per_pair(&self) -> usize {
        self.loads.values().copied().max().unwrap_or(0)
    }
}

/// Deterministic arrivals: `rate[m]` requests per step on average for model m, spread
/// by a fractional accumulator; keys are conversation ids.
fn arrivals(step: usize, rate: &[f64], acc: &mut [f64]) -> Vec<(usize, u64)> {
    let mut out = Vec::new();
    for (m, r) in rate.iter().enumerate() {
        acc[m] += r;
        while acc[m] >= 1.0 {
            acc[m] -= 1.0;
            out.push((m, (step as u64) << 8 | m as u64));
        }
    }
    out
}

fn run(fleet: &mut Fleet, steps: std::ops::Range<usize>, rate: &[f64]) {
    let mut acc = vec![0.0; rate.len()];
    for step in steps {
        let a = arrivals(step, rate, &mut acc);
        fleet.step(step, &a);
    }
}

#[test]
fn steady_demand_from_an_empty_fleet_settles_with_few_loads() {
    // 4 boxes × 2 slots, one model each; 3 models at 60/30/10 %, ~70 % busy.
    let mut f = Fleet::new(&[2, 2, 2, 2], 1, 3, &[None; 4]);
    let total = 0.55;
    run(&mut f, 0..3000, &[total * 0.6, total * 0.3, total * 0.1]);
    assert_eq!(f.failed, 0);
    assert!(f.total_loads() <= 10, "loads: {:?}", f.loads);
    assert!(f.max_loads_per_pair() <= 3, "loads: {:?}", f.loads);
    assert!(f.replicas(0) >= 2, "the popular model holds two boxes");
    assert!(f.replicas(1) >= 1 && f.replicas(2) >= 1);
}

#[test]
fn the_wrong_placement_is_corrected_then_kept() {
    // Every box starts with the least popular model.
    let mut f = Fleet::new(&[2, 2, 2, 2], 1, 3, &[Some(2); 4]);
    run(&mut f, 0..3000, &[0.33, 0.17, 0.05]);
    assert!(f.replicas(0) >= 2, "{:?}", f.loads);
    let settled = f.total_loads();
    run(&mut f, 3000..6000, &[0.33, 0.17, 0.05]);
    assert!(
        f.total_loads() - settled <= 2,
        "a settled placement keeps still: {:?}",
        f.loads
    );
}

#[test]
fn a_demand_shift_moves_the_placement() {
    let mut f = Fleet::new(&[2, 2, 2, 2], 1, 3, &[Some(0), Some(0), Some(1), Some(2)]);
    run(&mut f, 0..2000, &[0.33, 0.17, 0.05]);
    assert!(f.replicas(0) >= 2);
    // Model 2 becomes the popular one.
    run(&mut f, 2000..5000, &[0.05, 0.17, 0.33]);
    assert!(f.replicas(2) >= 2, "loads: {:?}", f.loads);
    assert!(
        f.replicas(0) >= 1,
        "the old favourite keeps a box: {:?}",
        f.loads
    );
    assert!(f.max_loads_per_pair() <= 4, "loads: {:?}", f.loads);
}

#[test]
fn a_load_never_evicts_the_last_copy_of_a_busy_model_when_it_can_wait() {
    let p = Fleet::new(&[1, 1], 1, 2, &[Some(0), Some(1)]);
    let t = p.pool.load();
    let b0 = t.get("b0").unwrap().state.clone();
    // m0 on b0 is busy; b1 is idle but its m1 is in steady demand.
    let _busy = (
        InFlight::acquire(&b0, None),
        b0.residency.use_model(&p.models[0]),
    );
    p.router.demand().set(
        &p.models[1],
        Demand {
            average: 0.8,
            now: 0,
        },
    );
    let pick = p.router.pick_backend(
        &t,
        &RouteRequest::new(Need::Model(p.models[0].clone())),
        &[],
    );
    assert_eq!(pick.unwrap_err(), NoRoute::Full);
    // Once m1's demand is gone, its box may be taken.
    p.router.demand().set(&p.models[1], Demand::default());
    let mut req = RouteRequest::new(Need::Model(p.models[0].clone()));
    req.waiting = 3;
    let pick = p.router.pick_backend(&t, &req, &[]).unwrap();
    assert_eq!(
        (pick.backend.name(), pick.reason),
        ("b1", RouteReason::Cold)
    );
}

#[test]
fn with_no_box_holding_the_model_the_cheapest_eviction_wins() {
    // b0 has room for a second model, b1 and b2 hold busy-demand models.
    let f = Fleet::new(&[2, 2, 2], 1, 3, &[Some(0), Some(1), Some(1)]);
    let t = f.pool.load();
    t.get("b0").unwrap().state.residency.learn_capacity(2);
    let pick = f
        .router
        .pick_backend(
            &t,
            &RouteRequest::new(Need::Model(f.models[2].clone())),
            &[],
        )
        .unwrap();
    assert_eq!(
        (pick.backend.name(), pick.reason),
        ("b0", RouteReason::Cold)
    );
    // Without room anywhere: the model with a spare copy (m1 on two boxes) gives one up.
    let f = Fleet::new(&[2, 2, 2], 1, 3, &[Some(0), Some(1), Some(1)]);
    let t = f.pool.load();
    f.router.demand().set(
        &f.models[0],
        Demand {
            average: 1.0,
            now: 1,
        },
    );
    f.router.demand().set(
        &f.models[1],
        Demand {
            average: 1.0,
            now: 1,
        },
    );
    let pick = f
        .router
        .pick_backend(
            &t,
            &RouteRequest::new(Need::Model(f.models[2].clone())),
            &[],
        )
        .unwrap();
    assert!(
        matches!(pick.backend.name(), "b1" | "b2"),
        "{}",
        pick.backend.name()
    );
}

proptest! {
    // A fixed seed: these cases are whole fleet simulations, and CI must judge the
    // code, not the draw (change the seed to explore other fleets).
    #![proptest_config(ProptestConfig {
        cases: 48,
        rng_seed: proptest::test_runner::RngSeed::Fixed(0xc0_77a1),
        ..ProptestConfig::default()
    })]

    /// Under steady demand any fleet that can hold every model at once settles: no model
    /// is loaded onto the same box over and over, whatever the box sizes, model count,
    /// skew and starting placement. (A fleet with fewer model places than models must
    /// keep loading, by any policy.)
    #[test]
    fn steady_demand_converges(
        slots in prop::collection::vec(1usize..=4, 2..=6),
        max_models in 1usize..=2,
        weights in prop::collection::vec(1u32..=20, 2..=5),
        busy in 0.3f64..0.8,
        start in prop::collection::vec(prop::option::of(0usize..5), 6),
    ) {
        prop_assume!(slots.len() * max_models >= weights.len());
        let capacity: usize = slots.iter().sum();
        let sum: u32 = weights.iter().sum();
        // Concurrency = rate × 10 steps of service; aim at `busy` of the fleet.
        let rate: Vec<f64> = weights
            .iter()
            .map(|w| busy * capacity as f64 / 10.0 * *w as f64 / sum as f64)
            .collect();
        let resident: Vec<Option<usize>> = (0..slots.len())
            .map(|i| start[i].filter(|m| *m < weights.len()))
            .collect();
        let mut f = Fleet::new(&slots, max_models, weights.len(), &resident);
        run(&mut f, 0..2500, &rate);
        prop_assert_eq!(f.failed, 0);
        let settled = f.loads.clone();
        run(&mut f, 2500..5000, &rate);
        let late: usize = f.total_loads() - settled.values().sum::<usize>();
        // Boxes holding two models share their slots between them, so a tight fleet
        // may still move a model now and then; it must not keep doing so.
        prop_assert!(late <= 2 * slots.len(), "late loads {} over {:?} -> {:?}", late, settled, f.loads);
        prop_assert!(f.max_loads_per_pair() <= 6, "loads: {:?}", f.loads);
    }
}
