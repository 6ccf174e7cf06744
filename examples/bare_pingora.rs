//! The floor of any proxy built on this Pingora version: a `ProxyHttp` that only
//! returns a fixed `HttpPeer`, with Pingora's defaults otherwise. The load benchmark
//! (`make bench-load`) runs it next to corral to tell the engine's cost from corral's.
//!
//! `bare_pingora LISTEN UPSTREAM THREADS`, e.g. `bare_pingora 127.0.0.1:8080
//! 127.0.0.1:11434 2`.

use std::net::SocketAddr;

use async_trait::async_trait;
use pingora::listeners::{L4BufferSettings, ListenerConfig};
use pingora::prelude::*;
use pingora::server::configuration::ServerConf;

struct Bare {
    upstream: SocketAddr,
}

#[async_trait]
impl ProxyHttp for Bare {
    type CTX = ();

    fn new_ctx(&self) {}

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut ()) -> Result<Box<HttpPeer>> {
        Ok(Box::new(HttpPeer::new(self.upstream, false, String::new())))
    }
}

pub fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let parsed = match args.as_slice() {
        [listen, upstream, threads] => upstream
            .parse::<SocketAddr>()
            .map_err(|e| format!("UPSTREAM {upstream:?}: {e}"))
            .and_then(|up| {
                let n = threads
                    .parse::<usize>()
                    .map_err(|e| format!("THREADS {threads:?}: {e}"))?;
                Ok((listen.clone(), up, n))
            }),
        _ => Err("usage: bare_pingora LISTEN UPSTREAM THREADS".to_string()),
    };
    let (listen, upstream, threads) = match parsed {
        Ok(parsed) => parsed,
        Err(e) => {
            eprintln!("bare_pingora: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    // `BARE_TUNED=1`: corral's engine settings (measured in the README's Pingora
    // settings lines): one single-threaded runtime per thread, and accepted
    // connections read without Pingora's 64 KiB L4 buffer.
    let tuned = std::env::var_os("BARE_TUNED").is_some();
    let conf = ServerConf {
        threads,
        work_stealing: !tuned,
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let mut proxy = http_proxy_service(&server.configuration, Bare { upstream });
    if tuned {
        let buffers = L4BufferSettings::default().read(0);
        proxy.add_listener(ListenerConfig::tcp(listen).l4_buffer(buffers));
    } else {
        proxy.add_tcp(&listen);
    }
    server.add_service(proxy);
    server.run_forever()
}
