//! What corral believes a backend holds in memory, kept true between `/api/ps` probes.
//!
//! A probe every few seconds is too slow for routing: with sub-second model loads a box
//! can load and evict several models in between. So the belief is also changed by what
//! corral itself causes. Sending a request for a model the box does not hold starts a
//! load there; when the box already holds as many models as it has been seen to keep
//! together, Ollama evicts its least recently used idle model, and corral marks that
//! one gone at once. A probe result replaces the belief, except for what corral
//! learned after the probe was sent (a load or an eviction it caused since).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::model::ModelName;

use super::passive::now_ms;

/// One model believed resident on the box.
#[derive(Debug)]
pub struct ResidentModel {
    pub model: ModelName,
    /// When corral last sent it work here (ms on `now_ms`'s clock); the eviction order.
    last_used: AtomicU64,
    /// When it became resident as far as corral knows (a probe's time or a load's).
    pub since: u64,
    /// corral started this load itself (rather than a probe reporting the model).
    learned: bool,
    /// Requests corral has out for this model on this box: Ollama never unloads a
    /// runner that is serving.
    in_flight: AtomicUsize,
}

impl ResidentModel {
    fn new(model: ModelName, since: u64, last_used: u64, learned: bool) -> ResidentModel {
        ResidentModel {
            model,
            last_used: AtomicU64::new(last_used),
            since,
            learned,
            in_flight: AtomicUsize::new(0),
        }
    }

    pub fn last_used(&self) -> u64 {
        self.last_used.load(Ordering::Relaxed)
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }
}

/// One request's hold on a resident model; released on drop.
#[derive(Debug)]
pub struct ModelInFlight(Arc<ResidentModel>);

impl Drop for ModelInFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.0.last_used.store(now_ms(), Ordering::Relaxed);
    }
}

/// What sending work for a model to a box did to the belief.
#[derive(Debug)]
pub struct ModelUse {
    pub hold: ModelInFlight,
    /// The model was not resident: this starts a load.
    pub loads: bool,
    /// The model the load evicts, when the box was full.
    pub evicts: Option<ModelName>,
}

#[derive(Debug, Default)]
struct Belief {
    models: Vec<Arc<ResidentModel>>,
    /// Models corral believes it evicted, with when: a probe sent before that moment
    /// may still list them.
    evicted: Vec<(ModelName, u64)>,
}

#[derive(Debug, Default)]
pub struct Residency {
    belief: ArcSwap<Belief>,
    /// The most models this box was ever seen to hold at once: Ollama's
    /// `OLLAMA_MAX_LOADED_MODELS` or its memory, whichever binds (at least 1).
    max_models: AtomicUsize,
}

impl Residency {
    pub fn contains(&self, model: &ModelName) -> bool {
        self.belief.load().models.iter().any(|r| &r.model == model)
    }

    /// The resident models, least recently used first.
    pub fn models(&self) -> Vec<Arc<ResidentModel>> {
        let mut v = self.belief.load().models.clone();
        v.sort_by_key(|r| r.last_used());
        v
    }

    /// Calls `f` with each resident model's name, in no order.
    pub fn each_model(&self, mut f: impl FnMut(&ModelName)) {
        for r in &self.belief.load().models {
            f(&r.model);
        }
    }

