//! Generated test images: an OCI image layout of random tar+gzip layers, pushed with `skopeo`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use flate2::Compression;
use flate2::write::GzEncoder;
use rand::TryRng;
use rand::rngs::SysRng;
use serde_json::{Value, json};

use super::{Registry, check_output, sha256_hex};

/// OCI image index media type.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// OCI image manifest media type.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image config media type.
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// OCI gzip layer media type.
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// Files in a generated layer larger than this are split in two.
const SPLIT_ABOVE: usize = 4096;

/// A generated image stored as an OCI image layout (tagged `latest` there).
#[derive(Debug, Clone)]
pub struct TestImage {
    /// The OCI image layout directory (oci-layout, index.json, blobs/sha256/…).
    pub layout_dir: PathBuf,
    /// Digest of the image index, for a multi-platform image.
    pub index_digest: Option<String>,
    /// One manifest per platform (a single one for a single-platform image).
    pub manifests: Vec<ManifestInfo>,
}

/// One image manifest of a [`TestImage`].
#[derive(Debug, Clone)]
pub struct ManifestInfo {
    /// Manifest digest.
    pub digest: String,
    /// `(os, architecture)` of its index entry; `None` for a single-platform image (linux/amd64).
    pub platform: Option<(String, String)>,
    /// Digest of the config blob.
    pub config_digest: String,
    /// Layers, base first.
    pub layers: Vec<LayerInfo>,
}

/// One tar+gzip layer of a [`ManifestInfo`].
#[derive(Debug, Clone)]
pub struct LayerInfo {
    /// Digest of the compressed blob.
    pub digest: String,
    /// Size of the compressed blob.
    pub size: u64,
    /// Digest of the uncompressed tar (as in the config's `rootfs.diff_ids`).
    pub diff_id: String,
    /// Regular files in the tar: path (relative, no leading `/`) and contents.
    pub files: Vec<(String, Vec<u8>)>,
}

impl TestImage {
    /// Digest a tag resolves to: the index for multi-platform images, else the manifest.
    pub fn top_digest(&self) -> &str {
        self.index_digest
            .as_deref()
            .unwrap_or(&self.manifests[0].digest)
    }

    /// The manifest for `os`/`arch`; a single-platform image's manifest matches linux/amd64.
    pub fn manifest_for(&self, os: &str, arch: &str) -> &ManifestInfo {
        self.manifests
            .iter()
            .find(|m| match &m.platform {
                Some((o, a)) => o == os && a == arch,
                None => os == "linux" && arch == "amd64",
            })
            .unwrap_or_else(|| panic!("test image has no {os}/{arch} manifest"))
    }

    /// Path of blob `digest` in the layout.
    pub fn blob_path(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").expect("sha256 digest");
        self.layout_dir.join("blobs/sha256").join(hex)
    }

    /// Contents of blob `digest` (manifest, index, config or layer).
    pub fn blob(&self, digest: &str) -> Vec<u8> {
        std::fs::read(self.blob_path(digest)).unwrap()
    }

    /// The first manifest's config and layers, as `(digest, size)`: what a node holds after
    /// pulling or preheating the image for that platform.
    pub fn blobs(&self) -> Vec<(String, u64)> {
        let m = &self.manifests[0];
        let config = std::fs::metadata(self.blob_path(&m.config_digest))
            .unwrap()
            .len();
        std::iter::once((m.config_digest.clone(), config))
            .chain(m.layers.iter().map(|l| (l.digest.clone(), l.size)))
            .collect()
    }

    /// Every layer digest of every manifest.
    pub fn layer_digests(&self) -> Vec<String> {
        self.manifests
            .iter()
            .flat_map(|m| m.layers.iter().map(|l| l.digest.clone()))
            .collect()
    }
}

