//! Authorization for content the node already holds.
//!
//! A blob or manifest in the store may belong to a private repository. Before it is served to a
//! client that did not itself fetch it from the upstream, the node asks the upstream (with that
//! client's credentials) whether the client may read that object in that repository: a `HEAD`
//! of the object. The answer is cached briefly per credential, repository and object. The probe
//! is per object, not per repository, so a client cannot read a private layer by asking for its
//! digest under a public repository's name.
//!
//! When every upstream is unreachable the node still serves an object that an anonymous client,
//! or this same credential, was allowed to read in the last day; anything else is refused.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::Method;

use super::failures::{Failures, Verdict, judge};
use super::gate::{Gate, Gates};
use super::sources::Registries;
use crate::metrics::NodeMetrics;
use crate::oci::{
    Credentials, Digest, ErrorCode, RegistryClient, RegistryError, RegistryHost, RepoName,
    UpstreamRequest,
};

/// How long a positive answer is trusted without asking again.
const FRESH: Duration = Duration::from_secs(60);
/// How long a positive answer still counts while every upstream is unreachable.
const OFFLINE_GRACE: Duration = Duration::from_secs(24 * 3600);

/// What is being read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ObjectKind {
    /// A blob (`/blobs/`).
    Blob,
    /// A manifest (`/manifests/`).
    Manifest,
}

#[derive(Clone, PartialEq, Eq, Hash)]
struct Key {
    registry: RegistryHost,
    repo: RepoName,
    kind: ObjectKind,
    digest: Digest,
    credentials: String,
}

/// The authorization cache and prober.
pub struct Authorizer {
    client: Arc<RegistryClient>,
    registries: Arc<Registries>,
    metrics: NodeMetrics,
    granted: Mutex<HashMap<Key, Instant>>,
    probing: Gates<Key>,
}

impl Authorizer {
    /// A new, empty cache.
    pub fn new(
        client: Arc<RegistryClient>,
        registries: Arc<Registries>,
        metrics: NodeMetrics,
    ) -> Self {
        Authorizer {
            client,
            registries,
            metrics,
            granted: Mutex::new(HashMap::new()),
            probing: Mutex::new(HashMap::new()),
        }
    }

    fn key(
        registry: &RegistryHost,
        repo: &RepoName,
        kind: ObjectKind,
        digest: &Digest,
        credentials: Option<&Credentials>,
    ) -> Key {
        Key {
            registry: registry.clone(),
            repo: repo.clone(),
            kind,
            digest: digest.clone(),
            credentials: credentials
                .map(Credentials::fingerprint)
                .unwrap_or_else(|| "anonymous".into()),
        }
    }

    /// Records that the upstream let this client read this object (it just served it to them).
    pub fn grant(
        &self,
        registry: &RegistryHost,
        repo: &RepoName,
        kind: ObjectKind,
        digest: &Digest,
        credentials: Option<&Credentials>,
    ) {
        let key = Self::key(registry, repo, kind, digest, credentials);
        let mut granted = self.granted.lock().unwrap();
        if granted.len() > 100_000 {
            granted.retain(|_, at| at.elapsed() < OFFLINE_GRACE);
        }
        granted.insert(key, Instant::now());
    }

    /// Checks that this client may read this object, asking the upstream unless a recent answer
    /// is cached.
    ///
    /// # Errors
    /// `UNAUTHORIZED` (with the upstream's challenge), `DENIED`, the object's "unknown" code when
    /// the upstream says this repository does not hold it, or `UNAVAILABLE` when no upstream can
    /// be asked and nothing vouches for the client.
    pub async fn check(
        &self,
        registry: &RegistryHost,
        repo: &RepoName,
        kind: ObjectKind,
        digest: &Digest,
        credentials: Option<&Credentials>,
    ) -> Result<(), RegistryError> {
        let key = Self::key(registry, repo, kind, digest, credentials);
        if self.fresh(&key) {
            return Ok(());
        }
        // One probe per key at a time: fifty clients asking together cost one upstream request.
        let gate = Gate::enter(&self.probing, key.clone());
        let result = {
            let _turn = gate.turn().await;
            if self.fresh(&key) {
                Ok(())
            } else {
                self.probe(&key, credentials).await
            }
        };
        drop(gate);
        self.metrics
            .auth_checks
            .with_label_values(&[if result.is_ok() { "allowed" } else { "refused" }])
            .inc();
        result
    }

    fn fresh(&self, key: &Key) -> bool {
        self.granted
            .lock()
            .unwrap()
            .get(key)
            .is_some_and(|at| at.elapsed() < FRESH)
    }

    async fn probe(
        &self,
        key: &Key,
        credentials: Option<&Credentials>,
    ) -> Result<(), RegistryError> {
        let (segment, missing) = match key.kind {
            ObjectKind::Blob => ("blobs", ErrorCode::BlobUnknown),
            ObjectKind::Manifest => ("manifests", ErrorCode::ManifestUnknown),
        };
        let req = UpstreamRequest {
            method: Method::HEAD,
            repo: &key.repo,
            path: format!("{}/{segment}/{}", key.repo, key.digest),
            accept: &[],
            range_from: None,
            client: credentials,
        };
        let mut failures = Failures::default();
        for (source, endpoint) in self.registries.chain(&key.registry) {
            match self.client.send(&endpoint, &req).await {
                Err(e) => failures.unreachable(source, &e),
                Ok(resp) => match judge(source, &resp, missing) {
                    Verdict::Use => {
                        self.grant(&key.registry, &key.repo, key.kind, &key.digest, credentials);
                        return Ok(());
                    }
                    Verdict::Final(e) => return Err(e),
                    Verdict::Next => failures.status(
                        source,
                        endpoint.base.host_str().unwrap_or("?"),
                        resp.status(),
                    ),
                },
            }
        }
        // Nobody could be asked: serve only what an anonymous client, or this very credential,
        // was allowed to read recently.
        let anonymous = Key {
            credentials: "anonymous".into(),
            ..key.clone()
        };
        let granted = self.granted.lock().unwrap();
        let vouched = [key, &anonymous].iter().any(|k| {
            granted
                .get(k)
                .is_some_and(|at| at.elapsed() < OFFLINE_GRACE)
        });
        drop(granted);
        if vouched {
            tracing::info!(repo = %key.repo, digest = %key.digest, "upstream unreachable; serving cached content known to be readable");
            return Ok(());
        }
        let mut e = failures.into_error();
        e.message = format!("cannot confirm access with the upstream: {}", e.message);
        Err(e)
    }
}
