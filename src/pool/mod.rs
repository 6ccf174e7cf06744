//! The backend pool: the current `RoutingTable` behind an `ArcSwap`, and the registry of
//! live per-backend state that outlives table rebuilds.

mod index;
mod passive;
mod residency;
mod state;
mod table;
pub mod writer;

pub use index::{Member, Members, ModelEntry, ModelIndex, RingSlot};
pub use passive::{now_ms, EjectPolicy, FailureVerdict};
pub use residency::{ModelInFlight, ModelUse};
pub use state::{BackendState, HealthChange, InFlight, Inventory, SlotWatcher};
pub use table::{Backend, BackendHeaders, RoutingTable};
pub use writer::{Durability, PoolWriter, Upserted};

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use arc_swap::ArcSwap;
use tokio::sync::Notify;

use crate::clients::{ClientStates, ClientTable};
use crate::config::{BackendConfig, Config};

pub struct Pool {
    table: ArcSwap<RoutingTable>,
    /// Live state by backend name. Only touched when a table is built, never per request.
    states: Mutex<HashMap<String, Arc<BackendState>>>,
    /// Live state of client keys by name, kept the same way.
    client_states: ClientStates,
    /// What the table is built from. Held while a table is built and stored, so two
    /// writers (a reload and an admin call) publish in the order they changed it.
    desired: Mutex<Desired>,
    /// Maintenance mode off: this replica takes proxied requests.
    serving: AtomicBool,
    /// SIGTERM came: this replica is draining to exit (not serving, for another reason).
    stopping: AtomicBool,
    /// An upgrade's successor took the sockets over: each answer closes its connection,
    /// so clients reconnect to the new process instead of reusing one this process
    /// will drop when it stops accepting.
    handing_over: AtomicBool,
    /// Wakes the health checker when the table changes, so new backends are probed
    /// before they are trusted instead of waiting a full interval.
    pub changed: Notify,
}

/// The desired pool: the YAML config and the backends added at run time.
struct Desired {
    config: Arc<Config>,
    /// Admin-API backends, after the YAML's. A YAML backend of the same name wins.
    dynamic: Vec<BackendConfig>,
}

impl Pool {
    pub fn new(config: Config) -> Pool {
        Self::with_dynamic(config, Vec::new())
    }

    /// A pool of the YAML's backends plus `dynamic` ones (restored from disk).
    pub fn with_dynamic(config: Config, dynamic: Vec<BackendConfig>) -> Pool {
        let states = Mutex::new(HashMap::new());
        let client_states = ClientStates::default();
        let desired = Desired {
            config: Arc::new(config),
            dynamic,
        };
        let table = build_table(&desired, &states, &client_states);
        Pool {
            table: ArcSwap::from_pointee(table),
            states,
            client_states,
            desired: Mutex::new(desired),
            serving: AtomicBool::new(true),
            stopping: AtomicBool::new(false),
            handing_over: AtomicBool::new(false),
            changed: Notify::new(),
        }
    }

    fn desired(&self) -> MutexGuard<'_, Desired> {
        self.desired.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The current table. Cheap; do not hold it across an await.
    pub fn load(&self) -> arc_swap::Guard<Arc<RoutingTable>> {
        self.table.load()
    }

    pub fn snapshot(&self) -> Arc<RoutingTable> {
        self.table.load_full()
    }

    /// Publishes a table built from a new config. Backends that stay keep their state.
    pub fn publish(&self, config: Config) {
        let mut desired = self.desired();
        desired.config = Arc::new(config);
        self.store(&desired);
    }

    /// The YAML config currently applied (without run-time backends).
    pub fn yaml_config(&self) -> Arc<Config> {
        self.desired().config.clone()
    }

    /// The run-time backends.
    pub fn dynamic_backends(&self) -> Vec<BackendConfig> {
        self.desired().dynamic.clone()
    }

    /// Changes the run-time backends with `f` and publishes the result if `f` succeeds.
    /// Returns what `f` returned and the new list (for persisting it).
    pub fn update_dynamic<T, E>(
        &self,
        f: impl FnOnce(&Config, &mut Vec<BackendConfig>) -> Result<T, E>,
    ) -> Result<(T, Vec<BackendConfig>), E> {
        let mut desired = self.desired();
        let mut dynamic = desired.dynamic.clone();
        let out = f(&desired.config, &mut dynamic)?;
        desired.dynamic = dynamic;
        self.store(&desired);
        Ok((out, desired.dynamic.clone()))
    }

    /// Maintenance mode: whether new proxied requests are taken.
    pub fn is_serving(&self) -> bool {
        self.serving.load(Ordering::Relaxed)
    }

    pub fn set_serving(&self, on: bool) {
        self.serving.store(on, Ordering::Relaxed);
    }

