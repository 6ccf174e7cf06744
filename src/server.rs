//! Assembles and runs the Pingora server: the proxy service on every `listen` address
//! and the health checker beside it.

use std::path::PathBuf;
use std::sync::Arc;

use pingora::server::configuration::ServerConf;
use pingora::server::{RunArgs, Server};
use pingora::services::background::background_service;

use crate::admin::AdminService;
use crate::config::Config;
use crate::health::HealthChecker;
use crate::pool::Pool;
use crate::proxy::CorralProxy;
use crate::reload::{ReloadStatus, Reloader};
use crate::routing::{AdmissionQueue, DemandTable, Prewarm};
use crate::shutdown::DrainOnTerm;

/// A built, not yet running, corral server.
pub struct Corral {
    pub server: Server,
    pub pool: Arc<Pool>,
    queue: Arc<AdmissionQueue>,
}

pub fn build(config: Config) -> anyhow::Result<Corral> {
    build_from(config, None)
}

/// Builds the server; with `config_path`, the file is watched and reloaded on change
/// and on SIGHUP.
pub fn build_from(config: Config, config_path: Option<PathBuf>) -> anyhow::Result<Corral> {
    // An admin API open to the network without a token would let anyone drain the fleet.
    crate::admin::auth::check_config(&config)?;
    let conf = ServerConf {
        threads: config.threads,
        // SIGTERM is handled by `shutdown::DrainOnTerm`, which waits only as long as
        // requests are in flight; this covers a GracefulTerminate from elsewhere.
        grace_period_seconds: Some(config.shutdown_grace.as_secs()),
        graceful_shutdown_timeout_seconds: Some(5),
        // One retry per allowed backend switch, plus the first attempt.
        max_retries: config.routing.max_retries + 1,
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();

    let listen = config.listen.clone();
    // Run-time backends and drain flags saved by the admin API come back.
    let pool = Arc::new(crate::admin::persist::restore_pool(config)?);

    let queue = Arc::new(AdmissionQueue::default());
    let demand = Arc::new(DemandTable::default());
    let proxy_app = CorralProxy::new(pool.clone(), queue.clone(), demand.clone());
    let mut proxy = crate::proxy::proxy_service(&server.configuration, proxy_app);
    for addr in &listen {
        proxy.add_tcp(&addr.to_string());
    }
    server.add_service(proxy);
    server.add_service(background_service(
        "health",
        HealthChecker::new(pool.clone()),
    ));
    server.add_service(background_service(
        "placement",
        Prewarm::new(pool.clone(), queue.clone(), demand.clone()),
    ));
    let reloads = Arc::new(ReloadStatus::default());
    if let Some(path) = config_path {
        let reloader = Reloader::new(pool.clone(), path, reloads.clone());
        server.add_service(background_service("reload", reloader));
    }
    let mut admin = AdminService::new(pool.clone(), queue.clone())
        .with_reloads(reloads)
        .with_demand(demand);
    if let Some(cluster) = pool.yaml_config().cluster.clone() {
        admin = admin.with_cluster(crate::cluster::start(&mut server, cluster, &pool));
    }
    server.add_service(background_service("admin", admin));
    Ok(Corral {
        server,
        pool,
        queue,
    })
}

impl Corral {
    /// Runs until SIGINT, or SIGTERM and the drain after it; never returns.
    pub fn run_forever(self) -> ! {
        let grace = self.pool.yaml_config().shutdown_grace;
        let drain = DrainOnTerm {
            pool: self.pool.clone(),
            queue: self.queue,
            grace,
        };
        self.server.run(RunArgs {
            shutdown_signal: Box::new(drain),
        });
        std::process::exit(0)
    }
}