/// Writes an OCI layout in `dir` with random layers of about `layer_sizes` bytes each, for
/// each `(os, arch)` of `platforms` (distinct layers per platform, behind an image index), or
/// a single linux/amd64 manifest if `platforms` is empty.
pub fn make_image(dir: &Path, layer_sizes: &[usize], platforms: &[(&str, &str)]) -> TestImage {
    std::fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();

    let multi = !platforms.is_empty();
    let targets: &[(&str, &str)] = if multi {
        platforms
    } else {
        &[("linux", "amd64")]
    };
    let mut manifests = Vec::new();
    let mut entries = Vec::new();
    for &(os, arch) in targets {
        let (info, descriptor) = write_manifest(dir, layer_sizes, os, arch);
        manifests.push(ManifestInfo {
            platform: multi.then(|| (os.to_owned(), arch.to_owned())),
            ..info
        });
        entries.push(descriptor);
    }

    let (mut top, index_digest) = if multi {
        let index = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries});
        let top = write_json_blob(dir, OCI_INDEX, &index);
        let digest = top["digest"].as_str().unwrap().to_owned();
        (top, Some(digest))
    } else {
        let mut top = entries.pop().unwrap();
        top.as_object_mut().unwrap().remove("platform");
        (top, None)
    };
    top["annotations"] = json!({"org.opencontainers.image.ref.name": "latest"});
    let layout_index = json!({"schemaVersion": 2, "manifests": [top]});
    std::fs::write(dir.join("index.json"), layout_index.to_string()).unwrap();

    TestImage {
        layout_dir: dir.to_owned(),
        index_digest,
        manifests,
    }
}

/// Writes layers, config and manifest for one platform; returns the manifest's info and its
/// index descriptor (with `platform`).
fn write_manifest(
    dir: &Path,
    layer_sizes: &[usize],
    os: &str,
    arch: &str,
) -> (ManifestInfo, Value) {
    let layers: Vec<LayerInfo> = layer_sizes.iter().map(|&s| write_layer(dir, s)).collect();
    let (arch, variant) = match arch.split_once('/') {
        Some((arch, variant)) => (arch, Some(variant)),
        None => (arch, None),
    };
    let mut platform = json!({"os": os, "architecture": arch});
    if let Some(variant) = variant {
        platform["variant"] = json!(variant);
    }

    let mut config = platform.clone();
    config["created"] = json!("2024-01-01T00:00:00Z");
    config["config"] = json!({"Env": ["PATH=/usr/local/bin:/usr/bin:/bin"]});
    config["rootfs"] = json!({
        "type": "layers",
        "diff_ids": layers.iter().map(|l| l.diff_id.as_str()).collect::<Vec<_>>(),
    });
    let config_desc = write_json_blob(dir, OCI_CONFIG, &config);

    let layer_descs: Vec<Value> = layers
        .iter()
        .map(|l| json!({"mediaType": OCI_LAYER_GZIP, "digest": l.digest, "size": l.size}))
        .collect();
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": config_desc,
        "layers": layer_descs,
    });
    let mut descriptor = write_json_blob(dir, OCI_MANIFEST, &manifest);
    descriptor["platform"] = platform;

    let info = ManifestInfo {
        digest: descriptor["digest"].as_str().unwrap().to_owned(),
        platform: None,
        config_digest: config_desc["digest"].as_str().unwrap().to_owned(),
        layers,
    };
    (info, descriptor)
}

