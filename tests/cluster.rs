//! Three real `corral serve` replicas on loopback forming one Raft group: bootstrap and
//! election, a backend added on a follower routed by all three, leader `kill -9` with
//! traffic flowing, restart on the data dir, a minority that cannot commit, leases.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use futures::StreamExt;
use serde_json::{json, Value};

const SECRET: &str = "cluster-test-secret";

/// The cluster's fixed parts: Raft ports and data dirs survive replica restarts.
struct Group {
    /// Voters named in the first replicas' `peers` (later ones join with add-peer).
    initial: usize,
    raft_ports: Vec<u16>,
    data: Vec<tempfile::TempDir>,
    replicas: Vec<Option<Corral>>,
}

impl Group {
    fn yaml(&self, i: usize) -> String {
        // A joining replica lists the members and itself; its lowest peer id is not its
        // own, so it never initializes a group of its own.
        let known = if i < self.initial {
            self.initial
        } else {
            i + 1
        };
        let peers: Vec<String> = self.raft_ports[..known]
            .iter()
            .enumerate()
            .map(|(j, p)| format!("{}: '127.0.0.1:{p}'", j + 1))
            .collect();
        format!(
            "health: {{interval: 200ms}}\ncluster:\n  node_id: {}\n  listen: 127.0.0.1:{}\n  data_dir: '{}'\n  peers: {{{}}}\n  secret: {SECRET}\n",
            i + 1,
            self.raft_ports[i],
            self.data[i].path().display(),
            peers.join(", ")
        )
    }

    async fn start(n: usize) -> Group {
        Self::start_with_spares(n, 0).await
    }

    /// `n` replicas running; `spares` more have ports and data dirs but are not started.
    async fn start_with_spares(n: usize, spares: usize) -> Group {
        let total = n + spares;
        let mut g = Group {
            initial: n,
            raft_ports: (0..total).map(|_| free_port()).collect(),
            data: (0..total)
                .map(|_| tempfile::tempdir().expect("tempdir"))
                .collect(),
            replicas: (0..total).map(|_| None).collect(),
        };
        for i in 0..n {
            g.replicas[i] = Some(start_corral(&g.yaml(i)).await);
        }
        g
    }

    async fn restart(&mut self, i: usize) {
        let c = start_corral(&self.yaml(i)).await;
        self.replicas[i] = Some(c);
    }

    fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.replicas[i].take() {
            c.proc.kill();
        }
    }

    fn up(&self) -> impl Iterator<Item = (usize, &Corral)> {
        self.replicas
            .iter()
            .enumerate()
            .filter_map(|(i, c)| c.as_ref().map(|c| (i, c)))
    }

    fn get(&self, i: usize) -> &Corral {
        self.replicas[i].as_ref().expect("replica is up")
    }

    /// Waits until every running replica names the same leader; returns its index.
    async fn leader(&self) -> usize {
        wait_for("one leader seen by every running replica", || async {
            let mut seen = None;
            for (_, c) in self.up() {
                let s = c.admin("/api/v1/cluster/status").await?;
                let l = s["leader"].as_u64()?;
                if seen.is_some_and(|x| x != l) {
                    return None;
                }
                seen = Some(l);
            }
            let l = seen? as usize - 1;
            self.replicas[l].as_ref().map(|_| l)
        })
        .await
    }

    fn dump_logs(&self) -> String {
        self.up()
            .map(|(i, c)| format!("--- replica {} ---\n{}", i + 1, c.proc.log()))
            .collect()
    }
}

async fn admin_call(
    c: &Corral,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = reqwest::Client::new()
        .request(method, format!("{}{path}", admin_url(c)))
        .timeout(Duration::from_secs(20));
    if let Some(b) = body {
        req = req.json(&b);
    }
    match req.send().await {
        Ok(r) => {
            let status = r.status().as_u16();
            (status, r.json().await.unwrap_or(Value::Null))
        }
        Err(e) => (0, json!({ "error": e.to_string() })),
    }
}

async fn listed(c: &Corral, name: &str) -> bool {
    c.admin("/api/v1/backends")
        .await
        .and_then(|v| v.as_array().cloned())
        .is_some_and(|a| a.iter().any(|b| b["name"] == name))
}

