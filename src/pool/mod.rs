//! The backend pool: the current `RoutingTable` behind an `ArcSwap`, and the registry of
//! live per-backend state that outlives table rebuilds.

mod passive;
mod state;
mod table;

pub use passive::{now_ms, EjectPolicy, PassiveHealth};
pub use state::{BackendState, HealthChange, InFlight, Inventory, SlotWatcher};
pub use table::{Backend, RoutingTable};

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use tokio::sync::Notify;

use crate::config::Config;

pub struct Pool {
    table: ArcSwap<RoutingTable>,
    /// Live state by backend name. Only touched when a table is built, never per request.
    states: Mutex<HashMap<String, Arc<BackendState>>>,
    /// Wakes the health checker when the table changes, so new backends are probed
    /// before they are trusted instead of waiting a full interval.
    pub changed: Notify,
}

impl Pool {
    pub fn new(config: Config) -> Pool {
        let states = Mutex::new(HashMap::new());
        let table = build_table(Arc::new(config), &states);
        Pool {
            table: ArcSwap::from_pointee(table),
            states,
            changed: Notify::new(),
        }
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
        let table = build_table(Arc::new(config), &self.states);
        self.table.store(Arc::new(table));
        self.changed.notify_one();
    }
}

fn build_table(
    config: Arc<Config>,
    states: &Mutex<HashMap<String, Arc<BackendState>>>,
) -> RoutingTable {
    let mut states = states.lock().unwrap_or_else(|p| p.into_inner());
    let backends: Vec<Arc<Backend>> = config
        .backends
        .iter()
        .map(|b| {
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
                config: b.clone(),
                state,
            })
        })
        .collect();
    // Forget state of removed backends; in-flight requests still hold their own Arc.
    states.retain(|name, _| backends.iter().any(|b| b.name() == name));
    RoutingTable { backends, config }
}

#[cfg(test)]
mod tests {
    use super::*;

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