/// Writes one layer: a tar with a directory of one or two random files totalling `size` bytes,
/// gzipped at the fastest level (random data does not compress, so the blob is ≈ `size`).
fn write_layer(dir: &Path, size: usize) -> LayerInfo {
    let tag = hex::encode(rand::random::<[u8; 8]>());
    let top = format!("layer-{tag}");
    let sizes = if size > SPLIT_ABOVE {
        vec![size / 2, size - size / 2]
    } else {
        vec![size]
    };
    let files: Vec<(String, Vec<u8>)> = sizes
        .into_iter()
        .enumerate()
        .map(|(i, len)| {
            // The kernel's generator: rand's generic fill would run unoptimized in test builds.
            let mut data = vec![0u8; len];
            SysRng.try_fill_bytes(&mut data).expect("getrandom");
            (format!("{top}/file-{i}.bin"), data)
        })
        .collect();

    let mut tar = tar::Builder::new(Vec::with_capacity(size + 4096));
    let mut header = tar::Header::new_ustar();
    header.set_entry_type(tar::EntryType::Directory);
    header.set_mode(0o755);
    header.set_mtime(1_700_000_000);
    header.set_size(0);
    tar.append_data(&mut header, format!("{top}/"), std::io::empty())
        .unwrap();
    for (path, data) in &files {
        let mut header = tar::Header::new_ustar();
        header.set_mode(0o644);
        header.set_mtime(1_700_000_000);
        header.set_size(data.len() as u64);
        tar.append_data(&mut header, path, data.as_slice()).unwrap();
    }
    let tar = tar.into_inner().unwrap();

    let mut gz = GzEncoder::new(Vec::with_capacity(tar.len() + 1024), Compression::fast());
    gz.write_all(&tar).unwrap();
    let blob = gz.finish().unwrap();
    let (digest, size) = write_blob(dir, &blob);
    LayerInfo {
        digest,
        size,
        diff_id: sha256_hex(&tar),
        files,
    }
}

fn write_blob(dir: &Path, data: &[u8]) -> (String, u64) {
    let digest = sha256_hex(data);
    let path = dir.join("blobs/sha256").join(&digest["sha256:".len()..]);
    std::fs::write(path, data).unwrap();
    (digest, data.len() as u64)
}

/// Writes `value` as a blob and returns its descriptor.
fn write_json_blob(dir: &Path, media_type: &str, value: &Value) -> Value {
    let (digest, size) = write_blob(dir, value.to_string().as_bytes());
    json!({"mediaType": media_type, "digest": digest, "size": size})
}

/// Pushes `image` (all platforms, digests preserved) to `registry` as `REPO:TAG` with skopeo.
pub fn push_image(
    image: &TestImage,
    registry: &Registry,
    repo: &str,
    tag: &str,
    creds: Option<(&str, &str)>,
) {
    push_image_to(image, &registry.host(), repo, tag, creds);
}

/// Pushes `image` to the plain-http registry at `host` (`127.0.0.1:PORT`) as `REPO:TAG`.
pub fn push_image_to(
    image: &TestImage,
    host: &str,
    repo: &str,
    tag: &str,
    creds: Option<(&str, &str)>,
) {
    let mut cmd = Command::new("skopeo");
    cmd.args([
        "--insecure-policy",
        "copy",
        "--all",
        "--preserve-digests",
        "--dest-tls-verify=false",
    ]);
    match creds {
        Some((user, pass)) => cmd.arg(format!("--dest-creds={user}:{pass}")),
        None => cmd.arg("--dest-no-creds"),
    };
    cmd.arg(format!("oci:{}:latest", image.layout_dir.display()))
        .arg(format!("docker://{host}/{repo}:{tag}"));
    let output = cmd.output().expect("run skopeo");
    check_output(&format!("skopeo copy to {host}/{repo}:{tag}"), &output);
}

/// Uploads `data` as a blob of `repo` (anonymous monolithic upload); returns its digest.
pub fn push_blob(registry_url: &str, repo: &str, data: &[u8]) -> String {
    let digest = sha256_hex(data);
    let start = super::http_request(
        "POST",
        &format!("{registry_url}/v2/{repo}/blobs/uploads/"),
        &[],
        &[],
    )
    .expect("POST blob upload");
    assert_eq!(start.status, 202, "start upload: {start:?}");
    let location = start.header("location").expect("upload Location");
    let location = if location.starts_with('/') {
        format!("{registry_url}{location}")
    } else {
        location.to_owned()
    };
    let sep = if location.contains('?') { '&' } else { '?' };
    let put = super::http_request(
        "PUT",
        &format!("{location}{sep}digest={digest}"),
        &[("Content-Type", "application/octet-stream")],
        data,
    )
    .expect("PUT blob");
    assert_eq!(
        put.status, 201,
        "finish upload of {digest}: status {}",
        put.status
    );
    digest
}
