//! Assembles and runs the Pingora server: the proxy service on every `listen` address
//! (and the TLS port), and the health checker beside it. Only a config that passed
//! `startup::prepare` gets here, and every socket is bound (or, in an upgrade, taken
//! over) before Pingora starts.

use std::path::PathBuf;
use std::sync::Arc;

use pingora::listeners::ListenerConfig;
use pingora::protocols::l4::stream::L4BufferSettings;
use pingora::server::configuration::ServerConf;
use pingora::server::{RunArgs, Server};
use pingora::services::background::background_service;

use crate::admin::AdminService;
use crate::config::Config;
use crate::health::HealthChecker;
use crate::pool::Pool;
use crate::proxy::CorralProxy;
use crate::readiness::Readiness;
use crate::reload::{ReloadStatus, Reloader};
use crate::routing::{AdmissionQueue, DemandTable, Prewarm};
use crate::shutdown::{DrainOnTerm, UpgradeSetup};
use crate::startup::listeners::PreBound;
use crate::startup::{Prepared, StartupError};
use crate::systemd::SystemdNotify;
use crate::upgrade::Inherited;

/// The TLS port's read buffer: one TLS record, where rustls alone reads 4 KiB a call.
const TLS_READ_BUFFER: usize = 16 * 1024;

/// A built, not yet running, corral server.
pub struct Corral {
    pub server: Server,
    pub pool: Arc<Pool>,
    queue: Arc<AdmissionQueue>,
    /// Where the proxy and the admin API listen, as bound (port 0 resolved).
    pub proxy_addrs: Vec<std::net::SocketAddr>,
    pub tls_addr: Option<std::net::SocketAddr>,
    pub admin_addr: std::net::SocketAddr,
    upgrade: UpgradeSetup,
}

/// How `serve` starts.
#[derive(Default)]
pub struct Launch {
    /// Watched and reloaded on change and on SIGHUP.
    pub config_path: Option<PathBuf>,
    /// Sockets taken over from the process this one upgrades (`serve --upgrade`).
    pub inherited: Option<Inherited>,
}

/// Validates `config` like `serve` does and builds a server without a watched file.
pub fn build(config: Config) -> Result<Corral, StartupError> {
    build_from(crate::startup::prepare(config)?, Launch::default())
}

