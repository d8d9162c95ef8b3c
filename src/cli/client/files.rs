//! `shoal file`: published file versions, a name and version for a URL and its digest, which
//! tasks distribute with `shoal task create --file-version ID`.

use clap::{Args, Subcommand};
use serde_json::{Map, Value, json};

use super::ClientOpts;
use super::http::{Client, ClientError};
use super::output::{self, Table, int, text};

/// `shoal file …`.
#[derive(Debug, Args)]
pub struct FileArgs {
    #[command(flatten)]
    opts: ClientOpts,
    #[command(subcommand)]
    command: FileCommand,
}

#[derive(Debug, Subcommand)]
enum FileCommand {
    /// List file versions, newest first.
    List {
        /// Only versions of this name.
        #[arg(long)]
        name: Option<String>,
    },
    /// Publish a file version.
    Publish {
        /// The file's name, e.g. model-weights.
        name: String,
        /// The version, e.g. 2026.11.
        #[arg(value_name = "VERSION")]
        release: String,
        /// Its http(s) URL.
        url: String,
        /// Its digest (sha256:…).
        #[arg(long)]
        digest: String,
        /// Its size in bytes.
        #[arg(long)]
        size: Option<u64>,
        /// Metadata (KEY=VALUE, repeatable).
        #[arg(long, value_name = "KEY=VALUE")]
        meta: Vec<String>,
    },
    /// Show a file version.
    Show {
        /// The version's id.
        id: i64,
    },
    /// Delete a file version (tasks that used it keep their URL and digest).
    Delete {
        /// The version's id.
        id: i64,
    },
}

fn metadata(pairs: &[String]) -> Result<Map<String, Value>, ClientError> {
    let mut map = Map::new();
    for p in pairs {
        let (k, v) = p
            .split_once('=')
            .filter(|(k, _)| !k.trim().is_empty())
            .ok_or_else(|| ClientError::Usage(format!("invalid --meta {p:?}: write KEY=VALUE")))?;
        map.insert(k.trim().to_string(), Value::String(v.to_string()));
    }
    Ok(map)
}

fn size_text(v: &Value) -> String {
    v["size"]
        .as_i64()
        .map(output::bytes)
        .unwrap_or_else(|| "-".into())
}

/// `shoal file …`.
pub(super) async fn file(args: FileArgs) -> Result<i32, ClientError> {
    let client = Client::from_opts(&args.opts, None)?;
    match args.command {
        FileCommand::List { name } => {
            let query: Vec<(&str, String)> = name.into_iter().map(|n| ("name", n)).collect();
            let reply = client.get("/api/v1/files", &query).await?;
            output::show(&client, &reply, |v| {
                let mut table = Table::new(&[
                    "ID",
                    "NAME",
                    "VERSION",
                    "SIZE",
                    "DIGEST",
                    "URL",
                    "PUBLISHED",
                ]);
                for f in v.as_array().into_iter().flatten() {
                    table.row(vec![
                        int(&f["id"]).to_string(),
                        text(&f["name"]),
                        text(&f["version"]),
                        size_text(f),
                        text(&f["digest"]),
                        text(&f["url"]),
                        output::time_of(&f["created_at"]),
                    ]);
                }
                table.print();
                Ok(())
            })
        }
        FileCommand::Publish {
            name,
            release,
            url,
            digest,
            size,
            meta,
        } => {
            let body = json!({"name": name, "version": release, "url": url, "digest": digest,
                              "size": size, "metadata": metadata(&meta)?});
            let reply = client.post("/api/v1/files", &body).await?;
            output::show(&client, &reply, |f| {
                println!(
                    "file version {} ({} {}) published",
                    int(&f["id"]),
                    text(&f["name"]),
                    text(&f["version"])
                );
                Ok(())
            })
        }
        FileCommand::Show { id } => {
            let reply = client.get(&format!("/api/v1/files/{id}"), &[]).await?;
            output::show(&client, &reply, |f| {
                let meta = f["metadata"]
                    .as_object()
                    .filter(|m| !m.is_empty())
                    .map(|m| {
                        m.iter()
                            .map(|(k, v)| format!("{k}={}", text(v)))
                            .collect::<Vec<_>>()
                            .join(", ")
                    })
                    .unwrap_or_else(|| "-".into());
                output::print_fields(&[
                    ("id", int(&f["id"]).to_string()),
                    ("name", text(&f["name"])),
                    ("version", text(&f["version"])),
                    ("url", text(&f["url"])),
                    ("digest", text(&f["digest"])),
                    ("size", size_text(f)),
                    ("metadata", meta),
                    (
                        "published",
                        format!(
                            "{} by {}",
                            output::time_of(&f["created_at"]),
                            text(&f["created_by"])
                        ),
                    ),
                ]);
                Ok(())
            })
        }
        FileCommand::Delete { id } => {
            let reply = client.delete(&format!("/api/v1/files/{id}")).await?;
            output::show(&client, &reply, |_| {
                println!("file version {id} deleted");
                Ok(())
            })
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn metadata_pairs() {
        let m = super::metadata(&["team=infra".into(), "note=a=b".into()]).unwrap();
        assert_eq!(m["team"], "infra");
        assert_eq!(m["note"], "a=b");
        assert!(super::metadata(&["novalue".into()]).is_err());
        assert!(super::metadata(&["=x".into()]).is_err());
    }
}
