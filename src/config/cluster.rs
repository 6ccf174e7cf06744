//! The `cluster:` section: this replica's Raft id, peer RPC address, data directory,
//! the voters and the shared secret. Absent = a single replica without Raft.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;

use crate::secret::Secret;

#[derive(Debug, Clone, PartialEq)]
pub struct ClusterConfig {
    pub node_id: u64,
    /// Where peer Raft RPCs are served.
    pub listen: SocketAddr,
    /// The admin address other replicas redirect clients to (default: `admin.listen`).
    pub admin_addr: Option<String>,
    /// Raft log, vote and snapshots.
    pub data_dir: PathBuf,
    /// Every voter of the initial cluster, this one included: id → `host:port` of its
    /// `cluster.listen`.
    pub peers: BTreeMap<u64, String>,
    /// Shared secret every peer RPC carries.
    pub secret: Secret,
    pub heartbeat: Duration,
    /// Election timeout is drawn from `[election_timeout, 2 × election_timeout)`.
    pub election_timeout: Duration,
}

impl ClusterConfig {
    /// The one node that initializes a new cluster: the lowest id.
    pub fn bootstrapper(&self) -> u64 {
        self.peers.keys().next().copied().unwrap_or(self.node_id)
    }
}

// Checked inside the mapping's visitor so that a cross-field error (own id missing
// from `peers`) is reported at the `cluster:` mapping rather than the file's start.
impl<'de> Deserialize<'de> for ClusterConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ClusterConfig;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("the cluster section (node_id, listen, data_dir, peers, secret)")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<ClusterConfig, A::Error> {
                let raw = RawCluster::deserialize(de::value::MapAccessDeserializer::new(map))?;
                ClusterConfig::try_from(raw).map_err(de::Error::custom)
            }
        }
        d.deserialize_map(V)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCluster {
    #[serde(deserialize_with = "super::de::positive_u64")]
    node_id: u64,
    listen: SocketAddr,
    #[serde(default)]
    admin_addr: Option<String>,
    data_dir: PathBuf,
    #[serde(deserialize_with = "peers")]
    peers: BTreeMap<u64, String>,
    secret: Secret,
    #[serde(
        default = "default_heartbeat",
        deserialize_with = "super::de::duration"
    )]
    heartbeat: Duration,
    #[serde(
        default = "default_election_timeout",
        deserialize_with = "super::de::duration"
    )]
    election_timeout: Duration,
}

fn default_heartbeat() -> Duration {
    Duration::from_millis(100)
}

fn default_election_timeout() -> Duration {
    Duration::from_millis(600)
}

impl TryFrom<RawCluster> for ClusterConfig {
    type Error = String;

    fn try_from(r: RawCluster) -> Result<Self, String> {
        if !r.peers.contains_key(&r.node_id) {
            return Err(format!(
                "peers must list this node's own id {} (with its cluster.listen address)",
                r.node_id
            ));
        }
        let secret = r.secret;
        if secret.len() < 8 {
            return Err("secret must be at least 8 characters".into());
        }
        if r.heartbeat.is_zero() || r.election_timeout <= r.heartbeat * 2 {
            return Err(format!(
                "election_timeout ({:?}) must exceed twice the heartbeat ({:?})",
                r.election_timeout, r.heartbeat
            ));
        }
        if r.data_dir.as_os_str().is_empty() {
            return Err("data_dir must not be empty".into());
        }
        Ok(ClusterConfig {
            node_id: r.node_id,
            listen: r.listen,
            admin_addr: r.admin_addr,
            data_dir: r.data_dir,
            peers: r.peers,
            secret,
            heartbeat: r.heartbeat,
            election_timeout: r.election_timeout,
        })
    }
}

/// `host:port` of a peer, checked where it is written.
pub fn check_peer_addr(s: &str) -> Result<String, String> {
    let a: http::uri::Authority = s
        .trim()
        .parse()
        .map_err(|_| format!("invalid peer address '{s}' (expected HOST:PORT)"))?;
    if a.port_u16().is_none() || a.host().is_empty() {
        return Err(format!("peer address '{s}' needs HOST:PORT"));
    }
    Ok(a.as_str().to_string())
}

fn peers<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<u64, String>, D::Error> {
    struct PeersVisitor;
    impl<'de> Visitor<'de> for PeersVisitor {
        type Value = BTreeMap<u64, String>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a map of node id to HOST:PORT, e.g. {1: 10.0.0.2:11436}")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut out = BTreeMap::new();
            while let Some(id) = map.next_key::<u64>()? {
                if id == 0 {
                    return Err(de::Error::custom("node ids start at 1"));
                }
                let addr: PeerAddr = map.next_value()?;
                if out.insert(id, addr.0).is_some() {
                    return Err(de::Error::custom(format!("node id {id} listed twice")));
                }
            }
            if out.is_empty() {
                return Err(de::Error::custom("at least one node is needed"));
            }
            Ok(out)
        }
    }
    d.deserialize_map(PeersVisitor)
}

struct PeerAddr(String);

impl<'de> Deserialize<'de> for PeerAddr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = PeerAddr;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("HOST:PORT")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<PeerAddr, E> {
                check_peer_addr(s).map(PeerAddr).map_err(E::custom)
            }
        }
        d.deserialize_str(V)
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    const OK: &str = "cluster:\n  node_id: 2\n  listen: 127.0.0.1:7002\n  data_dir: /tmp/x\n  peers: {1: '127.0.0.1:7001', 2: '127.0.0.1:7002'}\n  secret: sharedsecret\n";

    #[test]
    fn parses_the_contract_shape() {
        let c = Config::parse(OK, "t").unwrap().cluster.unwrap();
        assert_eq!(c.node_id, 2);
        assert_eq!(c.bootstrapper(), 1);
        assert_eq!(c.peers[&1], "127.0.0.1:7001");
        assert_eq!(c.heartbeat, std::time::Duration::from_millis(100));
    }

    #[test]
    fn errors_carry_a_location() {
        let bad = OK.replace("'127.0.0.1:7001'", "'nope'");
        let e = Config::parse(&bad, "c.yaml").unwrap_err().to_string();
        assert!(e.starts_with("c.yaml:5:"), "{e}");
        assert!(e.contains("nope"), "{e}");
        let own = OK.replace("node_id: 2", "node_id: 3");
        let e = Config::parse(&own, "c.yaml").unwrap_err().to_string();
        assert!(e.contains("own id 3"), "{e}");
        let short = OK.replace("sharedsecret", "x");
        assert!(Config::parse(&short, "c.yaml").is_err());
    }
}
