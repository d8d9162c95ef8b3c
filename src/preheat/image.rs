//! An image's content on this node: a reference resolved down to its blobs (for chosen
//! platforms), and those blobs fetched into the store. Preheat orders and the manager's tasks
//! (see [`crate::agent`]) both fetch images through here.

use std::collections::HashSet;
use std::str::FromStr;
use std::sync::Arc;

use futures_util::{Stream, StreamExt as _};
use http::HeaderValue;
use oci_spec::image::{ImageIndex, ImageManifest};
use serde::Serialize;

use crate::fetch::authz::ObjectKind;
use crate::fetch::manifest::ManifestRequest;
use crate::fetch::{Blob, BlobRequest, Fetcher, Meter};
use crate::oci::media::{DOCKER_MANIFEST_LIST, MANIFEST_TYPES, OCI_INDEX};
use crate::oci::{Digest, ErrorCode, ImageRef, Reference, RegistryError};

/// Blobs one node fetches at once for an image.
const PARALLEL_BLOBS: usize = 3;

/// A platform of an image index: `os/arch[/variant]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    os: String,
    arch: String,
    variant: Option<String>,
}

impl FromStr for Platform {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parts: Vec<&str> = s.split('/').collect();
        let ok =
            |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        match parts.as_slice() {
            [os, arch] if ok(os) && ok(arch) => Ok(Platform {
                os: (*os).into(),
                arch: (*arch).into(),
                variant: None,
            }),
            [os, arch, variant] if ok(os) && ok(arch) && ok(variant) => Ok(Platform {
                os: (*os).into(),
                arch: (*arch).into(),
                variant: Some((*variant).into()),
            }),
            _ => Err(format!(
                "invalid platform {s:?} (os/arch or os/arch/variant)"
            )),
        }
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.arch)?;
        match &self.variant {
            Some(v) => write!(f, "/{v}"),
            None => Ok(()),
        }
    }
}

impl Platform {
    /// Whether an index entry's platform is this one (no variant asked: any variant).
    fn matches(&self, p: &oci_spec::image::Platform) -> bool {
        p.os().to_string() == self.os
            && p.architecture().to_string() == self.arch
            && self
                .variant
                .as_ref()
                .is_none_or(|v| p.variant().as_deref() == Some(v.as_str()))
    }
}

/// What an image is made of, as one node resolved it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Resolved {
    /// The manifests read (the index first, if any).
    pub manifests: Vec<Digest>,
    /// Every config and layer blob, once each, with its size.
    pub blobs: Vec<(Digest, u64)>,
}

impl Resolved {
    /// Bytes of all the blobs.
    pub fn bytes(&self) -> u64 {
        self.blobs.iter().map(|(_, s)| s).sum()
    }
}

fn bad_manifest(digest: &Digest, e: impl std::fmt::Display) -> RegistryError {
    RegistryError::new(
        ErrorCode::ManifestInvalid,
        format!("manifest {digest} cannot be read: {e}"),
    )
}