    /// Stops taking requests because the process is about to exit.
    pub fn begin_shutdown(&self) {
        self.stopping.store(true, Ordering::Relaxed);
        self.set_serving(false);
    }

    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::Relaxed)
    }

    /// The listening sockets go to an upgrade's successor.
    pub fn begin_hand_over(&self) {
        self.handing_over.store(true, Ordering::Relaxed);
    }

    pub fn is_handing_over(&self) -> bool {
        self.handing_over.load(Ordering::Relaxed)
    }

    fn store(&self, desired: &Desired) {
        let table = build_table(desired, &self.states, &self.client_states);
        self.table.store(Arc::new(table));
        self.changed.notify_one();
    }
}

fn build_table(
    desired: &Desired,
    states: &Mutex<HashMap<String, Arc<BackendState>>>,
    client_states: &ClientStates,
) -> RoutingTable {
    let mut states = states.lock().unwrap_or_else(|p| p.into_inner());
    let yaml = &desired.config;
    let dynamic: Vec<&BackendConfig> = desired
        .dynamic
        .iter()
        .filter(|d| !yaml.backends.iter().any(|b| b.name == d.name))
        .collect();
    // The table's config lists every backend it routes to, YAML first.
    let config = if dynamic.is_empty() {
        yaml.clone()
    } else {
        let mut merged = Config::clone(yaml);
        merged.backends.extend(dynamic.iter().map(|b| (*b).clone()));
        Arc::new(merged)
    };
    let backends: Vec<Arc<Backend>> = config
        .backends
        .iter()
        .enumerate()
        .map(|(i, b)| {
            let state = states
                .entry(b.name.clone())
                .or_insert_with(|| Arc::new(BackendState::new(&b.name)))
                .clone();
            // A literal IP needs no lookup: usable as soon as a probe succeeds.
            if let Ok(ip) = b.url.host.parse::<std::net::IpAddr>() {
                state
                    .addr
                    .store(Some(Arc::new(std::net::SocketAddr::new(ip, b.url.port))));
            }
            Arc::new(Backend {
                headers: BackendHeaders::new(b),
                config: b.clone(),
                state,
                dynamic: i >= yaml.backends.len(),
            })
        })
        .collect();
    // Forget state of removed backends; in-flight requests still hold their own Arc.
    states.retain(|name, _| backends.iter().any(|b| b.name() == name));
    let clients = config
        .clients
        .as_ref()
        .map(|c| Arc::new(ClientTable::build(c, client_states)));
    RoutingTable::new(backends, config, clients)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtime_backends_follow_the_yaml_and_lose_to_it_on_a_name_clash() {
        let yaml = |t: &str| Config::parse(t, "t").unwrap();
        let pool = Pool::new(yaml("backends: [{name: a, url: 'h:1'}]"));
        pool.update_dynamic(|_, d| {
            d.push(serde_json::from_str(r#"{"name": "b", "url": "h:2"}"#).unwrap());
            Ok::<_, ()>(())
        })
        .unwrap();
        let t = pool.load();
        let names: Vec<_> = t.backends.iter().map(|b| (b.name(), b.dynamic)).collect();
        assert_eq!(names, vec![("a", false), ("b", true)]);
        assert_eq!(t.config.backends.len(), 2);
        let b_state = t.get("b").unwrap().state.clone();
        drop(t);

        // A reload keeps run-time backends and their state ...
        pool.publish(yaml("backends: [{name: a, url: 'h:1', weight: 2}]"));
        assert!(Arc::ptr_eq(&pool.load().get("b").unwrap().state, &b_state));
        // ... until the YAML defines the same name, which wins.
        pool.publish(yaml("backends: [{name: b, url: 'h:9'}]"));
        let t = pool.load();
        assert_eq!(t.backends.len(), 1);
        assert!(!t.get("b").unwrap().dynamic);
        assert_eq!(t.get("b").unwrap().config.url.port, 9);
        assert_eq!(pool.dynamic_backends().len(), 1);
    }

    #[test]
    fn reload_keeps_state_of_backends_that_stay() {
        let c1 = Config::parse(
            "backends: [{name: a, url: '127.0.0.1:1'}, {name: b, url: 'h:2'}]",
            "t",
        )
        .unwrap();
        let pool = Pool::new(c1);
        let a = pool.load().get("a").unwrap().state.clone();
        let _held = InFlight::acquire(&a, None);
        let c2 =
            Config::parse("backends: [{name: a, url: '127.0.0.1:1', weight: 3}]", "t").unwrap();
        pool.publish(c2);
        let t = pool.load();
        assert_eq!(t.backends.len(), 1);
        assert!(Arc::ptr_eq(&t.get("a").unwrap().state, &a));
        assert_eq!(t.get("a").unwrap().state.in_flight(), 1);
        assert!(t.get("a").unwrap().state.addr.load().is_some());
    }
}
