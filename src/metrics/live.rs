//! Gauges that mirror live state — backend up, in flight, ejected, draining, queue
//! depth, serving — read from the pool when `/metrics` is scraped, as a Prometheus
//! `Collector`. Nothing on the request path touches them, and two scrapes at once
//! never see each other's half-filled values (the old reset-and-refill could).

use std::sync::Arc;

use arc_swap::ArcSwapOption;
use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{IntCounter, IntGauge, IntGaugeVec, Opts};

use crate::pool::Pool;
use crate::routing::AdmissionQueue;

/// What the gauges are read from: the running server's pool and queue.
pub struct LiveSource {
    pub pool: Arc<Pool>,
    pub queue: Arc<AdmissionQueue>,
}

#[derive(Default)]
pub(super) struct LiveCollector {
    source: ArcSwapOption<LiveSource>,
    descs: Vec<Desc>,
}

/// Fresh, empty instances of the live families; one set per scrape.
struct Families {
    up: IntGaugeVec,
    in_flight: IntGaugeVec,
    ejected: IntGaugeVec,
    draining: IntGaugeVec,
    queue_depth: IntGauge,
    serving: IntGauge,
    log_dropped: IntCounter,
}

impl Families {
    fn new() -> Families {
        // The names and help texts are constants: construction cannot fail.
        let vec = |name: &str, help: &str| {
            IntGaugeVec::new(Opts::new(name, help), &["backend"]).expect("valid gauge")
        };
        Families {
            up: vec(
                "corral_backend_up",
                "1 when the backend passes its health probes.",
            ),
            in_flight: vec(
                "corral_backend_in_flight",
                "Requests corral has out at the backend now.",
            ),
            ejected: vec(
                "corral_backend_ejected",
                "1 while live-traffic failures keep the backend out.",
            ),
            draining: vec(
                "corral_backend_draining",
                "1 while an operator drains the backend.",
            ),
            queue_depth: IntGauge::new(
                "corral_queue_depth",
                "Requests waiting in corral for a free backend slot.",
            )
            .expect("valid gauge"),
            serving: IntGauge::new(
                "corral_serving",
                "1 while this replica takes proxied requests (0: maintenance mode).",
            )
            .expect("valid gauge"),
            log_dropped: IntCounter::new(
                "corral_log_lines_dropped_total",
                "Log lines (access log included) dropped because the log writer fell behind.",
            )
            .expect("valid counter"),
        }
    }

    fn all(&self) -> [&dyn Collector; 7] {
        [
            &self.up,
            &self.in_flight,
            &self.ejected,
            &self.draining,
            &self.queue_depth,
            &self.serving,
            &self.log_dropped,
        ]
    }
}

impl LiveCollector {
    pub(super) fn new() -> LiveCollector {
        let descs = Families::new()
            .all()
            .iter()
            .flat_map(|c| c.desc().into_iter().cloned().collect::<Vec<_>>())
            .collect();
        LiveCollector {
            source: ArcSwapOption::empty(),
            descs,
        }
    }

    pub(super) fn set_source(&self, source: LiveSource) {
        self.source.store(Some(Arc::new(source)));
    }

    /// The fleet-wide figures now; before the server is built, an empty queue and
    /// serving.
    pub(super) fn reading(&self) -> LiveReading {
        self.source
            .load()
            .as_ref()
            .map_or(LiveReading::default(), |src| LiveReading {
                queue_depth: src.queue.depth(),
                serving: src.pool.is_serving(),
            })
    }
}

/// The fleet-wide live figures, for the gauges and the JSON overview alike.
#[derive(Debug, Clone, Copy)]
pub(super) struct LiveReading {
    pub(super) queue_depth: usize,
    pub(super) serving: bool,
}

impl Default for LiveReading {
    fn default() -> Self {
        LiveReading {
            queue_depth: 0,
            serving: true,
        }
    }
}

impl Collector for LiveCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let f = Families::new();
        let reading = self.reading();
        f.queue_depth.set(reading.queue_depth as i64);
        f.serving.set(reading.serving as i64);
        f.log_dropped.inc_by(crate::logging::dropped_lines());
        if let Some(src) = self.source.load_full() {
            for b in &src.pool.load().backends {
                let name = [b.name()];
                let s = &b.state;
                f.up.with_label_values(&name).set(s.is_healthy() as i64);
                f.in_flight
                    .with_label_values(&name)
                    .set(s.in_flight() as i64);
                f.ejected
                    .with_label_values(&name)
                    .set(s.passive.is_ejected() as i64);
                f.draining
                    .with_label_values(&name)
                    .set(s.is_draining() as i64);
            }
        }
        f.all().iter().flat_map(|c| c.collect()).collect()
    }
}