/// One non-streaming generate; the backend that answered, if it succeeded.
async fn generate(client: &reqwest::Client, c: &Corral) -> Result<String, String> {
    let r = client
        .post(format!("{}/api/generate", c.url()))
        .json(&json!({"model": "llama3", "prompt": "hi", "stream": false}))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = r.status();
    let backend = r
        .headers()
        .get("x-corral-backend")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let _ = r.bytes().await.map_err(|e| e.to_string())?;
    if status.is_success() {
        Ok(backend)
    } else {
        Err(format!("HTTP {status} from {backend}"))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_share_the_pool_and_survive_leader_loss() {
    let sim_a = start_sim(&["--models", "llama3"]);
    let sim_b = start_sim(&["--models", "llama3"]);
    let mut g = Group::start(3).await;
    let leader = g.leader().await;
    let s = g.get(leader).admin("/api/v1/cluster/status").await.unwrap();
    assert_eq!(s["members"].as_array().map(Vec::len), Some(3), "{s}");
    assert_eq!(s["state"], "leader");

    // A backend added on a follower is routed by all three.
    let follower = (leader + 1) % 3;
    // A follower's status shows every member's progress, as the leader sees it.
    let f = g.get(follower);
    wait_for("follower status with the leader's progress", || async {
        let s = f.admin("/api/v1/cluster/status").await?;
        // Every member has announced its admin address, too.
        let all = s["members"]
            .as_array()?
            .iter()
            .all(|m| m["matched"].is_u64() && m["admin_addr"].is_string());
        let leader_admin = s["leader_admin"].is_string();
        (s["progress_from"] == leader as u64 + 1 && all && leader_admin).then_some(())
    })
    .await;
    let t0 = Instant::now();
    let (status, body) = admin_call(
        g.get(follower),
        reqwest::Method::POST,
        "/api/v1/backends",
        Some(json!({"name": "dyn-a", "url": sim_a.url(), "max_concurrency": 4})),
    )
    .await;
    assert_eq!(status, 201, "{body}\n{}", g.dump_logs());
    let committed = t0.elapsed();
    for (_, c) in g.up() {
        wait_for("dyn-a listed everywhere", || async {
            listed(c, "dyn-a").await.then_some(())
        })
        .await;
    }
    let visible = t0.elapsed();
    // Routed: a cheap model request (`/api/show`) lands on dyn-a, polled on all three
    // at once (a generate would add the simulator's ~0.35 s of token streaming).
    let client = reqwest::Client::new();
    let routed_on = |c: &Corral| {
        let (client, url) = (client.clone(), c.url());
        async move {
            wait_for("dyn-a routed", || async {
                let r = client
                    .post(format!("{url}/api/show"))
                    .json(&json!({"model": "llama3"}))
                    .timeout(Duration::from_secs(5))
                    .send()
                    .await
                    .ok()?;
                (r.status().is_success() && r.headers().get("x-corral-backend")? == "dyn-a")
                    .then_some(())
            })
            .await
        }
    };
    futures::future::join_all(g.up().map(|(_, c)| routed_on(c))).await;
    let routed = t0.elapsed();
    for (_, c) in g.up() {
        assert_eq!(generate(&client, c).await.as_deref(), Ok("dyn-a"));
    }
    eprintln!(
        "MEASURED commit={committed:?} listed-on-all-3={visible:?} routed-by-all-3={routed:?}"
    );
    assert!(visible < Duration::from_secs(1), "listed after {visible:?}");
    assert!(routed < Duration::from_secs(1), "routed after {routed:?}");

    // Traffic on the survivors while the leader is killed.
    let survivors: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let mut loops = Vec::new();
    for &i in &survivors {
        let url = g.get(i).url();
        let (stop, ok) = (stop.clone(), ok.clone());
        loops.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut failures = Vec::new();
            let deadline = Instant::now() + DEADLINE;
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                let r = client
                    .post(format!("{url}/api/generate"))
                    .json(&json!({"model": "llama3", "prompt": "hi", "stream": false}))
                    .timeout(Duration::from_secs(10))
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status().is_success() => {
                        let _ = r.bytes().await;
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(r) => failures.push(format!("HTTP {}", r.status())),
                    Err(e) => failures.push(e.to_string()),
                }
            }
            failures
        }));
    }
    let killed_at = Instant::now();
    g.kill(leader);
    let new_leader = g.leader().await;
    let failover = killed_at.elapsed();
    assert_ne!(new_leader, leader);
    // Pool writes resume (through either survivor).
    let writer = survivors[0];
    let b_url = sim_b.url();
    wait_for("a write after failover", || {
        let c = g.get(writer);
        let b_url = b_url.clone();
        async move {
            let (status, _) = admin_call(
                c,
                reqwest::Method::POST,
                "/api/v1/backends",
                Some(json!({"name": "dyn-b", "url": b_url, "max_concurrency": 4})),
            )
            .await;
            (status == 201 || status == 200).then_some(())
        }
    })
    .await;
    let writes_resumed = killed_at.elapsed();
    eprintln!("MEASURED new-leader-after={failover:?} writes-resumed-after={writes_resumed:?}");
    for &i in &survivors {
        let c = g.get(i);
        wait_for("dyn-b listed on survivors", || async {
            listed(c, "dyn-b").await.then_some(())
        })
        .await;
    }
    stop.store(true, Ordering::Relaxed);
    for l in loops {
        let failures = l.await.expect("request loop");
        assert!(
            failures.is_empty(),
            "survivors failed requests: {failures:?}"
        );
    }
    assert!(
        ok.load(Ordering::Relaxed) > 0,
        "no request served during failover"
    );

    // The killed replica comes back on its data dir and catches up.
    g.restart(leader).await;
    let back = g.get(leader);
    wait_for("restarted replica sees dyn-b", || async {
        listed(back, "dyn-b").await.then_some(())
    })
    .await;
    let s = back.admin("/api/v1/cluster/status").await.unwrap();
    assert!(s["leader"].as_u64().is_some(), "{s}");
    let c = g.get(new_leader);
    let ls = c.admin("/api/v1/cluster/status").await.unwrap();
    let matched = wait_for("leader sees the restarted replica caught up", || async {
        let ls = c.admin("/api/v1/cluster/status").await?;
        let last = ls["last_log_index"].as_u64()?;
        let m = ls["members"]
            .as_array()?
            .iter()
            .find(|m| m["id"] == leader as u64 + 1)?["matched"]
            .as_u64()?;
        (m == last).then_some(m)
    })
    .await;
    assert!(matched > 0, "{ls}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lease_expires_everywhere_and_a_minority_cannot_commit() {
    let sim = start_sim(&["--models", "llama3"]);
    let mut g = Group::start(3).await;
    let leader = g.leader().await;
    // Registered and renewed with the client commands (`--ttl` in seconds).
    let (api, url) = (admin_url(g.get(leader)), sim.url());
    let (ok, out, err) = tokio::task::spawn_blocking(move || {
        corral_cli(&[
            "backend",
            "add",
            "leased",
            &url,
            "--ttl",
            "1.5",
            "--api-url",
            &api,
        ])
    })
    .await
    .unwrap();
    assert!(ok, "backend add --ttl: {out} {err}");
    for (_, c) in g.up() {
        wait_for("leased listed", || async {
            listed(c, "leased").await.then_some(())
        })
        .await;
    }
    // One heartbeat (on a follower) keeps it; then it lapses.
    let api = admin_url(g.get((leader + 1) % 3));
    let (ok, out, err) = tokio::task::spawn_blocking(move || {
        corral_cli(&["backend", "heartbeat", "leased", "--api-url", &api])
    })
    .await
    .unwrap();
    assert!(ok, "backend heartbeat: {out} {err}");
    let t0 = Instant::now();
    for (_, c) in g.up() {
        wait_for("leased gone", || async {
            (!listed(c, "leased").await).then_some(())
        })
        .await;
    }
    assert!(
        t0.elapsed() >= Duration::from_millis(1000),
        "expired too early"
    );

    // Peer RPCs without the secret are refused and counted.
    let r = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{}/raft/vote", g.raft_ports[0]))
        .json(&json!({}))
        .send()
        .await
        .expect("raft port answers");
    assert_eq!(r.status(), 401);
    let metrics = reqwest::get(format!("{}/metrics", admin_url(g.get(0))))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("corral_raft_rpc_refused_total 1"),
        "{metrics}"
    );
    assert!(metrics.contains("corral_raft_term"), "{metrics}");

    // A minority cannot commit; it heals when a peer returns.
    let (status, body) = admin_call(
        g.get(leader),
        reqwest::Method::POST,
        "/api/v1/backends",
        Some(json!({"name": "perm", "url": sim.url()})),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let lone = leader;
    let c = g.get(lone);
    let client = reqwest::Client::new();
    wait_for("perm routed", || async {
        (generate(&client, c).await.ok()? == "perm").then_some(())
    })
    .await;
    let others: Vec<usize> = (0..3).filter(|i| *i != lone).collect();
    for &i in &others {
        g.kill(i);
    }
    let (status, body) = admin_call(
        g.get(lone),
        reqwest::Method::POST,
        "/api/v1/backends",
        Some(json!({"name": "nope", "url": sim.url()})),
    )
    .await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["code"], "no_quorum", "{body}");
    // The lone replica still serves proxied requests from its own pool.
    assert_eq!(generate(&client, g.get(lone)).await.as_deref(), Ok("perm"));
    g.restart(others[0]).await;
    wait_for("a write once a majority is back", || async {
        let (status, _) = admin_call(
            g.get(lone),
            reqwest::Method::POST,
            "/api/v1/backends",
            Some(json!({"name": "healed", "url": sim.url()})),
        )
        .await;
        (status == 201 || status == 200).then_some(())
    })
    .await;
    let back = g.get(others[0]);
    wait_for("healed listed on the returning replica", || async {
        listed(back, "healed").await.then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_joins_and_leaves_through_the_cli() {
    let sim = start_sim(&["--models", "llama3"]);
    let mut g = Group::start_with_spares(3, 1).await;
    let leader = g.leader().await;
    let (status, body) = admin_call(
        g.get(leader),
        reqwest::Method::POST,
        "/api/v1/backends",
        Some(json!({"name": "before-join", "url": sim.url()})),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    // Enough writes for a snapshot and a purged log (a snapshot every 500 entries):
    // the new replica must then be sent the snapshot, not the log from the start.
    let admin = admin_url(g.get(leader));
    let http = reqwest::Client::new();
    let writes = futures::stream::iter(0..560).map(|i| {
        let (http, admin) = (http.clone(), admin.clone());
        async move {
            let name = if i % 2 == 0 { "churn" } else { "churn-2" };
            http.post(format!(
                "{admin}/api/v1/backends/{name}/{}",
                ["drain", "undrain"][i / 2 % 2]
            ))
            .send()
            .await
            .map(|r| r.status().as_u16())
            .unwrap_or(0)
        }
    });
    for name in ["churn", "churn-2"] {
        let (status, body) = admin_call(
            g.get(leader),
            reqwest::Method::POST,
            "/api/v1/backends",
            Some(json!({"name": name, "url": "http://127.0.0.1:9"})),
        )
        .await;
        assert_eq!(status, 201, "{body}");
    }
    let statuses: Vec<u16> = writes.buffer_unordered(16).collect().await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    let c = g.get(leader);
    wait_for("a snapshot and a purged log on the leader", || async {
        let s = c.admin("/api/v1/cluster/status").await?;
        // The first snapshot is taken once ~500 entries are committed; the log before
        // it is then purged, so a new member cannot be sent it entry by entry.
        s["purged"].as_u64().map(|_| ())
    })
    .await;
    g.restart(3).await;
    let follower = admin_url(g.get((leader + 1) % 3));
    let addr = format!("127.0.0.1:{}", g.raft_ports[3]);
    let (ok, out, err) = tokio::task::spawn_blocking(move || {
        corral_cli(&["cluster", "add-peer", "4", &addr, "--api-url", &follower])
    })
    .await
    .unwrap();
    assert!(ok, "add-peer failed: {out} {err}\n{}", g.dump_logs());
    let joined = g.get(3);
    wait_for("the new replica has the pool", || async {
        (listed(joined, "before-join").await && listed(joined, "churn-2").await).then_some(())
    })
    .await;
    let js = joined.admin("/api/v1/cluster/status").await.unwrap();
    assert!(
        js["snapshot"].as_u64().is_some(),
        "the new replica was not sent a snapshot: {js}"
    );
    let s = g.get(leader).admin("/api/v1/cluster/status").await.unwrap();
    let voters = s["members"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] == "voter")
        .count();
    assert_eq!(voters, 4, "{s}");
    let leader_api = admin_url(g.get(leader));
    let api = leader_api.clone();
    let (ok, out, err) =
        tokio::task::spawn_blocking(move || corral_cli(&["cluster", "status", "--api-url", &api]))
            .await
            .unwrap();
    assert!(
        ok && out.contains("leader") && out.contains("voter"),
        "{out} {err}"
    );

    let api = leader_api.clone();
    let (ok, out, err) = tokio::task::spawn_blocking(move || {
        corral_cli(&["cluster", "remove-peer", "4", "--api-url", &api])
    })
    .await
    .unwrap();
    assert!(ok, "remove-peer failed: {out} {err}");
    let s = g.get(leader).admin("/api/v1/cluster/peers").await.unwrap();
    assert_eq!(s["members"].as_array().map(Vec::len), Some(3), "{s}");
    let api = leader_api.clone();
    let (ok, _, err) = tokio::task::spawn_blocking(move || {
        corral_cli(&["cluster", "remove-peer", "9", "--api-url", &api])
    })
    .await
    .unwrap();
    assert!(!ok && err.contains("not a member"), "{err}");

    // Removing the leader itself: it steps down, the two others elect a leader among
    // themselves and accept writes.
    let rest: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
    let api = admin_url(g.get(rest[0]));
    let id = (leader + 1).to_string();
    let (ok, out, err) = tokio::task::spawn_blocking(move || {
        corral_cli(&["cluster", "remove-peer", &id, "--api-url", &api])
    })
    .await
    .unwrap();
    assert!(
        ok,
        "removing the leader failed: {out} {err}\n{}",
        g.dump_logs()
    );
    let c = g.get(rest[1]);
    wait_for("a new leader among the two that stay", || async {
        let s = c.admin("/api/v1/cluster/status").await?;
        let l = s["leader"].as_u64()?;
        (l != leader as u64 + 1 && s["members"].as_array()?.len() == 2).then_some(())
    })
    .await;
    wait_for("a write after the leader left", || async {
        let (status, _) = admin_call(
            c,
            reqwest::Method::POST,
            "/api/v1/backends",
            Some(json!({"name": "after-leader-left", "url": sim.url()})),
        )
        .await;
        (status == 201).then_some(())
    })
    .await;
    let other = g.get(rest[0]);
    wait_for("the write is on both", || async {
        listed(other, "after-leader-left").await.then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storage_failure_takes_the_replica_out_of_readyz() {
    let sim = start_sim(&["--models", "llama3"]);
    // The data dir is a regular file: the Raft store cannot be opened.
    let not_a_dir = tempfile::NamedTempFile::new().expect("temp file");
    let port = free_port();
    let yaml = format!(
        "health: {{interval: 200ms}}\nbackends:\n  - {{name: b0, url: '{}'}}\ncluster:\n  node_id: 1\n  listen: 127.0.0.1:{port}\n  data_dir: '{}'\n  peers: {{1: '127.0.0.1:{port}'}}\n  secret: {SECRET}\n",
        sim.url(),
        not_a_dir.path().display()
    );
    let c = start_corral(&yaml).await;
    c.wait_healthy(1).await;
    let url = format!("{}/readyz", admin_url(&c));
    let (status, text) = wait_for("readyz to report the storage failure", || async {
        let r = reqwest::get(&url).await.ok()?;
        let status = r.status().as_u16();
        let text = r.text().await.ok()?;
        text.contains("cluster").then_some((status, text))
    })
    .await;
    assert_eq!(status, 503, "{text}");
    assert!(text.contains("Raft storage"), "{text}");
    // The data plane still serves the YAML backends.
    let r = generate(&reqwest::Client::new(), &c).await;
    assert_eq!(r.as_deref(), Ok("b0"));
    // Writes fail clearly.
    let (status, body) = admin_call(
        &c,
        reqwest::Method::POST,
        "/api/v1/backends",
        Some(json!({"name": "x", "url": sim.url()})),
    )
    .await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["code"], "cluster_unavailable", "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_node_cluster_drains_through_raft() {
    let sim = start_sim(&["--models", "llama3"]);
    let data = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let yaml = format!(
        "health: {{interval: 200ms}}\nbackends:\n  - {{name: b0, url: '{}'}}\ncluster:\n  node_id: 1\n  listen: 127.0.0.1:{port}\n  data_dir: '{}'\n  peers: {{1: '127.0.0.1:{port}'}}\n  secret: {SECRET}\n",
        sim.url(),
        data.path().display()
    );
    let c = start_corral(&yaml).await;
    c.wait_healthy(1).await;
    wait_for("leader", || async {
        let s = c.admin("/api/v1/cluster/status").await?;
        (s["state"] == "leader").then_some(())
    })
    .await;
    // A YAML backend can be drained cluster-wide; the flag survives a restart.
    let (status, body) =
        admin_call(&c, reqwest::Method::POST, "/api/v1/backends/b0/drain", None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["backend"]["draining"], true, "{body}");
    assert_eq!(drained(&c, "b0").await, Some(true));
    drop(c);
    let c = start_corral(&yaml).await;
    wait_for("drain flag restored from the Raft data dir", || async {
        drained(&c, "b0").await.filter(|d| *d).map(|_| ())
    })
    .await;
    let (status, body) = admin_call(
        &c,
        reqwest::Method::POST,
        "/api/v1/backends/b0/undrain",
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(drained(&c, "b0").await, Some(false));
}

/// Whether backend `name` is drained, per this replica's admin API.
async fn drained(c: &Corral, name: &str) -> Option<bool> {
    c.admin("/api/v1/backends")
        .await?
        .as_array()?
        .iter()
        .find(|b| b["name"] == name)
        .map(|b| b["draining"] == true)
}

/// Sends `signal` (e.g. `-STOP`, `-CONT`) to one replica's process, by pid.
fn signal(c: &Corral, signal: &str) {
    let ok = std::process::Command::new("kill")
        .args([signal, &c.proc.child.id().to_string()])
        .status()
        .expect("run kill")
        .success();
    assert!(ok, "kill {signal} failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_frozen_leader_is_replaced_and_catches_up_when_it_thaws() {
    let sim = start_sim(&["--models", "llama3"]);
    let g = Group::start(3).await;
    let leader = g.leader().await;
    let old = g.get(leader);
    // Frozen (SIGSTOP): cut off like a partition, without losing its state.
    signal(old, "-STOP");
    let rest: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
    let c = g.get(rest[0]);
    wait_for("a write on the majority side", || async {
        let (status, _) = admin_call(
            c,
            reqwest::Method::POST,
            "/api/v1/backends",
            Some(json!({"name": "while-frozen", "url": sim.url()})),
        )
        .await;
        (status == 201).then_some(())
    })
    .await;
    signal(old, "-CONT");
    wait_for(
        "the thawed replica follows the new leader and has the write",
        || async {
            let s = old.admin("/api/v1/cluster/status").await?;
            let follows = s["state"] == "follower" && s["leader"] != leader as u64 + 1;
            (follows && listed(old, "while-frozen").await).then_some(())
        },
    )
    .await;
    // Its writes go to the new leader.
    let (status, body) = admin_call(
        old,
        reqwest::Method::POST,
        "/api/v1/backends/while-frozen/drain",
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let other = g.get(rest[1]);
    wait_for("the drain everywhere", || async {
        drained(other, "while-frozen")
            .await
            .filter(|d| *d)
            .map(|_| ())
    })
    .await;
}
