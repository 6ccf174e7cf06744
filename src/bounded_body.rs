//! Reading an answer from a box corral does not control: never more than a cap, never
//! waiting on silence for longer than a deadline. A box listing 100,000 models or
//! streaming a body forever must cost an error, not memory.

use std::fmt;
use std::time::Duration;

use bytes::{Bytes, BytesMut};

/// A byte count shown the way a limit is talked about ("4 MiB", "64 KiB").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size(pub usize);

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const KIB: usize = 1024;
        const MIB: usize = 1024 * KIB;
        match self.0 {
            n if n >= MIB && n % MIB == 0 => write!(f, "{} MiB", n / MIB),
            n if n >= KIB && n % KIB == 0 => write!(f, "{} KiB", n / KIB),
            n => write!(f, "{n} bytes"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("body larger than {0}")]
    TooLarge(Size),
    #[error("body stalled: nothing for {}", humantime::format_duration(*.0))]
    Stalled(Duration),
    #[error("{}", root_cause(.0))]
    Http(#[from] reqwest::Error),
}

/// The whole body of `resp`, refused as soon as it passes `cap` bytes (before reading
/// anything when `Content-Length` already says so). With `idle`, each chunk must come
/// within it; without, the caller bounds the read (e.g. a reqwest request timeout).
pub async fn read_capped(
    mut resp: reqwest::Response,
    cap: usize,
    idle: Option<Duration>,
) -> Result<Bytes, BodyError> {
    if resp.content_length().is_some_and(|n| n > cap as u64) {
        return Err(BodyError::TooLarge(Size(cap)));
    }
    let mut body = BytesMut::new();
    while let Some(chunk) = next_chunk(&mut resp, idle).await? {
        if body.len() + chunk.len() > cap {
            return Err(BodyError::TooLarge(Size(cap)));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// The next chunk of `resp`, within `idle` when given.
pub async fn next_chunk(
    resp: &mut reqwest::Response,
    idle: Option<Duration>,
) -> Result<Option<Bytes>, BodyError> {
    match idle {
        Some(idle) => tokio::time::timeout(idle, resp.chunk())
            .await
            .map_err(|_| BodyError::Stalled(idle))?
            .map_err(BodyError::from),
        None => resp.chunk().await.map_err(BodyError::from),
    }
}

/// reqwest's Display stops at "error sending request"; the cause is in the chain.
/// The one cause an operator can act on — "cannot connect: Connection refused (os
/// error 111)", "timed out" — instead of reqwest's whole chain ("error sending request
/// for url (...): client error (Connect): tcp connect error: ...").
pub fn root_cause(e: &reqwest::Error) -> String {
    let mut inner: &dyn std::error::Error = e;
    while let Some(next) = inner.source() {
        inner = next;
    }
    match (e.is_timeout(), e.is_connect()) {
        (true, true) => "connect timed out".to_string(),
        (true, false) => "timed out".to_string(),
        (false, true) => format!("cannot connect: {inner}"),
        (false, false) => inner.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::Size;

    #[test]
    fn sizes_read_as_limits_are_spoken() {
        assert_eq!(Size(4 * 1024 * 1024).to_string(), "4 MiB");
        assert_eq!(Size(64 * 1024).to_string(), "64 KiB");
        assert_eq!(Size(1500).to_string(), "1500 bytes");
    }
}
