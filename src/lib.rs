//! corral: a Pingora reverse proxy that makes a fleet of Ollama servers look like one.
//!
//! Request flow: `proxy` classifies and sniffs a request, `routing` picks a backend from
//! the `pool` snapshot, `health` keeps that snapshot's live state true.

#![warn(unreachable_pub)]

pub mod admin;
pub mod api_error;
pub mod bounded_body;
pub mod bounded_server;
pub mod cli;
pub mod clients;
pub mod cluster;
pub mod config;
pub mod demo;
pub mod hangup;
pub mod health;
pub mod log_limit;
pub mod logging;
pub mod metrics;
pub mod model;
pub mod pool;
pub mod proxy;
pub mod readiness;
pub mod reload;
pub mod routing;
pub mod secret;
pub mod server;
pub mod shutdown;
pub mod sim;
pub mod startup;
pub mod systemd;
pub mod tls;
pub mod upgrade;
