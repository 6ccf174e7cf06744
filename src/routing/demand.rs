//! How many slots each model needs: a time-weighted moving average of its requests in
//! flight plus those waiting in the queue (Little's law: arrival rate × service time),
//! sampled a few times a second. Placement reads it to decide whether a model deserves
//! another box and whether the model a load would evict can spare one.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;

use crate::model::ModelName;
use crate::pool::RoutingTable;

/// How fast demand forgets: a model that stops being asked for loses its claim on
/// boxes after a few of these.
const HALF_LIFE: Duration = Duration::from_secs(15);

/// Demand below this (in slots) is none: the model's boxes may be taken.
pub(super) const IDLE: f64 = 0.05;

/// One model's demand, in slots.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Demand {
    /// The moving average.
    pub average: f64,
    /// In flight + queued at the last sample.
    pub now: usize,
}

impl Demand {
    /// What placement plans for: a burst counts at once, a lull only slowly.
    pub fn slots(&self) -> f64 {
        self.average.max(self.now as f64)
    }
}

#[derive(Debug, Default)]
pub struct DemandTable {
    models: ArcSwap<HashMap<ModelName, Demand>>,
}

impl DemandTable {
    pub fn get(&self, model: &ModelName) -> Demand {
        self.models.load().get(model).copied().unwrap_or_default()
    }

    /// Every model with demand, for status pages.
    pub fn all(&self) -> Vec<(ModelName, Demand)> {
        let mut v: Vec<_> = self
            .models
            .load()
            .iter()
            .map(|(m, d)| (m.clone(), *d))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// Folds one sample, taken `dt` after the previous one, into the averages.
    /// `queued` counts waiters per model; in-flight counts come from the table's
    /// residency records. Models with no demand left are dropped, so the table only
    /// ever holds models the fleet serves or was asked for.
    pub fn sample(&self, table: &RoutingTable, queued: &HashMap<ModelName, usize>, dt: Duration) {
        let mut now: HashMap<ModelName, usize> = queued.clone();
        for b in &table.backends {
            for r in b.state.residency.models() {
                let n = r.in_flight();
                if n > 0 {
                    *now.entry(r.model.clone()).or_default() += n;
                }
            }
        }
        let keep = 0.5f64.powf(dt.as_secs_f64() / HALF_LIFE.as_secs_f64());
        let old = self.models.load();
        let mut next = HashMap::with_capacity(old.len().max(now.len()));
        for (model, d) in old.iter() {
            let n = now.get(model).copied().unwrap_or(0);
            let average = d.average * keep + n as f64 * (1.0 - keep);
            if average >= IDLE / 10.0 || n > 0 {
                next.insert(model.clone(), Demand { average, now: n });
            }
        }
        for (model, n) in now {
            next.entry(model).or_insert(Demand {
                average: n as f64 * (1.0 - keep),
                now: n,
            });
        }
        self.models.store(Arc::new(next));
    }

    /// Sets a model's demand directly (tests and benchmarks of the placement logic).
    pub fn set(&self, model: &ModelName, demand: Demand) {
        self.models.rcu(|m| {
            let mut m = HashMap::clone(m);
            m.insert(model.clone(), demand);
            m
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::pool::Pool;

    #[test]
    fn demand_follows_load_and_fades() {
        let pool = Pool::new(Config::parse("backends: [{name: a, url: 'h:1'}]", "t").unwrap());
        let m = ModelName::new("m");
        let a = pool.load().get("a").unwrap().state.clone();
        let d = DemandTable::default();
        let holds: Vec<_> = (0..3).map(|_| a.residency.use_model(&m)).collect();
        let queued = HashMap::from([(m.clone(), 1)]);
        for _ in 0..30 {
            d.sample(&pool.load(), &queued, HALF_LIFE);
        }
        assert!((d.get(&m).average - 4.0).abs() < 0.01, "{:?}", d.get(&m));
        assert_eq!(d.get(&m).now, 4);
        drop(holds);
        d.sample(&pool.load(), &HashMap::new(), HALF_LIFE);
        assert_eq!(d.get(&m).now, 0);
        assert!((d.get(&m).average - 2.0).abs() < 0.01);
        assert_eq!(d.get(&m).slots(), d.get(&m).average);
        for _ in 0..20 {
            d.sample(&pool.load(), &HashMap::new(), HALF_LIFE);
        }
        assert!(d.all().is_empty(), "forgotten models leave the table");
    }
}