    pub fn len(&self) -> usize {
        self.belief.load().models.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many models the box keeps loaded together, as learned so far.
    pub fn max_models(&self) -> usize {
        self.max_models.load(Ordering::Relaxed).max(1)
    }

    /// Loading one more model here would evict another.
    pub fn is_full(&self) -> bool {
        self.len() >= self.max_models()
    }

    /// The model Ollama would evict to load a new one: the least recently used idle
    /// one (a busy runner is not unloaded). `None` when the box has room, or when
    /// every resident model is busy.
    pub fn victim(&self) -> Option<Arc<ResidentModel>> {
        if !self.is_full() {
            return None;
        }
        self.belief
            .load()
            .models
            .iter()
            .filter(|r| r.in_flight() == 0)
            .min_by_key(|r| r.last_used())
            .cloned()
    }

    /// Work for `model` is going to this box now: counts it in flight and, when the
    /// model was not resident, records the load and the eviction it causes.
    pub fn use_model(&self, model: &ModelName) -> ModelUse {
        let now = now_ms();
        if let Some(r) = self.belief.load().models.iter().find(|r| &r.model == model) {
            return ModelUse {
                hold: hold(r, now),
                loads: false,
                evicts: None,
            };
        }
        let victim = self.victim().map(|v| v.model.clone());
        let entry = Arc::new(ResidentModel::new(model.clone(), now, now, true));
        self.belief.rcu(|b| {
            let mut models: Vec<_> = b
                .models
                .iter()
                .filter(|r| Some(&r.model) != victim.as_ref() && &r.model != model)
                .cloned()
                .collect();
            models.push(entry.clone());
            let mut evicted: Vec<_> = b
                .evicted
                .iter()
                .filter(|(m, _)| m != model)
                .cloned()
                .collect();
            evicted.extend(victim.iter().map(|v| (v.clone(), now)));
            Belief { models, evicted }
        });
        super::index::inventory_changed();
        ModelUse {
            hold: hold(&entry, now),
            loads: true,
            evicts: victim,
        }
    }

    /// A probe sent at `sent` (on `now_ms`'s clock) saw `observed` loaded.
    pub fn apply_probe(&self, observed: &[ModelName], sent: u64) {
        let seen = observed.len();
        self.max_models.fetch_max(seen, Ordering::Relaxed);
        let before = self.belief.rcu(|b| {
            let evicted_since =
                |m: &ModelName| b.evicted.iter().any(|(e, at)| e == m && *at >= sent);
            let mut models: Vec<Arc<ResidentModel>> = observed
                .iter()
                .filter(|m| !evicted_since(m))
                .map(|m| match b.models.iter().find(|r| &r.model == m) {
                    Some(r) => r.clone(),
                    None => Arc::new(ResidentModel::new(m.clone(), sent, 0, false)),
                })
                .collect();
            // Not in the answer yet: loads corral started after the probe left, and
            // models corral has requests out for here — Ollama lists a model only once
            // its load is done, so a probe that arrives mid-load does not show it.
            models.extend(
                b.models
                    .iter()
                    .filter(|r| !observed.contains(&r.model))
                    .filter(|r| (r.learned && r.since >= sent) || r.in_flight() > 0)
                    .cloned(),
            );
            let evicted = b
                .evicted
                .iter()
                .filter(|(_, at)| *at >= sent)
                .cloned()
                .collect();
            Belief { models, evicted }
        });
        let after = self.belief.load();
        let same = before.models.len() == after.models.len()
            && before
                .models
                .iter()
                .all(|r| after.models.iter().any(|a| a.model == r.model));
        if !same {
            super::index::inventory_changed();
        }
    }

    /// The box was seen to hold at least `n` models at once (e.g. from its answers).
    pub fn learn_capacity(&self, n: usize) {
        self.max_models.fetch_max(n, Ordering::Relaxed);
    }
}

fn hold(r: &Arc<ResidentModel>, now: u64) -> ModelInFlight {
    r.in_flight.fetch_add(1, Ordering::Relaxed);
    r.last_used.store(now, Ordering::Relaxed);
    ModelInFlight(r.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(s: &str) -> ModelName {
        ModelName::new(s)
    }

    fn names(r: &Residency) -> Vec<String> {
        let mut v: Vec<String> = r.models().iter().map(|x| x.model.to_string()).collect();
        v.sort();
        v
    }

    #[test]
    fn a_load_on_a_full_box_evicts_the_least_recently_used_idle_model() {
        let r = Residency::default();
        r.apply_probe(&[m("a"), m("b")], now_ms());
        assert_eq!(r.max_models(), 2);
        let a = r.use_model(&m("a"));
        assert!(!a.loads && a.evicts.is_none());
        drop(a);
        // `b` was used longest ago (never, by corral), so loading `c` evicts it.
        let c = r.use_model(&m("c"));
        assert!(c.loads);
        assert_eq!(c.evicts, Some(m("b")));
        drop(c);
        assert_eq!(names(&r), ["a:latest", "c:latest"]);
        // A busy model is never the victim, however long ago it was last used.
        let busy_a = r.use_model(&m("a"));
        let _c_again = r.use_model(&m("c"));
        assert_eq!(r.use_model(&m("d")).evicts, None, "both busy: Ollama waits");
        drop(busy_a);
        assert!(r.contains(&m("d")));
    }

    #[test]
    fn a_probe_sent_before_a_load_does_not_undo_it() {
        let r = Residency::default();
        r.apply_probe(&[m("a")], now_ms());
        let before_load = now_ms() - 1;
        assert_eq!(r.use_model(&m("b")).evicts, Some(m("a")));
        // The probe left before the load and still lists `a`, not `b`.
        r.apply_probe(&[m("a")], before_load);
        assert_eq!(names(&r), ["b:latest"]);
        // A later probe is the truth: the box kept both, so it holds two.
        r.apply_probe(&[m("a"), m("b")], now_ms() + 1);
        assert_eq!(names(&r), ["a:latest", "b:latest"]);
        assert_eq!(r.max_models(), 2);
        assert!(r.is_full());
        r.apply_probe(&[], now_ms() + 1);
        assert!(r.is_empty());
    }

    #[test]
    fn a_probe_that_arrives_mid_load_does_not_drop_the_model() {
        let r = Residency::default();
        r.apply_probe(&[], now_ms());
        let loading = r.use_model(&m("a"));
        assert!(loading.loads);
        // Sent after the load began, answered before it finished: `a` is not listed.
        r.apply_probe(&[], now_ms() + 1);
        assert!(
            r.contains(&m("a")),
            "requests are out for it: it is loading"
        );
        drop(loading);
        r.apply_probe(&[], now_ms() + 2);
        assert!(
            !r.contains(&m("a")),
            "nothing out for it and not listed: gone"
        );
    }
}
