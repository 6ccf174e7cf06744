//! Loop detection. corral names itself in a `Via` header on every request it passes to
//! a backend, and refuses (508) a request that already carries its name: a backend URL
//! pointing back at corral, directly or through other proxies, would otherwise pass the
//! same request around until something gives out.

use std::hash::{BuildHasher, Hasher};
use std::sync::OnceLock;

use http::header::VIA;
use http::HeaderMap;

/// `1.1 corral-<id>`: the id is random per process, so two replicas that forward to
/// each other are told apart.
pub(super) fn via_entry() -> &'static str {
    static ENTRY: OnceLock<String> = OnceLock::new();
    ENTRY.get_or_init(|| {
        // std's RandomState is seeded from the OS's randomness: no extra crate needed.
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u32(std::process::id());
        format!("1.1 corral-{:016x}", h.finish())
    })
}

/// `via_entry` as a header value, built once.
pub(super) fn via_value() -> http::HeaderValue {
    static VALUE: OnceLock<http::HeaderValue> = OnceLock::new();
    VALUE
        .get_or_init(|| http::HeaderValue::from_static(via_entry()))
        .clone()
}

/// Whether this request already passed through this corral.
pub(super) fn passed_through_us(headers: &HeaderMap) -> bool {
    let us = via_entry();
    headers
        .get_all(VIA)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|hop| same_hop(hop, us))
}

/// `1.1 corral-x` and `HTTP/1.1 corral-x (comment)` name the same hop.
fn same_hop(hop: &str, us: &str) -> bool {
    let name = |s: &str| s.split_whitespace().nth(1).map(str::to_string);
    name(hop).is_some() && name(hop) == name(us)
}

/// The message a looping request is refused with.
pub(super) const LOOP_MESSAGE: &str =
    "request loop: this request already passed through this corral (does a backend URL point back at it?)";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_itself_among_other_hops() {
        let mut h = HeaderMap::new();
        assert!(!passed_through_us(&h));
        h.append(
            VIA,
            "1.0 fred, 1.1 corral-0000000000000000".parse().unwrap(),
        );
        assert!(!passed_through_us(&h));
        let name = via_entry().split_whitespace().nth(1).unwrap();
        h.append(VIA, format!("HTTP/1.1 {name} (edge)").parse().unwrap());
        assert!(passed_through_us(&h));
    }
}
