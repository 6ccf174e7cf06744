//! `corral cluster status | peers | add-peer ID ADDR | remove-peer ID`: the cluster
//! endpoints of a running replica's admin API, as tables or `--json`.

use std::fmt::Display;

use clap::Subcommand;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::admin::AddPeer;
use super::ops::{ClusterStatus, MemberView, Members};
use crate::cli::render::{fixed, table};
use crate::cli::{AdminClient, CliError, ClientOpts};

#[derive(Subcommand, Debug)]
pub enum ClusterCmd {
    /// Leader, term, members and each member's replication progress.
    Status {
        #[command(flatten)]
        client: ClientOpts,
    },
    /// The members of the Raft group.
    Peers {
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Add a replica: as a learner first, promoted to voter once it caught up.
    AddPeer {
        /// Its `cluster.node_id`.
        id: u64,
        /// Its `cluster.listen` address (HOST:PORT).
        addr: String,
        /// Its admin API address, shown in the status.
        #[arg(long)]
        admin_addr: Option<String>,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Remove a replica from the group.
    RemovePeer {
        id: u64,
        #[command(flatten)]
        client: ClientOpts,
    },
}

/// Runs `corral cluster ...`.
pub async fn run(cmd: ClusterCmd) -> Result<(), CliError> {
    match cmd {
        ClusterCmd::Status { client } => {
            let path = "/api/v1/cluster/status";
            let v = AdminClient::new(&client)?.get(path).await?;
            let text = render_status(&typed::<ClusterStatus>(path, &v)?);
            print(&client, &v, text);
        }
        ClusterCmd::Peers { client } => {
            let path = "/api/v1/cluster/peers";
            let v = AdminClient::new(&client)?.get(path).await?;
            let text = render_members(&typed::<Members>(path, &v)?.members);
            print(&client, &v, text);
        }
        ClusterCmd::AddPeer {
            id,
            addr,
            admin_addr,
            client,
        } => {
            let body = AddPeer {
                id,
                addr: addr.clone(),
                admin_addr,
            };
            let body =
                serde_json::to_value(body).map_err(|e| CliError::Unexpected(e.to_string()))?;
            let v = AdminClient::new(&client)?
                .post("/api/v1/cluster/peers", Some(body))
                .await?;
            print(&client, &v, format!("node {id} ({addr}) added as a voter"));
        }
        ClusterCmd::RemovePeer { id, client } => {
            let v = AdminClient::new(&client)?
                .delete(&format!("/api/v1/cluster/peers/{id}"))
                .await?;
            print(&client, &v, format!("node {id} removed"));
        }
    }
    Ok(())
}

fn print(opts: &ClientOpts, v: &Value, text: String) {
    if opts.json {
        println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
    } else {
        println!("{text}");
    }
}

/// The answer as the type the server serialized.
fn typed<T: DeserializeOwned>(path: &str, v: &Value) -> Result<T, CliError> {
    T::deserialize(v).map_err(|e| CliError::Unexpected(format!("{path}: {e}")))
}

/// A value, or `-` when there is none.
fn opt(v: Option<impl Display>) -> String {
    v.map_or_else(|| "-".into(), |v| v.to_string())
}

fn render_status(s: &ClusterStatus) -> String {
    let mut out = format!(
        "node {}  {}  term {}  leader {}  last log {}  last applied {}\n",
        s.node_id,
        s.state,
        s.term,
        opt(s.leader),
        opt(s.last_log_index),
        opt(s.last_applied),
    );
    if let Some(e) = &s.error {
        out.push_str(&format!("ERROR: {e}\n"));
    }
    out.push_str(&render_members(&s.members));
    if let Some(l) = s.progress_from {
        out.push_str(&format!("(replication progress as leader {l} sees it)\n"));
    }
    out
}

fn render_members(members: &[MemberView]) -> String {
    let columns = ["ID", "ROLE", "RAFT ADDR", "ADMIN ADDR", "MATCHED", "LAG"].map(fixed);
    let rows: Vec<Vec<String>> = members
        .iter()
        .map(|m| {
            vec![
                m.id.to_string(),
                m.role.clone(),
                m.raft_addr.clone(),
                opt(m.admin_addr.as_ref()),
                opt(m.matched),
                opt(m.lag),
            ]
        })
        .collect();
    table(&columns, &rows, None) + "\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_table_lists_members() {
        let v = serde_json::json!({"node_id": 1, "state": "leader", "term": 3, "leader": 1,
            "last_log_index": 9, "last_applied": 9, "healthy": true,
            "members": [{"id": 1, "role": "voter", "raft_addr": "127.0.0.1:7001",
                         "admin_addr": null, "matched": 9, "lag": 0}]});
        let t = render_status(&typed("status", &v).expect("a status"));
        assert!(t.contains("node 1  leader  term 3  leader 1"), "{t}");
        assert!(t.contains("127.0.0.1:7001"), "{t}");
        assert!(!t.contains("as leader"), "{t}");
    }
}
