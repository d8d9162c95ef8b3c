//! `dns:NAME:PORT` bootstrap: a name (a Kubernetes headless Service, say) resolved now and every
//! 30 seconds, each address dialed unless the swarm is already connected to it, so that nodes
//! that come and go keep finding each other.

use std::collections::HashSet;
use std::net::IpAddr;
use std::time::Duration;

use hickory_resolver::TokioResolver;
use libp2p::Multiaddr;
use libp2p::multiaddr::Protocol;

use super::P2p;

/// How often the names are resolved again.
const RESOLVE_EVERY: Duration = Duration::from_secs(30);

/// A `dns:NAME:PORT` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsSeed {
    /// The name to resolve.
    pub name: String,
    /// The peers' TCP port.
    pub port: u16,
}

impl DnsSeed {
    /// Parses `dns:NAME:PORT`; `None` for anything else, `Some(Err)` for a malformed entry.
    pub fn parse(entry: &str) -> Option<Result<DnsSeed, String>> {
        let rest = entry.strip_prefix("dns:")?;
        let parsed = rest.rsplit_once(':').and_then(|(name, port)| {
            let valid_name = !name.is_empty()
                && name.len() <= 253
                && name.split('.').all(|l| {
                    !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                });
            Some(DnsSeed {
                name: valid_name.then(|| name.to_owned())?,
                port: port.parse().ok().filter(|p| *p != 0)?,
            })
        });
        Some(parsed.ok_or_else(|| format!("{entry:?} is not dns:NAME:PORT")))
    }
}

fn addr(ip: IpAddr, port: u16) -> Multiaddr {
    let base = match ip {
        IpAddr::V4(v4) => Multiaddr::empty().with(Protocol::Ip4(v4)),
        IpAddr::V6(v6) => Multiaddr::empty().with(Protocol::Ip6(v6)),
    };
    base.with(Protocol::Tcp(port))
}

/// Resolves the seeds now and periodically, dialing new addresses, while the swarm runs.
pub fn spawn(p2p: P2p, seeds: Vec<DnsSeed>) {
    if seeds.is_empty() {
        return;
    }
    tokio::spawn(async move {
        let resolver = match TokioResolver::builder_tokio().and_then(|b| b.build()) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the system's DNS configuration");
                return;
            }
        };
        let mut dialed: HashSet<Multiaddr> = HashSet::new();
        loop {
            let connected = p2p.peers().await.len();
            for seed in &seeds {
                match resolver.lookup_ip(seed.name.as_str()).await {
                    Ok(ips) => {
                        for ip in ips.iter() {
                            let a = addr(ip, seed.port);
                            // Addresses seen before are dialed again only when alone.
                            if dialed.insert(a.clone()) || connected == 0 {
                                p2p.dial(a).await;
                            }
                        }
                    }
                    Err(e) => {
                        tracing::warn!(name = %seed.name, error = %e, "bootstrap name did not resolve")
                    }
                }
            }
            tokio::time::sleep(RESOLVE_EVERY).await;
            if p2p.is_stopped() {
                break;
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_parse() {
        assert_eq!(
            DnsSeed::parse("dns:shoal-peers.kube-system.svc:65002"),
            Some(Ok(DnsSeed {
                name: "shoal-peers.kube-system.svc".into(),
                port: 65002
            }))
        );
        assert_eq!(DnsSeed::parse("/ip4/1.2.3.4/tcp/1"), None);
        for bad in [
            "dns:",
            "dns:name",
            "dns:name:0",
            "dns::65002",
            "dns:a b:1",
            "dns:x:99999",
        ] {
            assert!(matches!(DnsSeed::parse(bad), Some(Err(_))), "{bad}");
        }
    }
}
