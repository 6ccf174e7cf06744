//! Assembles and runs the Pingora server: the proxy service on every `listen` address
//! and the health checker beside it.

use std::sync::Arc;

use pingora::proxy::http_proxy_service;
use pingora::server::configuration::ServerConf;
use pingora::server::Server;
use pingora::services::background::background_service;

use crate::admin::AdminService;
use crate::config::Config;
use crate::health::HealthChecker;
use crate::pool::Pool;
use crate::proxy::CorralProxy;
use crate::routing::AdmissionQueue;

/// A built, not yet running, corral server.
pub struct Corral {
    pub server: Server,
    pub pool: Arc<Pool>,
}

pub fn build(config: Config) -> anyhow::Result<Corral> {
    let conf = ServerConf {
        threads: config.threads,
        // SIGTERM lets in-flight generations finish for this long, then stops.
        grace_period_seconds: Some(config.shutdown_grace.as_secs()),
        graceful_shutdown_timeout_seconds: Some(5),
        // One retry per allowed backend switch, plus the first attempt.
        max_retries: config.routing.max_retries + 1,
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();

    let listen = config.listen.clone();
    let pool = Arc::new(Pool::new(config));

    let queue = Arc::new(AdmissionQueue::default());
    let proxy_app = CorralProxy::new(pool.clone(), queue.clone());
    let mut proxy = http_proxy_service(&server.configuration, proxy_app);
    for addr in &listen {
        proxy.add_tcp(&addr.to_string());
    }
    server.add_service(proxy);
    server.add_service(background_service(
        "health",
        HealthChecker::new(pool.clone()),
    ));
    server.add_service(background_service(
        "admin",
        AdminService::new(pool.clone(), queue),
    ));
    Ok(Corral { server, pool })
}

impl Corral {
    /// Runs until SIGTERM/SIGINT; never returns.
    pub fn run_forever(self) -> ! {
        self.server.run_forever()
    }
}
