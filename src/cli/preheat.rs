//! `shoal preheat`: gives a preheat order to a node's admin port and follows it until every
//! node in scope has reported.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::PreheatArgs;

/// Exit status when every node in scope holds the image.
pub const EXIT_DONE: i32 = 0;
/// Exit status when some node failed, or following timed out.
pub const EXIT_FAILED: i32 = 1;
/// Exit status when the order was refused (bad input, unknown image, unreachable registry).
pub const EXIT_REFUSED: i32 = 2;

/// `CODE: message` of a registry error envelope, or the body.
fn message(body: &str) -> String {
    serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| {
            let e = &v["errors"][0];
            Some(format!(
                "{}: {}",
                e["code"].as_str()?,
                e["message"].as_str()?
            ))
        })
        .unwrap_or_else(|| body.trim().to_owned())
}

fn mib(v: &Value) -> f64 {
    v.as_u64().unwrap_or(0) as f64 / f64::from(1u32 << 20)
}

/// One line per node whose progress changed.
fn print_changes(status: &Value, last: &mut HashMap<String, String>) {
    for node in status["nodes"].as_array().into_iter().flatten() {
        let id = node["peer_id"].as_str().unwrap_or("?");
        let line = format!(
            "{:<4} {} zone={} {}: {}/{} blobs, {:.1}/{:.1} MiB{}",
            node["role"].as_str().unwrap_or("?"),
            &id[id.len().saturating_sub(8)..],
            node["zone"].as_str().unwrap_or("?"),
            node["state"].as_str().unwrap_or("?"),
            node["blobs_done"],
            node["blobs_total"],
            mib(&node["bytes_done"]),
            mib(&node["bytes_total"]),
            node["error"]
                .as_str()
                .map(|e| format!(" ({e})"))
                .unwrap_or_default(),
        );
        if last.get(id) != Some(&line) {
            println!("{line}");
            last.insert(id.to_owned(), line);
        }
    }
}

/// Runs the command; returns the exit status.
///
/// # Errors
/// When the node cannot be reached.
pub async fn run(args: &PreheatArgs) -> anyhow::Result<i32> {
    crate::oci::install_crypto_provider();
    // The admin port is the node's own: never through a proxy.
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(600))
        .build()?;
    let base = args.node.trim_end_matches('/');
    let body = serde_json::json!({
        "image": args.image,
        "platforms": args.platform,
        "scope": args.scope,
        "zone": args.zone,
        "digest": args.digest,
    });
    let resp = client
        .post(format!("{base}/api/v1/preheat"))
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(body.to_string())
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("cannot reach the node at {base}: {e}"))?;
    let code = resp.status();
    let text = String::from_utf8_lossy(&resp.bytes().await?).into_owned();
    if !code.is_success() {
        eprintln!("preheat refused ({code}): {}", message(&text));
        return Ok(EXIT_REFUSED);
    }
    let mut status: Value = serde_json::from_str(&text)?;
    let id = status["id"].as_str().unwrap_or_default().to_owned();
    println!(
        "preheat {id}: {} ({} blobs, {:.1} MiB), scope {}{}",
        status["image"].as_str().unwrap_or("?"),
        status["resolved"]["blobs"].as_array().map_or(0, Vec::len),
        status["resolved"]["blobs"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|b| b[1].as_u64().unwrap_or(0))
            .sum::<u64>() as f64
            / f64::from(1u32 << 20),
        status["scope"].as_str().unwrap_or("?"),
        status["zone"]
            .as_str()
            .filter(|z| !z.is_empty())
            .map(|z| format!(", zone {z}"))
            .unwrap_or_default(),
    );
    if args.no_wait {
        return Ok(EXIT_DONE);
    }
    let deadline = Instant::now() + Duration::from_secs(args.timeout);
    let mut last = HashMap::new();
    loop {
        print_changes(&status, &mut last);
        match status["state"].as_str() {
            Some("done") => {
                let n = status["nodes"].as_array().map_or(0, Vec::len);
                println!("done: {n} node(s) hold the image");
                return Ok(EXIT_DONE);
            }
            Some("failed") => {
                eprintln!("preheat failed on some node(s)");
                return Ok(EXIT_FAILED);
            }
            _ => {}
        }
        if Instant::now() >= deadline {
            eprintln!("gave up following after {} s", args.timeout);
            return Ok(EXIT_FAILED);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let resp = client
            .get(format!("{base}/api/v1/preheat/{id}"))
            .send()
            .await
            .map_err(|e| anyhow::anyhow!("lost the node at {base}: {e}"))?;
        status = serde_json::from_slice(&resp.bytes().await?)?;
    }
}
