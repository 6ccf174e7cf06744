//! Deserializers that validate as they parse, so serde_norway can attach the location of
//! the offending value to each error.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::Deserialize;

use super::BackendConfig;

// Checks run inside the visitors, not after `deserialize` returns: serde_norway marks an
// error with the scalar's position only while the scalar is being visited; later it
// points at the enclosing mapping.

/// `500ms`, `2s`, `5m`, or a bare number of seconds: the one reading of a duration,
/// in the config file and in admin API bodies (a lease's `ttl`).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    match t.parse::<f64>() {
        Ok(secs) => {
            Duration::try_from_secs_f64(secs).map_err(|e| format!("invalid duration '{text}': {e}"))
        }
        Err(_) => humantime::parse_duration(t)
            .map_err(|e| format!("invalid duration '{text}': {e} (expected e.g. 500ms, 2s, 5m)")),
    }
}

/// A duration in YAML: a number of seconds or a string [`parse_duration`] reads.
pub(super) fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    d.deserialize_any(DurationVisitor { positive: false })
}

/// A duration that must be more than zero: a zero deadline would cut every
/// connection, a zero probe interval would spin.
pub(super) fn positive_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    d.deserialize_any(DurationVisitor { positive: true })
}

struct DurationVisitor {
    positive: bool,
}

impl DurationVisitor {
    fn check<E: de::Error>(&self, d: Duration) -> Result<Duration, E> {
        if self.positive && d.is_zero() {
            return Err(E::custom("must be more than 0"));
        }
        Ok(d)
    }
}

impl Visitor<'_> for DurationVisitor {
    type Value = Duration;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a duration such as 500ms, 2s or 5m")
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Duration, E> {
        self.check(Duration::from_secs(v))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Duration, E> {
        let d = Duration::try_from_secs_f64(v)
            .map_err(|e| E::custom(format!("invalid duration {v}: {e}")))?;
        self.check(d)
    }
    fn visit_str<E: de::Error>(self, t: &str) -> Result<Duration, E> {
        self.check(parse_duration(t).map_err(E::custom)?)
    }
}

/// A whole number ≥ 1 that fits in `T`.
struct Positive<T>(std::marker::PhantomData<T>);

impl<T: TryFrom<u64>> Visitor<'_> for Positive<T> {
    type Value = T;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a whole number of at least 1")
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<T, E> {
        if v == 0 {
            return Err(E::custom("must be at least 1"));
        }
        T::try_from(v).map_err(|_| E::custom("value too large"))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<T, E> {
        match u64::try_from(v) {
            Ok(v) => self.visit_u64(v),
            Err(_) => Err(E::custom("must be at least 1")),
        }
    }
}

pub(super) fn positive_usize<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    d.deserialize_u64(Positive(std::marker::PhantomData))
}

pub(super) fn positive_u32<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    d.deserialize_u64(Positive(std::marker::PhantomData))
}

pub(super) fn positive_u64<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    d.deserialize_u64(Positive(std::marker::PhantomData))
}

/// A percentage, 0 to 100.
pub(super) fn percent<'de, D: Deserializer<'de>>(d: D) -> Result<u8, D::Error> {
    let v = u64::deserialize(d)?;
    u8::try_from(v)
        .ok()
        .filter(|p| *p <= 100)
        .ok_or_else(|| de::Error::custom(format!("{v} is not a percentage (0 to 100)")))
}

/// The affinity load bound: a factor over the average load, at least 1.
pub(super) fn load_bound<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    struct BoundVisitor;
    impl Visitor<'_> for BoundVisitor {
        type Value = f64;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a number of at least 1.0, e.g. 1.25")
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<f64, E> {
            if v.is_finite() && v >= 1.0 {
                Ok(v)
            } else {
                Err(E::custom(format!("bound must be at least 1.0, got {v}")))
            }
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<f64, E> {
            self.visit_f64(v as f64)
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<f64, E> {
            self.visit_f64(v as f64)
        }
    }
    d.deserialize_any(BoundVisitor)
}

fn parse_addr<E: de::Error>(s: &str) -> Result<SocketAddr, E> {
    s.trim().parse().map_err(|_| {
        E::custom(format!(
            "invalid listen address '{s}' (expected IP:PORT, e.g. 0.0.0.0:11434)"
        ))
    })
}

/// `listen: ADDR` or `listen: [ADDR, ...]`.
pub(super) fn one_or_many_addrs<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Vec<SocketAddr>, D::Error> {
    struct AddrsVisitor;
    impl<'de> Visitor<'de> for AddrsVisitor {
        type Value = Vec<SocketAddr>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("an IP:PORT address or a list of them")
        }
        fn visit_str<E: de::Error>(self, s: &str) -> Result<Self::Value, E> {
            Ok(vec![parse_addr(s)?])
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut out = Vec::new();
            while let Some(s) = seq.next_element::<String>()? {
                out.push(parse_addr(&s)?);
            }
            if out.is_empty() {
                return Err(de::Error::custom("listen needs at least one address"));
            }
            Ok(out)
        }
    }
    d.deserialize_any(AddrsVisitor)
}

/// Backend names appear in metrics labels, headers and URLs of the admin API.
pub(super) fn backend_name<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    d.deserialize_str(StrVisitor(check_backend_name))
}

pub(super) fn check_backend_name(name: &str) -> Result<String, String> {
    check_label_name("backend", name)
}

