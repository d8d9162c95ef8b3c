//! The node's Prometheus metrics. They are registered in a registry the caller gives, never in
//! a global one, so that several nodes in one test process keep separate counts.

use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};

/// Where bytes delivered to a client came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// This node's store.
    Cache,
    /// The registry's own upstream.
    Upstream,
    /// A standby mirror.
    Fallback,
    /// Peers of the swarm.
    Peer,
}

impl Source {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Source::Cache => "cache",
            Source::Upstream => "upstream",
            Source::Fallback => "fallback",
            Source::Peer => "peer",
        }
    }
}

/// Handles to every metric the node exports.
#[derive(Clone)]
pub struct NodeMetrics {
    /// `shoal_served_bytes_total{source}`: bytes delivered to clients, by origin.
    pub served_bytes: IntCounterVec,
    /// `shoal_upstream_requests_total{kind,status}`: requests to upstreams and fallbacks.
    pub upstream_requests: IntCounterVec,
    /// `shoal_piece_verify_failures_total`: pieces that failed their hash.
    pub piece_verify_failures: IntCounter,
    /// `shoal_blob_verify_failures_total{source}`: whole blobs or manifests whose bytes did not
    /// match their digest (the content was discarded).
    pub blob_verify_failures: IntCounterVec,
    /// `shoal_stale_manifests_served_total`: tags served from the last known mapping because
    /// every upstream was unreachable.
    pub stale_manifests_served: IntCounter,
    /// `shoal_downloads_in_flight`: blob downloads running now.
    pub downloads_in_flight: IntGauge,
    /// `shoal_downloads_total{result}`: finished blob downloads.
    pub downloads: IntCounterVec,
    /// `shoal_auth_checks_total{result}`: upstream authorization checks made for cached content.
    pub auth_checks: IntCounterVec,
    /// `shoal_p2p_sent_bytes_total`: piece bytes sent to peers.
    pub p2p_sent_bytes: IntCounter,
    /// `shoal_p2p_received_bytes_total`: piece bytes received from peers (verified or not).
    pub p2p_received_bytes: IntCounter,
    /// `shoal_peer_bans_total`: peers banned for sending corrupt pieces.
    pub peer_bans: IntCounter,
    /// `shoal_evictions_total`: blobs removed to keep the store within its quota.
    pub evictions: IntCounter,
    /// `shoal_peers_connected`: peers of the swarm connected now.
    pub peers_connected: IntGauge,
}

impl NodeMetrics {
    /// Creates the metrics and registers them in `registry`.
    ///
    /// # Errors
    /// When a metric of the same name is already registered there.
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let counter_vec = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels)?;
            registry.register(Box::new(c.clone()))?;
            Ok::<_, prometheus::Error>(c)
        };
        let served_bytes = counter_vec(
            "shoal_served_bytes_total",
            "Bytes delivered to clients, by where they came from.",
            &["source"],
        )?;
        for s in [
            Source::Cache,
            Source::Upstream,
            Source::Fallback,
            Source::Peer,
        ] {
            served_bytes.with_label_values(&[s.label()]);
        }
        let upstream_requests = counter_vec(
            "shoal_upstream_requests_total",
            "Requests sent to upstream registries and standby mirrors.",
            &["kind", "status"],
        )?;
        let blob_verify_failures = counter_vec(
            "shoal_blob_verify_failures_total",
            "Blobs and manifests whose content did not match their digest.",
            &["source"],
        )?;
        let downloads = counter_vec(
            "shoal_downloads_total",
            "Finished blob downloads by result.",
            &["result"],
        )?;
        let auth_checks = counter_vec(
            "shoal_auth_checks_total",
            "Authorization checks against the upstream for cached content.",
            &["result"],
        )?;
        let piece_verify_failures = IntCounter::new(
            "shoal_piece_verify_failures_total",
            "Pieces whose hash did not match the piece map.",
        )?;
        registry.register(Box::new(piece_verify_failures.clone()))?;
        let stale_manifests_served = IntCounter::new(
            "shoal_stale_manifests_served_total",
            "Tags answered from the last known mapping while every upstream was unreachable.",
        )?;
        registry.register(Box::new(stale_manifests_served.clone()))?;
        let downloads_in_flight =
            IntGauge::new("shoal_downloads_in_flight", "Blob downloads running now.")?;
        registry.register(Box::new(downloads_in_flight.clone()))?;
        let counter = |name: &str, help: &str| {
            let c = IntCounter::new(name, help)?;
            registry.register(Box::new(c.clone()))?;
            Ok::<_, prometheus::Error>(c)
        };
        let p2p_sent_bytes = counter("shoal_p2p_sent_bytes_total", "Piece bytes sent to peers.")?;
        let p2p_received_bytes = counter(
            "shoal_p2p_received_bytes_total",
            "Piece bytes received from peers.",
        )?;
        let peer_bans = counter(
            "shoal_peer_bans_total",
            "Peers banned for sending corrupt pieces.",
        )?;
        let evictions = counter(
            "shoal_evictions_total",
            "Blobs removed to keep the store within its quota.",
        )?;
        let peers_connected =
            IntGauge::new("shoal_peers_connected", "Peers of the swarm connected now.")?;
        registry.register(Box::new(peers_connected.clone()))?;
        Ok(NodeMetrics {
            served_bytes,
            upstream_requests,
            piece_verify_failures,
            blob_verify_failures,
            stale_manifests_served,
            downloads_in_flight,
            downloads,
            auth_checks,
            p2p_sent_bytes,
            p2p_received_bytes,
            peer_bans,
            evictions,
            peers_connected,
        })
    }

    /// Counts bytes delivered to a client.
    pub fn served(&self, source: Source, bytes: u64) {
        self.served_bytes
            .with_label_values(&[source.label()])
            .inc_by(bytes);
    }

    /// Counts piece bytes sent to a peer.
    pub fn p2p_sent(&self, bytes: u64) {
        self.p2p_sent_bytes.inc_by(bytes);
    }

    /// Counts one upstream request.
    pub fn upstream(&self, kind: &str, status: &str) {
        self.upstream_requests
            .with_label_values(&[kind, status])
            .inc();
    }
}
