//! Where requests for each registry go: its upstream, then its standby mirrors in order.

use std::collections::HashMap;

use reqwest::Url;

use crate::metrics::Source;
use crate::oci::{Credentials, Endpoint, RegistryHost};

/// The upstream and fallbacks of every registry the node knows, plus the rule for the others
/// (`https://HOST`, and Docker Hub's real address for `docker.io`).
#[derive(Debug, Clone, Default)]
pub struct Registries {
    upstreams: HashMap<RegistryHost, Url>,
    fallbacks: HashMap<RegistryHost, Vec<Url>>,
    credentials: HashMap<RegistryHost, Credentials>,
}

impl Registries {
    /// An empty table: every registry goes to `https://HOST`.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sends requests for `host` to `url`.
    pub fn set_upstream(&mut self, host: RegistryHost, url: Url) {
        self.upstreams.insert(host, url);
    }

    /// Adds a standby mirror for `host`, tried after the upstream and earlier fallbacks.
    pub fn add_fallback(&mut self, host: RegistryHost, url: Url) {
        self.fallbacks.entry(host).or_default().push(url);
    }

    /// Credentials the node presents to `host` (and its fallbacks) when a client sends none.
    pub fn set_credentials(&mut self, host: RegistryHost, credentials: Credentials) {
        self.credentials.insert(host, credentials);
    }

    /// Every configured upstream and standby mirror (Docker Hub's registry when none is).
    pub fn endpoints(&self) -> Vec<Url> {
        let mut all: Vec<Url> = self
            .upstreams
            .values()
            .chain(self.fallbacks.values().flatten())
            .cloned()
            .collect();
        if all.is_empty() {
            all.push(default_upstream(&"docker.io".parse().expect("valid host")));
        }
        all
    }

    /// The sources for `host`, in the order they are tried.
    pub fn chain(&self, host: &RegistryHost) -> Vec<(Source, Endpoint)> {
        let credentials = self.credentials.get(host).cloned();
        let upstream = self
            .upstreams
            .get(host)
            .cloned()
            .unwrap_or_else(|| default_upstream(host));
        let mut chain = vec![(
            Source::Upstream,
            Endpoint {
                base: upstream,
                credentials: credentials.clone(),
            },
        )];
        for url in self.fallbacks.get(host).into_iter().flatten() {
            chain.push((
                Source::Fallback,
                Endpoint {
                    base: url.clone(),
                    credentials: credentials.clone(),
                },
            ));
        }
        chain
    }
}

/// `https://HOST`, except Docker Hub, whose registry API lives at `registry-1.docker.io`.
pub fn default_upstream(host: &RegistryHost) -> Url {
    let h = match host.as_str() {
        "docker.io" | "index.docker.io" | "registry-1.docker.io" => "registry-1.docker.io",
        other => other,
    };
    Url::parse(&format!("https://{h}")).expect("validated host makes a valid URL")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_order_and_defaults() {
        let mut r = Registries::new();
        let hub: RegistryHost = "docker.io".parse().unwrap();
        let quay: RegistryHost = "quay.io".parse().unwrap();
        assert_eq!(
            r.chain(&hub)[0].1.base.as_str(),
            "https://registry-1.docker.io/"
        );
        assert_eq!(r.chain(&quay)[0].1.base.as_str(), "https://quay.io/");
        r.set_upstream(hub.clone(), Url::parse("http://127.0.0.1:5000").unwrap());
        r.add_fallback(hub.clone(), Url::parse("http://127.0.0.1:5001").unwrap());
        r.add_fallback(hub.clone(), Url::parse("http://127.0.0.1:5002").unwrap());
        let chain = r.chain(&hub);
        let urls: Vec<_> = chain.iter().map(|(s, e)| (*s, e.base.port())).collect();
        assert_eq!(
            urls,
            [
                (Source::Upstream, Some(5000)),
                (Source::Fallback, Some(5001)),
                (Source::Fallback, Some(5002))
            ]
        );
    }
}