/// Binds (or adopts) every listen address and builds the server.
pub fn build_from(prepared: Prepared, launch: Launch) -> Result<Corral, StartupError> {
    let pool = Arc::new(prepared.pool);
    let config = pool.yaml_config();
    let successor = launch.inherited.is_some();
    let mut inherited = launch.inherited.unwrap_or_default();
    let sockets = crate::startup::listeners::bind_or_adopt(&config, &mut inherited)?;
    // Closes what the old process listened on and this config no longer does.
    drop(inherited);
    let config_path = launch.config_path;
    let upgrade_sock = crate::upgrade::socket_path(&config, config_path.as_deref());
    let proxy_addrs: Vec<std::net::SocketAddr> = sockets
        .proxy
        .iter()
        .filter_map(|(_, l)| l.local_addr().ok())
        .collect();
    let admin_addr = sockets.admin.local_addr().unwrap_or(config.admin.listen);
    let tls_addr = sockets.tls.as_ref().and_then(|(_, l)| l.local_addr().ok());
    let shown: Vec<String> = proxy_addrs.iter().map(|a| a.to_string()).collect();
    tracing::info!(
        listen = %shown.join(","),
        admin = %admin_addr,
        "Ollama endpoint listening (point OLLAMA_HOST here)"
    );
    let tls_port = match (tls_addr, &prepared.server_cert) {
        (Some(addr), Some(cert)) => {
            tracing::info!(
                listen = %addr,
                certificate = %cert.fingerprint(),
                "Ollama endpoint listening with TLS (OLLAMA_HOST=https://...)"
            );
            Some(crate::tls::TlsPort::new(addr, cert.clone())?)
        }
        _ => None,
    };
    let conf = ServerConf {
        threads: config.threads,
        work_stealing: config.work_stealing,
        // SIGTERM is handled by `shutdown::DrainOnTerm`, which waits only as long as
        // requests are in flight; this covers a GracefulTerminate from elsewhere.
        grace_period_seconds: Some(config.shutdown_grace.as_secs()),
        graceful_shutdown_timeout_seconds: Some(5),
        // One retry per allowed backend switch, plus the first attempt.
        max_retries: config.routing.max_retries.saturating_add(1),
        // Pingora's upstream connector trusts this file instead of the system's roots.
        ca_file: prepared.backend_trust.ca_file(),
        // Where SIGQUIT sends the listening sockets (`upgrade::receive` takes them).
        upgrade_sock: upgrade_sock.display().to_string(),
        ..ServerConf::default()
    };
    // No `Opt { upgrade: true }`: the sockets are already taken over (`upgrade`).
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    // With a cluster, the Raft state machine's backends are still to come.
    let readiness = Arc::new(Readiness::new(config.cluster.is_none()));

    let queue = Arc::new(AdmissionQueue::default());
    crate::metrics::global().set_live_source(crate::metrics::LiveSource {
        pool: pool.clone(),
        queue: queue.clone(),
    });
    let demand = Arc::new(DemandTable::default());
    let trust = &prepared.backend_trust;
    let proxy_app = CorralProxy::new(pool.clone(), queue.clone(), demand.clone(), trust);
    let mut proxy = crate::proxy::proxy_service(&server.configuration, proxy_app, tls_port);
    // Pingora puts a 64 KiB read buffer, zeroed, in front of every accepted connection.
    // Plain HTTP/1 gains nothing from it (headers are read into their own buffer, bodies
    // into a 64 KiB one) and 2,000 open streams paid 23 MiB for it: plain ports read
    // unbuffered. rustls reads 4 KiB at a time, so the TLS port keeps one TLS record's
    // worth (the proxy's loop runs the handshake over this plain TCP listener).
    for (addr, _) in &sockets.proxy {
        let buffers = L4BufferSettings::default().read(0);
        proxy.add_listener(ListenerConfig::tcp(addr.as_str()).l4_buffer(buffers));
    }
    if let Some((addr, _)) = &sockets.tls {
        let buffers = L4BufferSettings::default().read(TLS_READ_BUFFER);
        proxy.add_listener(ListenerConfig::tcp(addr.as_str()).l4_buffer(buffers));
    }
    let mut proxy_sockets = sockets.proxy;
    proxy_sockets.extend(sockets.tls);
    let proxy = PreBound::new(proxy, proxy_sockets, sockets.handover, readiness.clone());
    if successor {
        server.add_service(proxy.wait_for_probes());
    } else {
        server.add_service(proxy);
    }
    server.add_service(background_service(
        "health",
        HealthChecker::new(pool.clone(), trust).with_readiness(readiness.clone()),
    ));
    server.add_service(background_service(
        "systemd",
        SystemdNotify {
            readiness: readiness.clone(),
            successor,
        },
    ));
    server.add_service(background_service(
        "placement",
        Prewarm::new(pool.clone(), queue.clone(), demand.clone(), trust),
    ));
    let reloads = Arc::new(ReloadStatus::default());
    let upgrade = UpgradeSetup {
        sock: upgrade_sock,
        // Only `serve` can start its successor: it knows its config file.
        relaunch: config_path.is_some(),
    };
    if let Some(path) = config_path {
        let reloader = Reloader::new(pool.clone(), path, reloads.clone())
            .with_server_cert(prepared.server_cert.clone());
        server.add_service(background_service("reload", reloader));
    }
    let mut admin = AdminService::new(pool.clone(), queue.clone(), sockets.admin)
        .with_reloads(reloads)
        .with_demand(demand);
    if let (Some(cluster), Some(listener)) = (config.cluster.clone(), sockets.cluster) {
        let cluster =
            crate::cluster::start(&mut server, cluster, &pool, listener, readiness.clone());
        let (open, protected) = cluster.routes();
        admin = admin
            .with_writer(cluster.writer())
            .with_routes(open, protected);
    }
    server.add_service(background_service("admin", admin));
    Ok(Corral {
        server,
        pool,
        queue,
        proxy_addrs,
        tls_addr,
        admin_addr,
        upgrade,
    })
}

impl Corral {
    /// Runs until SIGINT, SIGTERM and the drain after it, or an upgrade (SIGQUIT,
    /// SIGUSR2) and the drain after it; never returns.
    pub fn run_forever(self) -> ! {
        let grace = self.pool.yaml_config().shutdown_grace;
        let drain = DrainOnTerm::new(
            self.pool.clone(),
            self.queue,
            grace,
            self.upgrade,
            self.server.watch_execution_phase(),
        );
        self.server.run(RunArgs {
            shutdown_signal: Box::new(drain),
        });
        crate::logging::flush();
        std::process::exit(0)
    }
}
