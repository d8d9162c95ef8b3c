//! `shoal get`: downloads a file through the local node (and so through the swarm).
//!
//! The bytes go to a hidden temporary file beside the output (`.NAME.shoal-part`), which is
//! renamed to the output only when the download is complete and, with `--digest`, verified: an
//! interrupted or failed download never leaves a partial file at the output. Run again, it
//! resumes from the temporary file with a `Range` request.

use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use reqwest::{StatusCode, Url, header};
use sha2::{Digest as _, Sha256};

use super::GetArgs;
use crate::fetch::limit::TokenBucket;

/// Exit status: the file (or every file) is in place.
pub const EXIT_OK: i32 = 0;
/// Exit status: the download failed (origin or node error, connection lost).
pub const EXIT_FAILED: i32 = 1;
/// Exit status: bad input (URL, scheme, options, an unsafe name).
pub const EXIT_USAGE: i32 = 2;
/// Exit status: the content does not match `--digest`.
pub const EXIT_DIGEST: i32 = 3;

/// Why one download did not end in place.
#[derive(Debug, thiserror::Error)]
enum GetError {
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Failed(String),
    #[error("{0}")]
    Digest(String),
    /// The transfer broke off; what arrived is kept for a resume.
    #[error("{0}")]
    Broken(String),
}

impl GetError {
    fn exit(&self) -> i32 {
        match self {
            GetError::Usage(_) => EXIT_USAGE,
            GetError::Failed(_) | GetError::Broken(_) => EXIT_FAILED,
            GetError::Digest(_) => EXIT_DIGEST,
        }
    }
}

fn failed(e: impl std::fmt::Display) -> GetError {
    GetError::Failed(e.to_string())
}

/// `url` without its query: what messages may show (a query may carry a signature).
fn shown(url: &Url) -> String {
    let mut u = url.clone();
    if u.query().is_some() {
        u.set_query(Some("…"));
    }
    u.to_string()
}

/// The last path segment of `url`, decoded, if it is a safe file name.
fn file_name(url: &Url) -> Option<String> {
    let last = url.path_segments()?.rev().find(|s| !s.is_empty())?;
    safe_segment(last)
}

/// A percent-decoded path segment that names a file inside a directory: not empty, not `.` or
/// `..`, no separator or NUL.
fn safe_segment(raw: &str) -> Option<String> {
    let s = percent_encoding::percent_decode_str(raw)
        .decode_utf8()
        .ok()?
        .into_owned();
    let ok = !s.is_empty() && s != "." && s != ".." && !s.contains(['/', '\\', '\0']);
    ok.then_some(s)
}

/// Where the file goes: `-o PATH` (a directory, existing or ending in `/`, gets the URL's
/// name), or `-O` (the URL's name in the current directory).
fn output_path(args: &GetArgs, url: &Url) -> Result<PathBuf, GetError> {
    let name = || {
        file_name(url).ok_or_else(|| {
            GetError::Usage(format!("{} has no file name: give -o PATH", shown(url)))
        })
    };
    match (&args.output, args.remote_name) {
        (Some(p), _) if p.is_dir() || p.to_string_lossy().ends_with('/') => Ok(p.join(name()?)),
        (Some(p), _) => Ok(p.clone()),
        (None, true) => Ok(PathBuf::from(name()?)),
        (None, false) => Err(GetError::Usage("give -o PATH or -O".into())),
    }
}

fn part_path(output: &Path) -> PathBuf {
    let name = output
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    output.with_file_name(format!(".{name}.shoal-part"))
}

/// Shows progress: a bar on a terminal, a line every few seconds otherwise.
struct Progress {
    bar: Option<indicatif::ProgressBar>,
    name: String,
    started: Instant,
    last_line: Instant,
    quiet: bool,
}

impl Progress {
    fn new(name: &str, quiet: bool) -> Progress {
        let bar = (!quiet && std::io::stderr().is_terminal()).then(|| {
            let bar = indicatif::ProgressBar::new(0);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{msg} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
                )
                .expect("valid template")
                .progress_chars("=> "),
            );
            bar.set_message(name.to_owned());
            bar
        });
        Progress {
            bar,
            name: name.into(),
            started: Instant::now(),
            last_line: Instant::now(),
            quiet,
        }
    }

    fn update(&mut self, done: u64, total: Option<u64>) {
        if let Some(bar) = &self.bar {
            bar.set_length(total.unwrap_or(done));
            bar.set_position(done);
        } else if !self.quiet && self.last_line.elapsed() >= Duration::from_secs(5) {
            self.last_line = Instant::now();
            eprintln!("{}", self.line(done, total));
        }
    }

    fn line(&self, done: u64, total: Option<u64>) -> String {
        let mib = |n: u64| n as f64 / f64::from(1u32 << 20);
        let secs = self.started.elapsed().as_secs_f64().max(0.001);
        match total {
            Some(t) => format!(
                "{}: {:.1}/{:.1} MiB ({:.0}%), {:.1} MiB/s",
                self.name,
                mib(done),
                mib(t),
                100.0 * done as f64 / t.max(1) as f64,
                mib(done) / secs
            ),
            None => format!(
                "{}: {:.1} MiB, {:.1} MiB/s",
                self.name,
                mib(done),
                mib(done) / secs
            ),
        }
    }

    fn finish(&self, done: u64) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
        if !self.quiet {
            eprintln!("{}", self.line(done, Some(done)));
        }
    }
}

