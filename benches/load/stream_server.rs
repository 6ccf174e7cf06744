//! The streaming backend: an Ollama-shaped `/api/chat` that writes NDJSON chunks at a
//! steady token rate, each stamped with its send time (UNIX nanoseconds in the
//! message content: client and server are different processes on one host, so the
//! wall clock is the clock they share), then a final `done:true` chunk with eval
//! counts. Also answers the probe endpoints and `"stream":false` (readiness checks).
//!
//! Runs as `<bench binary> stream-backend --chunks N --interval-us U`, prints
//! `stream backend listening on ADDR`, and dies with its parent.

use std::convert::Infallible;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, Limited, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Method, Request, Response};
use hyper_util::rt::TokioIo;

use crate::backends::{ps, tags, CHAT_RESPONSE, MODEL, VERSION};

/// However the bench ends, the server does not outlive this.
const MAX_LIFETIME: Duration = Duration::from_secs(3 * 3600);

#[derive(Clone, Copy)]
struct Shape {
    chunks: u32,
    interval: Duration,
}

pub fn main(args: &[String]) -> i32 {
    // SAFETY: prctl with PR_SET_PDEATHSIG only sets a flag on this process.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
    let mut shape = Shape {
        chunks: 40,
        interval: Duration::from_millis(50),
    };
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let value = args.next().and_then(|v| v.parse::<u64>().ok());
        match (arg.as_str(), value) {
            ("--chunks", Some(n)) if n > 0 => shape.chunks = n.min(100_000) as u32,
            ("--interval-us", Some(us)) if us > 0 => shape.interval = Duration::from_micros(us),
            _ => {
                eprintln!("stream-backend: bad argument {arg:?}");
                return 2;
            }
        }
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("stream-backend: runtime: {e}");
            return 1;
        }
    };
    match runtime.block_on(serve(shape)) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("stream-backend: {e}");
            1
        }
    }
}

async fn serve(shape: Shape) -> Result<(), String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| format!("bind: {e}"))?;
    let addr = listener.local_addr().map_err(|e| format!("address: {e}"))?;
    println!("stream backend listening on {addr}");
    let accept = async {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                // Out of descriptors or similar: back off instead of spinning.
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            };
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| handle(req, shape));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    };
    let _ = tokio::time::timeout(MAX_LIFETIME, accept).await;
    Ok(())
}

type Body = BoxBody<Bytes, Infallible>;

fn json(status: u16, body: impl Into<Bytes>, content_type: &str) -> Response<Body> {
    let mut response = Response::new(Full::new(body.into()).boxed());
    *response.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or_default();
    if let Ok(value) = content_type.parse() {
        response.headers_mut().insert("content-type", value);
    }
    response
}

async fn handle(req: Request<Incoming>, shape: Shape) -> Result<Response<Body>, Infallible> {
    const JSON: &str = "application/json";
    let response = match (req.method(), req.uri().path()) {
        (&Method::GET, "/api/version") => json(200, VERSION, JSON),
        (&Method::GET, "/api/tags") => json(200, tags(), JSON),
        (&Method::GET, "/api/ps") => json(200, ps(), JSON),
        (&Method::POST, "/api/chat") => {
            match Limited::new(req.into_body(), 64 * 1024).collect().await {
                Err(_) => json(400, r#"{"error":"bad body"}"#, JSON),
                Ok(body) => {
                    let body = body.to_bytes();
                    if memchr::memmem::find(&body, br#""stream":false"#).is_some() {
                        json(200, CHAT_RESPONSE, JSON)
                    } else {
                        stream(shape)
                    }
                }
            }
        }
        _ => json(404, r#"{"error":"not found"}"#, JSON),
    };
    Ok(response)
}

fn unix_nanos() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

/// `shape.chunks` token chunks, one per interval (the first at once), then the final
/// chunk. A late tick delays the rest instead of bursting, so the rate stays steady.
fn stream(shape: Shape) -> Response<Body> {
    let mut ticks = tokio::time::interval(shape.interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let frames = futures::stream::unfold((0u32, ticks), move |(sent, mut ticks)| async move {
        if sent > shape.chunks {
            return None;
        }
        let line = if sent < shape.chunks {
            ticks.tick().await;
            format!(
                r#"{{"model":"{MODEL}","created_at":"2026-11-26T00:00:00.000000000Z","message":{{"role":"assistant","content":"{}"}},"done":false}}"#,
                unix_nanos()
            )
        } else {
            format!(
                r#"{{"model":"{MODEL}","created_at":"2026-11-26T00:00:00.000000000Z","message":{{"role":"assistant","content":""}},"done_reason":"stop","done":true,"total_duration":2100000000,"load_duration":1000000,"prompt_eval_count":26,"prompt_eval_duration":10000000,"eval_count":{},"eval_duration":2000000000}}"#,
                shape.chunks
            )
        };
        let frame = Frame::data(Bytes::from(line + "\n"));
        Some((Ok::<_, Infallible>(frame), (sent + 1, ticks)))
    });
    let mut response = Response::new(BodyExt::boxed(StreamBody::new(frames)));
    if let Ok(value) = "application/x-ndjson".parse() {
        response.headers_mut().insert("content-type", value);
    }
    response
}
