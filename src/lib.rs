//! shoal moves container-image layers and files onto many hosts at once by having the hosts
//! serve each other, so that the origin sends each byte about once per cluster.
//!
//! A map of the crate, following the architecture:
//!
//! - [`oci`]: the OCI vocabulary — [`oci::Digest`], names and references, manifest media types,
//!   the distribution-spec error envelope, and the upstream registry client (token and basic
//!   auth, redirects).
//! - [`store`]: the content-addressed store on disk; blobs become visible only after they are
//!   verified, fsynced and renamed into place.
//! - [`fetch`]: the download engine — single flight per digest, the source chain (upstream, then
//!   standby mirrors), streaming to every waiting client, authorization of cached content.
//! - [`mirror`]: the node's HTTP servers — the registry-mirror API and the admin endpoints.
//! - [`metrics`]: the `shoal_` Prometheus metrics, registered in a registry the caller owns.
//! - [`config`]: config file structs, validation into typed settings.
//! - [`manager`]: the control plane — REST API, database, permissions, targets, tasks and
//!   schedules, statistics; [`manager::protocol`] is its contract with the nodes.
//! - [`agent`]: the node's side of the control plane — joining the manager, heartbeats,
//!   carrying out assigned tasks (with the same fetch functions as [`preheat`]) and reporting.
//! - [`node`]: wiring one node together (used by the CLI and by in-process tests).
//! - [`cli`]: the `shoal` subcommands; thin.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod agent;
pub mod cli;
pub mod config;
pub mod fetch;
pub mod files;
pub mod manager;
pub mod metrics;
pub mod mirror;
pub mod node;
pub mod oci;
pub mod p2p;
pub mod preheat;
pub mod store;