/// The node's error message from a registry error envelope (or the body).
fn node_message(body: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["errors"][0]["message"].as_str().map(str::to_owned))
        .unwrap_or_else(|| String::from_utf8_lossy(body).trim().to_owned())
}

/// The code of a registry error envelope.
fn node_code(body: &[u8]) -> Option<String> {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()?
        .get("errors")?
        .get(0)?
        .get("code")?
        .as_str()
        .map(str::to_owned)
}

struct Getter {
    client: reqwest::Client,
    node: Url,
    headers: reqwest::header::HeaderMap,
    limit: Option<TokenBucket>,
    quiet: bool,
}

impl Getter {
    fn files_url(&self, url: &Url, digest: Option<&str>) -> Url {
        let mut u = self.node.join("api/v1/files").expect("valid path");
        u.query_pairs_mut().append_pair("url", url.as_str());
        if let Some(d) = digest {
            u.query_pairs_mut().append_pair("digest", d);
        }
        u
    }

    /// GETs `url` through the node into memory (directory listings).
    async fn fetch_small(&self, url: &Url) -> Result<Vec<u8>, GetError> {
        let resp = self
            .client
            .get(self.files_url(url, None))
            .headers(self.headers.clone())
            .send()
            .await
            .map_err(|e| failed(format!("cannot reach the node: {e}")))?;
        let status = resp.status();
        let body = resp.bytes().await.map_err(failed)?;
        if !status.is_success() {
            return Err(failed(format!(
                "{}: {status}: {}",
                shown(url),
                node_message(&body)
            )));
        }
        Ok(body.to_vec())
    }

