//! `corral cluster status | peers | add-peer ID ADDR | remove-peer ID`: the cluster
//! endpoints of a running replica's admin API, as tables or `--json`.

use clap::Subcommand;
use serde_json::{json, Value};

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
            let v = AdminClient::new(&client)?
                .get("/api/v1/cluster/status")
                .await?;
            print(&client, &v, render_status(&v));
        }
        ClusterCmd::Peers { client } => {
            let v = AdminClient::new(&client)?
                .get("/api/v1/cluster/peers")
                .await?;
            print(&client, &v, render_members(&v["members"]));
        }
        ClusterCmd::AddPeer {
            id,
            addr,
            admin_addr,
            client,
        } => {
            let body = json!({ "id": id, "addr": addr, "admin_addr": admin_addr });
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

fn opt(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

pub fn render_status(v: &Value) -> String {
    let mut out = format!(
        "node {}  {}  term {}  leader {}  last log {}  last applied {}\n",
        opt(&v["node_id"]),
        opt(&v["state"]),
        opt(&v["term"]),
        opt(&v["leader"]),
        opt(&v["last_log_index"]),
        opt(&v["last_applied"]),
    );
    if let Some(e) = v["error"].as_str() {
        out.push_str(&format!("ERROR: {e}\n"));
    }
    out.push_str(&render_members(&v["members"]));
    if let Some(l) = v["progress_from"].as_u64() {
        out.push_str(&format!("(replication progress as leader {l} sees it)\n"));
    }
    out
}

pub fn render_members(members: &Value) -> String {
    let mut out = format!(
        "{:<4} {:<8} {:<22} {:<22} {:>8} {:>6}\n",
        "ID", "ROLE", "RAFT ADDR", "ADMIN ADDR", "MATCHED", "LAG"
    );
    for m in members.as_array().into_iter().flatten() {
        out.push_str(&format!(
            "{:<4} {:<8} {:<22} {:<22} {:>8} {:>6}\n",
            opt(&m["id"]),
            opt(&m["role"]),
            opt(&m["raft_addr"]),
            opt(&m["admin_addr"]),
            opt(&m["matched"]),
            opt(&m["lag"]),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_table_lists_members() {
        let v = json!({"node_id": 1, "state": "leader", "term": 3, "leader": 1,
            "last_log_index": 9, "last_applied": 9,
            "members": [{"id": 1, "role": "voter", "raft_addr": "127.0.0.1:7001",
                         "admin_addr": null, "matched": 9, "lag": 0}]});
        let t = render_status(&v);
        assert!(t.contains("node 1  leader  term 3  leader 1"), "{t}");
        assert!(t.contains("127.0.0.1:7001"), "{t}");
        assert!(!t.contains("as leader"), "{t}");
    }
}
