//! The OCI vocabulary: digests, names and references, manifest media types, the
//! distribution-spec error envelope, and the client that talks to upstream registries.

pub mod auth;
pub mod client;
pub mod digest;
pub mod error;
pub mod media;
pub mod name;

pub use auth::{Challenge, Credentials};
pub use client::{
    Endpoint, RegistryClient, Timeouts, TransportError, UpstreamRequest, install_crypto_provider,
};
pub use digest::{Algorithm, Digest, DigestError, Hasher};
pub use error::{ErrorCode, RegistryError};
pub use media::MediaType;
pub use name::{ImageRef, NameError, Reference, RegistryHost, RepoName, Tag};