    /// Downloads `url` to `output` (resuming a temporary file left by an earlier run).
    async fn get(&self, url: &Url, digest: Option<&str>, output: &Path) -> Result<u64, GetError> {
        let part = part_path(output);
        if let Some(dir) = output.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| failed(format!("cannot create {}: {e}", dir.display())))?;
        }
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(&part)
            .map_err(|e| failed(format!("cannot write {}: {e}", part.display())))?;
        // What an earlier run left is hashed again: the digest covers the whole file.
        let mut hasher = Sha256::new();
        let mut have = 0u64;
        {
            let mut buf = vec![0u8; 1 << 20];
            loop {
                let n = file.read(&mut buf).map_err(failed)?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
                have += n as u64;
            }
        }
        // What the part file holds: this URL's content as the node named it (its ETag). Bytes of
        // another URL or another version are not resumed.
        let meta = part.with_extension("shoal-part.meta");
        let url_key = hex::encode(Sha256::digest(url.as_str().as_bytes()));
        let saved = std::fs::read_to_string(&meta).ok();
        let saved_etag = saved
            .as_deref()
            .and_then(|m| m.split_once('\n'))
            .filter(|(k, _)| *k == url_key)
            .map(|(_, e)| e.trim().to_owned());
        if have > 0 && saved_etag.is_none() {
            restart(&mut file, &mut hasher, &mut have)?;
        }
        let mut attempts = 0;
        let (mut resp, status, total) = loop {
            attempts += 1;
            let mut req = self
                .client
                .get(self.files_url(url, digest))
                .headers(self.headers.clone());
            if have > 0 {
                req = req.header(header::RANGE, format!("bytes={have}-"));
            }
            let resp = req
                .send()
                .await
                .map_err(|e| failed(format!("cannot reach the node: {e}")))?;
            let status = resp.status();
            let etag = resp
                .headers()
                .get(header::ETAG)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            match status {
                StatusCode::PARTIAL_CONTENT if etag.is_some() && etag == saved_etag => {
                    let total = content_range_total(&resp);
                    break (resp, status, total);
                }
                // Another version, or nothing left to ask for: start over, once.
                StatusCode::PARTIAL_CONTENT | StatusCode::RANGE_NOT_SATISFIABLE if attempts < 2 => {
                    restart(&mut file, &mut hasher, &mut have)?;
                    continue;
                }
                StatusCode::OK => {
                    if have > 0 {
                        restart(&mut file, &mut hasher, &mut have)?;
                    }
                    if let Some(e) = &etag {
                        std::fs::write(&meta, format!("{url_key}\n{e}\n")).map_err(failed)?;
                    }
                    let total = resp.content_length();
                    break (resp, status, total);
                }
                _ => break (resp, status, None),
            }
        };
        let total = match status {
            StatusCode::PARTIAL_CONTENT | StatusCode::OK => total,
            _ => {
                let body = resp.bytes().await.unwrap_or_default();
                drop(file);
                let message = format!("{}: {status}: {}", shown(url), node_message(&body));
                if node_code(&body).as_deref() == Some("DIGEST_INVALID") {
                    let _ = std::fs::remove_file(&part);
                    let _ = std::fs::remove_file(&meta);
                    return Err(GetError::Digest(format!("{message}; nothing was written")));
                }
                if have == 0 {
                    let _ = std::fs::remove_file(&part);
                    let _ = std::fs::remove_file(&meta);
                }
                return Err(failed(message));
            }
        };
        let name = output
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut progress = Progress::new(&name, self.quiet);
        {
            loop {
                let chunk = match resp.chunk().await {
                    Ok(Some(c)) => c,
                    Ok(None) => break,
                    Err(e) => {
                        return Err(GetError::Broken(format!(
                            "{}: the transfer broke off after {have} bytes ({e}); run again to resume",
                            shown(url)
                        )));
                    }
                };
                if let Some(limit) = &self.limit {
                    limit.take(chunk.len() as u64).await;
                }
                file.write_all(&chunk)
                    .map_err(|e| failed(format!("cannot write {}: {e}", part.display())))?;
                hasher.update(&chunk);
                have += chunk.len() as u64;
                progress.update(have, total);
            }
        }
        if let Some(t) = total
            && have != t
        {
            return Err(GetError::Broken(format!(
                "{}: received {have} of {t} bytes; run again to resume",
                shown(url)
            )));
        }
        let actual = format!("sha256:{}", hex::encode(hasher.finalize()));
        if let Some(want) = digest
            && !want.eq_ignore_ascii_case(&actual)
        {
            drop(file);
            let _ = std::fs::remove_file(&part);
            let _ = std::fs::remove_file(&meta);
            return Err(GetError::Digest(format!(
                "{}: the content is {actual}, not {want}; nothing was written",
                shown(url)
            )));
        }
        file.sync_all().map_err(failed)?;
        drop(file);
        std::fs::rename(&part, output)
            .map_err(|e| failed(format!("cannot move into {}: {e}", output.display())))?;
        let _ = std::fs::remove_file(&meta);
        progress.finish(have);
        Ok(have)
    }

    /// Downloads every file under the directory listing at `url` into `dir`.
    async fn get_tree(&self, url: &Url, dir: &Path, depth: u32) -> Result<u32, GetError> {
        if depth > 32 {
            return Err(failed(format!(
                "{}: directories nested too deep",
                shown(url)
            )));
        }
        let listing = String::from_utf8_lossy(&self.fetch_small(url).await?).into_owned();
        let mut count = 0;
        for href in hrefs(&listing) {
            let Some((target, name, is_dir)) = entry(url, &href) else {
                continue;
            };
            let path = dir.join(&name);
            if is_dir {
                count += Box::pin(self.get_tree(&target, &path, depth + 1)).await?;
            } else {
                self.get(&target, None, &path).await?;
                count += 1;
            }
        }
        Ok(count)
    }
}

/// `href` values of a directory listing.
fn hrefs(html: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = html;
    while let Some(i) = rest.find("href=\"") {
        rest = &rest[i + 6..];
        if let Some(end) = rest.find('"') {
            out.push(rest[..end].replace("&amp;", "&"));
            rest = &rest[end..];
        }
    }
    out
}

/// A listing entry as (URL, local name, is a directory), if it lies strictly inside `base`:
/// parent links, sort links, other hosts and names that would leave the directory are skipped.
fn entry(base: &Url, href: &str) -> Option<(Url, String, bool)> {
    if href.starts_with('?') || href.starts_with('#') {
        return None;
    }
    let target = base.join(href).ok()?;
    if target.origin() != base.origin() || target.query().is_some() {
        return None;
    }
    let rest = target.path().strip_prefix(base.path())?;
    let is_dir = rest.ends_with('/');
    let name = rest.strip_suffix('/').unwrap_or(rest);
    // One segment, safe once decoded.
    if name.contains('/') {
        return None;
    }
    Some((target.clone(), safe_segment(name)?, is_dir))
}

/// Empties the part file, to download from the start.
fn restart(file: &mut std::fs::File, hasher: &mut Sha256, have: &mut u64) -> Result<(), GetError> {
    file.set_len(0).map_err(failed)?;
    *hasher = Sha256::new();
    *have = 0;
    Ok(())
}

