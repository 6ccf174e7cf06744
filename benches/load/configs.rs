//! The configuration each proxy runs with. Every one gets two workers/threads and
//! keep-alive to the backend; otherwise each is as its operators would deploy it for
//! Ollama (no response buffering, an access log).

use std::net::SocketAddr;
use std::path::Path;

use crate::systems::WORKERS;

/// corral's defaults but for what a deployment must set: the addresses, the thread
/// count (the default is the number of CPUs, two here anyway) and the one backend's
/// `max_concurrency` — above every connection count and stream count of the bench, so
/// corral's admission queue never holds a request (the backend has no slots to count).
pub fn corral(port: u16, admin_port: u16, backend: SocketAddr) -> String {
    format!(
        "listen: 127.0.0.1:{port}\n\
         admin: {{listen: '127.0.0.1:{admin_port}'}}\n\
         threads: {WORKERS}\n\
         backends:\n  \
           - {{name: backend, url: 'http://{backend}', max_concurrency: 100000}}\n"
    )
}

/// What every nginx of the bench shares, up to inside `http {`: its files in
/// `prefix`, and keep-alive limits no run reaches.
pub fn nginx_head(prefix: &Path, workers: usize, access_log: &str) -> String {
    let prefix = prefix.display();
    format!(
        "worker_processes {workers};
worker_rlimit_nofile 16384;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 8192; }}
http {{
    access_log {access_log};
    client_body_temp_path {prefix}/client_body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    keepalive_requests 100000000;
    keepalive_timeout 300s;
"
    )
}

/// `least_conn`, no response buffering (streams pass chunk by chunk), a buffered access
/// log, upstream keep-alive. Keep-alive limits are raised on both sides so that no
/// connection is recycled mid-run: the other proxies have no per-connection request cap.
pub fn nginx(port: u16, backend: SocketAddr, prefix: &Path) -> String {
    let log = format!(
        "{}/access.log combined buffer=64k flush=1s",
        prefix.display()
    );
    let head = nginx_head(prefix, WORKERS, &log);
    format!(
        "{head}    upstream ollama {{
        least_conn;
        server {backend};
        keepalive 1024;
        keepalive_requests 100000000;
        keepalive_timeout 300s;
    }}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{
            proxy_pass http://ollama;
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
            proxy_buffering off;
            proxy_request_buffering off;
            proxy_read_timeout 300s;
            proxy_send_timeout 300s;
        }}
    }}
}}
"
    )
}

/// `leastconn`, HTTP mode with keep-alive and connection reuse to the server, one
/// `httplog` line per request to stdout (a file here), like the others' access logs.
/// `http-no-delay` because token streams are interactive: without it HAProxy holds
/// small chunks back (about 100 ms per chunk in a first run).
pub fn haproxy(port: u16, backend: SocketAddr) -> String {
    format!(
        "global
    nbthread {WORKERS}
    maxconn 8000
    log stdout format raw local0
defaults
    mode http
    log global
    option httplog
    option http-no-delay
    timeout connect 5s
    timeout client 300s
    timeout server 300s
    timeout http-keep-alive 300s
    http-reuse always
frontend ollama
    bind 127.0.0.1:{port}
    default_backend fleet
backend fleet
    balance leastconn
    server backend {backend}
"
    )
}