/// Resolves `image` through `fetcher`'s manifest path (which stores the manifests and records
/// that the upstream let this node read them), down to its blobs: every platform of an index,
/// or those in `platforms`.
///
/// # Errors
/// The upstream's answer (unknown manifest, unauthorized), the chain's failure, a manifest that
/// does not parse, or platforms the index does not have.
pub async fn resolve(
    fetcher: &Fetcher,
    image: &ImageRef,
    platforms: &[Platform],
) -> Result<Resolved, RegistryError> {
    let accept: Vec<HeaderValue> = MANIFEST_TYPES
        .iter()
        .map(|t| HeaderValue::from_static(t))
        .collect();
    let get = |reference: Reference| {
        let req = ManifestRequest {
            registry: image.registry.clone(),
            repo: image.repo.clone(),
            reference,
            accept: accept.clone(),
            credentials: None,
            head: false,
        };
        async move {
            let m = fetcher.fetch_manifest(&req).await?;
            let body = match m.body {
                Some(b) => b,
                None => fetcher
                    .stored_manifest(&m.digest)
                    .and_then(|s| s.body)
                    .ok_or_else(|| bad_manifest(&m.digest, "no body"))?,
            };
            Ok::<_, RegistryError>((m.digest, m.media_type, body))
        }
    };
    let mut out = Resolved::default();
    let (digest, media_type, body) = get(image.reference.clone()).await?;
    out.manifests.push(digest.clone());
    let is_index = [OCI_INDEX, DOCKER_MANIFEST_LIST].contains(&media_type.as_str());
    let manifests = if is_index {
        let index: ImageIndex =
            serde_json::from_slice(&body).map_err(|e| bad_manifest(&digest, e))?;
        let mut chosen = Vec::new();
        for d in index.manifests() {
            let wanted = platforms.is_empty()
                || d.platform()
                    .as_ref()
                    .is_some_and(|p| platforms.iter().any(|w| w.matches(p)));
            if wanted {
                chosen.push(
                    d.digest()
                        .to_string()
                        .parse::<Digest>()
                        .map_err(|e| bad_manifest(&digest, e))?,
                );
            }
        }
        for p in platforms {
            let present = index
                .manifests()
                .iter()
                .any(|d| d.platform().as_ref().is_some_and(|q| p.matches(q)));
            if !present {
                return Err(RegistryError::new(
                    ErrorCode::ManifestUnknown,
                    format!("{image} has no manifest for platform {p}"),
                ));
            }
        }
        let mut read = Vec::new();
        for d in chosen {
            let (d, _, body) = get(Reference::Digest(d)).await?;
            out.manifests.push(d.clone());
            read.push((d, body));
        }
        read
    } else {
        vec![(digest, body)]
    };
    let mut seen = HashSet::new();
    for (digest, body) in manifests {
        let manifest: ImageManifest =
            serde_json::from_slice(&body).map_err(|e| bad_manifest(&digest, e))?;
        for d in std::iter::once(manifest.config()).chain(manifest.layers()) {
            // Foreign layers live elsewhere (their `urls`); the registry may not have them.
            if d.urls().as_ref().is_some_and(|u| !u.is_empty()) {
                continue;
            }
            let blob: Digest = d
                .digest()
                .to_string()
                .parse()
                .map_err(|e| bad_manifest(&digest, e))?;
            if seen.insert(blob.clone()) {
                out.blobs.push((blob, d.size()));
            }
        }
    }
    Ok(out)
}

/// Fetches `blobs` of `image` into the store (or finds them there), `PARALLEL_BLOBS` at a
/// time; yields each blob with its size as it is complete, or the first failure. Downloads it
/// starts go on `meter` (see [`BlobRequest::meter`]). Dropping the stream abandons the waits,
/// not the downloads: stop the meter to end those.
pub fn fetch_blobs<'a>(
    fetcher: &'a Arc<Fetcher>,
    image: &'a ImageRef,
    blobs: &'a [(Digest, u64)],
    meter: Option<Arc<Meter>>,
) -> impl Stream<Item = Result<(Digest, u64), RegistryError>> + Send + 'a {
    futures_util::stream::iter(blobs.iter().cloned())
        .map(move |(digest, size)| {
            let meter = meter.clone();
            async move {
                fetch_blob(fetcher, image, &digest, size, meter).await?;
                Ok((digest, size))
            }
        })
        .buffer_unordered(PARALLEL_BLOBS)
}

/// Fetches one blob into the store (or finds it there) and records that the upstream lets
/// this node's anonymous clients read it, for pulls while the upstream is down.
async fn fetch_blob(
    fetcher: &Arc<Fetcher>,
    image: &ImageRef,
    digest: &Digest,
    size: u64,
    meter: Option<Arc<Meter>>,
) -> Result<(), RegistryError> {
    let req = BlobRequest {
        registry: image.registry.clone(),
        repo: image.repo.clone(),
        digest: digest.clone(),
        credentials: None,
        file: None,
        meter,
    };
    match fetcher.blob(&req)? {
        Blob::Stored { .. } => {}
        Blob::Downloading { download, .. } => download.finished().await?,
    }
    let stored = fetcher.store().blob_size(digest);
    if stored != Some(size) {
        return Err(RegistryError::new(
            ErrorCode::BlobUnknown,
            format!("blob {digest} is not in the store after its download"),
        ));
    }
    fetcher
        .authorizer()
        .check(&image.registry, &image.repo, ObjectKind::Blob, digest, None)
        .await
}