/// A name that becomes a metric label, a log field and a URL segment: backends' and
/// client keys'.
pub(super) fn check_label_name(kind: &str, name: &str) -> Result<String, String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !ok {
        return Err(format!(
            "invalid {kind} name '{name}' (1-64 characters of A-Z a-z 0-9 - _ .)"
        ));
    }
    Ok(name.to_string())
}

/// Parses a string scalar with `check`, reporting failures at the scalar.
pub(super) struct StrVisitor<T>(pub(super) fn(&str) -> Result<T, String>);

impl<T> Visitor<'_> for StrVisitor<T> {
    type Value = T;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string")
    }
    fn visit_str<E: de::Error>(self, s: &str) -> Result<T, E> {
        (self.0)(s).map_err(E::custom)
    }
}

/// The backend list, rejecting a name used twice at the element that repeats it.
pub(super) fn unique_backends<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Vec<BackendConfig>, D::Error> {
    struct BackendsVisitor;
    impl<'de> Visitor<'de> for BackendsVisitor {
        type Value = Vec<BackendConfig>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a list of backends")
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(Vec::new())
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut out: Vec<BackendConfig> = Vec::new();
            while let Some(b) = seq.next_element::<BackendConfig>()? {
                if out.iter().any(|o| o.name == b.name) {
                    return Err(de::Error::custom(format!(
                        "duplicate backend name '{}'",
                        b.name
                    )));
                }
                out.push(b);
            }
            Ok(out)
        }
    }
    d.deserialize_any(BackendsVisitor)
}

/// An Ollama address, `http://` or `https://`. Follows `OLLAMA_HOST` rules: without a
/// scheme it is plain HTTP and the port defaults to 11434; with a scheme, to the
/// scheme's own (80, 443).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendUrl {
    /// `host:port`, also used as the `Host` header sent to the backend.
    pub authority: String,
    /// Also the name TLS asks for (SNI) and checks the certificate against.
    pub host: String,
    pub port: u16,
    /// `https://`: corral speaks TLS to it and verifies its certificate.
    pub tls: bool,
}

impl BackendUrl {
    /// Parses with a real URL parser (WHATWG, the `url` crate), so a port out of range is
    /// an error rather than a silent default, and refuses what corral would not send:
    /// credentials, a path, a query.
    pub fn parse(raw: &str) -> Result<BackendUrl, String> {
        let s = raw.trim();
        let invalid = |why: &dyn fmt::Display| format!("invalid backend url '{raw}': {why}");
        // The URL parser drops tabs and newlines inside a URL; in a config they are typos.
        if s.is_empty() || s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(invalid(&"empty or contains whitespace"));
        }
        let (url, default_port, tls) = match s.split_once("://") {
            Some((scheme, _)) if scheme.eq_ignore_ascii_case("http") => {
                (url::Url::parse(s).map_err(|e| invalid(&e))?, 80, false)
            }
            Some((scheme, _)) if scheme.eq_ignore_ascii_case("https") => {
                (url::Url::parse(s).map_err(|e| invalid(&e))?, 443, true)
            }
            Some((scheme, _)) => {
                let why = "only http:// and https:// are supported";
                return Err(format!(
                    "unsupported scheme '{scheme}' in backend url '{raw}' ({why})"
                ));
            }
            // `host:port` alone would parse as scheme `host`; read it as Ollama does.
            None => {
                let url = url::Url::parse(&format!("http://{s}")).map_err(|e| invalid(&e))?;
                (url, 11434, false)
            }
        };
        if !url.username().is_empty() || url.password().is_some() {
            return Err(format!(
                "backend url '{raw}' has credentials (user:password@); corral does not send them"
            ));
        }
        if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
            return Err(format!(
                "backend url '{raw}' has a path; corral needs the server root (http://host:port)"
            ));
        }
        let host = match url.host() {
            Some(url::Host::Domain(d)) => d.to_string(),
            Some(url::Host::Ipv4(ip)) => ip.to_string(),
            Some(url::Host::Ipv6(ip)) => ip.to_string(),
            None => return Err(format!("backend url '{raw}' has no host")),
        };
        let scheme_given = default_port != 11434;
        let port = match url.port() {
            Some(p) => p,
            // `Url` hides a port equal to its scheme's default.
            None if scheme_given => default_port,
            // Without a scheme an explicit `:80` looks like no port at all; https's
            // default differs.
            None => url::Url::parse(&format!("https://{s}"))
                .ok()
                .and_then(|u| u.port())
                .unwrap_or(default_port),
        };
        if port == 0 {
            return Err(invalid(&"port 0"));
        }
        let authority = if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        Ok(BackendUrl {
            authority,
            host,
            port,
            tls,
        })
    }

    /// `http://host:port` (or `https://`) for clients that want a base URL.
    pub fn base(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.authority)
    }

    /// The URL corral's own clients (probes, prewarm) send `path` to. Plain HTTP goes
    /// to the resolved `addr`, with the backend's Host header set by the caller, so a
    /// probe checks the very address the proxy connects to; TLS must name the host,
    /// which the certificate is checked against, and lets the client resolve it.
    pub fn request_url(&self, addr: SocketAddr, path: &str) -> String {
        if self.tls {
            format!("{}{path}", self.base())
        } else {
            format!("http://{addr}{path}")
        }
    }
}

impl fmt::Display for BackendUrl {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(&self.base())
    }
}

impl<'de> Deserialize<'de> for BackendUrl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(StrVisitor(BackendUrl::parse))
    }
}

impl serde::Serialize for BackendUrl {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.base())
    }
}
