//! Several `shoal node`s in one swarm (one swarm key, bootstrapped from the first).

use std::time::Duration;

use super::{ShoalNode, write_swarm_key};

/// Nodes of one swarm: the first starts alone, the others bootstrap from it.
pub struct Cluster {
    /// The nodes, in the order given.
    pub nodes: Vec<ShoalNode>,
    /// Each node's zone.
    pub zones: Vec<String>,
    _dir: tempfile::TempDir,
}

impl Cluster {
    /// One node per `(zone, seed)`, each with `--upstream UPSTREAM` (when given) and `extra`.
    pub fn start(upstream: &str, members: &[(&str, bool)], extra: &[&str]) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("swarm.key");
        write_swarm_key(&key);
        let key = key.to_str().unwrap().to_owned();
        let mut nodes: Vec<ShoalNode> = Vec::new();
        let mut bootstrap: Option<String> = None;
        for (zone, seed) in members {
            let mut args = vec!["--swarm-key", &key, "--zone", zone];
            if !upstream.is_empty() {
                args.extend(["--upstream", upstream]);
            }
            if *seed {
                args.push("--seed");
            }
            if let Some(b) = &bootstrap {
                args.extend(["--bootstrap", b.as_str()]);
            }
            args.extend(extra);
            let node = ShoalNode::start(&args);
            if bootstrap.is_none() {
                bootstrap = Some(
                    node.status()["listen_addrs"][0]
                        .as_str()
                        .unwrap()
                        .to_owned(),
                );
            }
            nodes.push(node);
        }
        let cluster = Cluster {
            zones: members.iter().map(|(z, _)| (*z).to_owned()).collect(),
            nodes,
            _dir: dir,
        };
        cluster.wait_connected();
        cluster
    }

    /// Waits until every node sees every other one, with its zone and role.
    pub fn wait_connected(&self) {
        wait_swarm(&self.nodes);
    }

    /// Sum of a metric over the nodes of `zone`.
    pub fn zone_total(&self, zone: &str, metric: &str) -> f64 {
        self.nodes
            .iter()
            .zip(&self.zones)
            .filter(|(_, z)| *z == zone)
            .map(|(n, _)| n.metric(metric, &[]))
            .sum()
    }
}

/// Waits until each of `nodes` sees every other one, with its zone and role.
pub fn wait_swarm(nodes: &[ShoalNode]) {
    let n = nodes.len() as u64;
    let formed = super::wait_until(Duration::from_secs(30), || {
        nodes.iter().all(|node| {
            let s = node.status();
            let known: u64 = s["peers_by_zone"]
                .as_object()
                .map(|z| {
                    z.iter()
                        .filter(|(k, _)| *k != "?")
                        .map(|(_, v)| v.as_u64().unwrap_or(0))
                        .sum()
                })
                .unwrap_or(0);
            known + 1 >= n
        })
    });
    if !formed {
        let seen: Vec<String> = nodes
            .iter()
            .map(|node| {
                let s = node.status();
                format!(
                    "{} connected to {} peers, by zone {}",
                    s["peer_id"], s["peers"], s["peers_by_zone"]
                )
            })
            .collect();
        panic!("the swarm of {n} did not form in 30 s: {}", seen.join("; "));
    }
}
