//! Failure modes a proxy must survive, switchable at runtime with `POST /sim/fault`.
//! Only model endpoints (generate, chat, embeddings, `/v1` completions) misbehave: health
//! routes keep answering so that a test can tell "sick runner" from "box gone".

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::respond::{parse_json, ApiError, OllamaShape};
use super::state::SimState;

/// Named in snake_case on the command line and in the API alike; the kebab-case
/// spelling is accepted by both.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[value(rename_all = "snake_case")]
pub enum Fault {
    /// Behave.
    None,
    /// 500 `simulated runner failure`.
    Fail,
    /// 503 `server busy`, immediately.
    Busy,
    /// Accept the request and never answer.
    Hang,
    /// Stream a few tokens, then close the connection without the final chunk.
    #[serde(alias = "die-mid-stream")]
    #[value(alias = "die-mid-stream")]
    DieMidStream,
    /// Stream a few tokens, then go silent forever.
    #[serde(alias = "hang-mid-stream")]
    #[value(alias = "hang-mid-stream")]
    HangMidStream,
}

/// How many tokens a mid-stream fault lets through before it strikes.
pub(super) const TOKENS_BEFORE_MID_STREAM_FAULT: usize = 3;

pub(super) const BUSY_MESSAGE: &str =
    "server busy, please try again.  maximum pending requests exceeded";
pub(super) const RUNNER_FAILURE_MESSAGE: &str = "simulated runner failure";

const ALL: [Fault; 6] = [
    Fault::None,
    Fault::Fail,
    Fault::Busy,
    Fault::Hang,
    Fault::DieMidStream,
    Fault::HangMidStream,
];

/// The current fault mode, shared by every request.
pub(super) struct FaultSwitch(AtomicU8);

impl FaultSwitch {
    pub(super) fn new(fault: Fault) -> FaultSwitch {
        FaultSwitch(AtomicU8::new(fault as u8))
    }

    pub(super) fn get(&self) -> Fault {
        let raw = self.0.load(Ordering::Relaxed);
        ALL.into_iter()
            .find(|fault| *fault as u8 == raw)
            .unwrap_or(Fault::None)
    }

    pub(super) fn set(&self, fault: Fault) {
        self.0.store(fault as u8, Ordering::Relaxed);
    }
}

impl Fault {
    pub fn strikes_mid_stream(self) -> bool {
        matches!(self, Fault::DieMidStream | Fault::HangMidStream)
    }
}

/// Applies the faults that strike before any byte is written. Returns the fault mode the
/// request continues under (mid-stream faults act later, in the body).
pub(super) async fn gate(sim: &SimState) -> Result<Fault, ApiError> {
    match sim.fault.get() {
        Fault::Fail => Err(ApiError::internal(RUNNER_FAILURE_MESSAGE)),
        Fault::Busy => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "busy",
            BUSY_MESSAGE,
        )),
        // Never resolves; the handler future is dropped when the client hangs up, which
        // the request tracker counts as a cancel.
        Fault::Hang => std::future::pending().await,
        other => Ok(other),
    }
}

#[derive(Serialize, Deserialize)]
pub(super) struct FaultBody {
    pub mode: Fault,
}

pub(super) async fn current(State(sim): State<Arc<SimState>>) -> Response {
    sim.config.json_style.ok(&FaultBody {
        mode: sim.fault.get(),
    })
}

pub(super) async fn set(State(sim): State<Arc<SimState>>, body: Bytes) -> Response {
    match parse_json::<FaultBody>(&body) {
        Ok(FaultBody { mode }) => {
            sim.fault.set(mode);
            tracing::info!(sim = %sim.config.name, ?mode, "fault mode changed");
            sim.config.json_style.ok(&FaultBody { mode })
        }
        Err(error) => error.native(sim.config.json_style),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn switch_round_trips_every_mode() {
        let switch = FaultSwitch::new(Fault::None);
        for fault in ALL {
            switch.set(fault);
            assert_eq!(switch.get(), fault);
        }
        let parsed: FaultBody =
            serde_json::from_str(r#"{"mode":"die_mid_stream"}"#).expect("valid body");
        assert_eq!(parsed.mode, Fault::DieMidStream);
    }

    /// The CLI and the API name every mode alike, and both take the other spelling.
    #[test]
    fn cli_and_api_share_the_names() {
        use clap::ValueEnum;
        for fault in ALL {
            let cli = fault
                .to_possible_value()
                .expect("named")
                .get_name()
                .to_string();
            let api = serde_json::to_value(fault).expect("serializes");
            assert_eq!(api, serde_json::Value::String(cli.clone()));
            let kebab = cli.replace('_', "-");
            assert_eq!(Fault::from_str(&kebab, false), Ok(fault), "{kebab}");
            let body = format!(r#"{{"mode":"{kebab}"}}"#);
            let parsed: FaultBody = serde_json::from_str(&body).expect("kebab body");
            assert_eq!(parsed.mode, fault);
        }
    }
}