fn content_range_total(resp: &reqwest::Response) -> Option<u64> {
    resp.headers()
        .get(header::CONTENT_RANGE)?
        .to_str()
        .ok()?
        .rsplit_once('/')?
        .1
        .parse()
        .ok()
}

/// Runs `shoal get`; returns the exit status.
pub async fn run(args: &GetArgs) -> i32 {
    match run_inner(args).await {
        Ok(()) => EXIT_OK,
        Err(e) => {
            eprintln!("shoal get: {e}");
            e.exit()
        }
    }
}

async fn run_inner(args: &GetArgs) -> Result<(), GetError> {
    let url = crate::files::parse_url(&args.url).map_err(|e| GetError::Usage(e.message))?;
    if let Some(d) = &args.digest {
        d.parse::<crate::oci::Digest>()
            .map_err(|e| GetError::Usage(format!("--digest {d}: {e}")))?;
    }
    let node = Url::parse(&args.node)
        .map_err(|e| GetError::Usage(format!("--node {}: {e}", args.node)))?;
    let node = if node.path().ends_with('/') {
        node
    } else {
        Url::parse(&format!("{node}/")).expect("valid")
    };
    let mut headers = reqwest::header::HeaderMap::new();
    for h in &args.header {
        let (k, v) = h
            .split_once(':')
            .ok_or_else(|| GetError::Usage(format!("-H {h:?}: expected NAME: VALUE")))?;
        let name = reqwest::header::HeaderName::from_bytes(k.trim().as_bytes())
            .map_err(|e| GetError::Usage(format!("-H {k:?}: {e}")))?;
        let value = reqwest::header::HeaderValue::from_str(v.trim())
            .map_err(|e| GetError::Usage(format!("-H {k}: {e}")))?;
        headers.append(name, value);
    }
    crate::oci::install_crypto_provider();
    let client = reqwest::Client::builder()
        .no_proxy()
        .connect_timeout(Duration::from_secs(10))
        // A file without a digest is fetched whole by the node before its first byte comes.
        .read_timeout(Duration::from_secs(3600))
        .build()
        .map_err(failed)?;
    let getter = Getter {
        client,
        node,
        headers,
        limit: args.limit.map(TokenBucket::new),
        quiet: args.quiet,
    };
    if args.recursive {
        if !url.path().ends_with('/') {
            return Err(GetError::Usage(
                "--recursive takes a directory URL (ending in /)".into(),
            ));
        }
        let dir = args
            .output
            .clone()
            .ok_or_else(|| GetError::Usage("--recursive needs -o DIR".into()))?;
        let n = getter.get_tree(&url, &dir, 0).await?;
        if !args.quiet {
            eprintln!("{n} file(s) under {}", dir.display());
        }
        return Ok(());
    }
    let output = output_path(args, &url)?;
    match getter.get(&url, args.digest.as_deref(), &output).await {
        // The node holds back a download's last byte until it is verified, and cuts the
        // transfer when the check fails: one resume tells a cut connection from that.
        Err(GetError::Broken(_)) => getter
            .get(&url, args.digest.as_deref(), &output)
            .await
            .map(drop),
        other => other.map(drop),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listing_entries_stay_inside_the_directory() {
        let base = Url::parse("http://h/pub/").unwrap();
        let html = r#"<a href="../">../</a><a href="a.tgz">a</a><a href="sub/">sub/</a>
            <a href="?C=N;O=D">sort</a><a href="http://other/x">x</a><a href="%2e%2e/">..</a>
            <a href="/etc/passwd">p</a><a href="b%20c.txt">b</a><a href="x%2fy">s</a>"#;
        let got: Vec<(String, bool)> = hrefs(html)
            .iter()
            .filter_map(|h| entry(&base, h))
            .map(|(_, n, d)| (n, d))
            .collect();
        assert_eq!(
            got,
            vec![
                ("a.tgz".to_owned(), false),
                ("sub".to_owned(), true),
                ("b c.txt".to_owned(), false)
            ]
        );
    }

    #[test]
    fn names_come_from_the_url_safely() {
        let u = |s: &str| Url::parse(s).unwrap();
        assert_eq!(file_name(&u("http://h/a/b.tgz")).as_deref(), Some("b.tgz"));
        assert_eq!(file_name(&u("http://h/a/dir/")).as_deref(), Some("dir"));
        assert_eq!(file_name(&u("http://h/")), None);
        assert_eq!(file_name(&u("http://h/a/%2e%2e")), None);
        assert_eq!(
            part_path(Path::new("/tmp/x/f.iso")),
            Path::new("/tmp/x/.f.iso.shoal-part")
        );
    }
}
