//! `shoal cluster` and `shoal node list|show|remove`: the targets of tasks. Clusters and nodes
//! may be named by id or by name.

use clap::{ArgGroup, Args, Subcommand};
use serde_json::{Value, json};

use super::ClientOpts;
use super::http::{Client, ClientError};
use super::output::{self, Table, int, text};

/// `shoal cluster …`.
#[derive(Debug, Args)]
pub struct ClusterArgs {
    #[command(flatten)]
    opts: ClientOpts,
    #[command(subcommand)]
    command: ClusterCommand,
}

#[derive(Debug, Subcommand)]
enum ClusterCommand {
    /// List clusters with their nodes' health.
    List,
    /// Create a cluster; prints its join token (shown this once).
    Create(Box<CreateArgs>),
    /// Show a cluster, its members and its nodes' health.
    Show {
        /// The cluster (id or name).
        cluster: String,
    },
    /// Delete a cluster: its nodes are removed and their assignments stopped.
    Delete {
        /// The cluster (id or name).
        cluster: String,
    },
    /// Rotate the join token and print the new one (registered nodes keep working).
    Token {
        /// The cluster (id or name).
        cluster: String,
    },
    /// Discover the cluster's members now (Kubernetes, Mesos).
    Discover {
        /// The cluster (id or name).
        cluster: String,
    },
}

/// Flags of `shoal cluster create`.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("kind").required(true).args(["static_hosts", "kubernetes", "mesos"])))]
struct CreateArgs {
    /// The cluster's name.
    name: String,
    /// A static cluster of these hosts (names or IP addresses, comma-separated).
    #[arg(long = "static", value_name = "HOST,…", value_delimiter = ',')]
    static_hosts: Option<Vec<String>>,
    /// A Kubernetes cluster: its nodes, selected by labels.
    #[arg(long)]
    kubernetes: bool,
    /// The Kubernetes API server [default: in-cluster config or kubeconfig of the manager].
    #[arg(long, value_name = "URL", requires = "kubernetes")]
    api_server: Option<String>,
    /// Label selector of the Kubernetes nodes, e.g. shoal.io/node=true [default: all].
    #[arg(long, value_name = "SELECTOR", requires = "kubernetes")]
    label_selector: Option<String>,
    /// A file holding the bearer token for the API server.
    #[arg(long, value_name = "FILE", requires = "kubernetes")]
    token_file: Option<std::path::PathBuf>,
    /// A PEM file of the API server's CA bundle.
    #[arg(long, value_name = "FILE", requires = "kubernetes")]
    ca_file: Option<std::path::PathBuf>,
    /// A Mesos cluster: the agents of the master at URL.
    #[arg(long, value_name = "URL")]
    mesos: Option<String>,
    /// Only Mesos agents with this attribute (key=value).
    #[arg(long, value_name = "KEY=VALUE", requires = "mesos")]
    attribute: Option<String>,
    /// The zone of its nodes (their --zone) [default: default].
    #[arg(long)]
    zone: Option<String>,
    /// What the cluster is.
    #[arg(long, default_value = "")]
    description: String,
    /// The tenant (id or name; super administrators) [default: yours].
    #[arg(long, value_name = "TENANT")]
    tenant: Option<String>,
}

/// `shoal node list|show|remove`: the nodes registered with the manager (without a
/// subcommand, `shoal node` runs a node).
#[derive(Debug, Subcommand)]
pub enum NodeCommand {
    /// List nodes.
    List(NodeListArgs),
    /// Show a node and its recent tasks.
    Show(NodeRef),
    /// Remove a node: its assignments stop; it registers again while its agent runs and its
    /// cluster lists it.
    Remove(NodeRef),
}

/// Flags of `shoal node list`.
#[derive(Debug, Args)]
pub struct NodeListArgs {
    #[command(flatten)]
    opts: ClientOpts,
    /// Only this cluster's nodes (id or name).
    #[arg(long, value_name = "CLUSTER")]
    cluster: Option<String>,
    /// Only nodes in this health: healthy, degraded or offline.
    #[arg(long, value_parser = ["healthy", "degraded", "offline"])]
    health: Option<String>,
}

/// A node named on the command line.
#[derive(Debug, Args)]
pub struct NodeRef {
    #[command(flatten)]
    opts: ClientOpts,
    /// The node (id or name).
    node: String,
}

async fn cluster_id(client: &Client, arg: &str) -> Result<i64, ClientError> {
    client.resolve("/api/v1/clusters", "cluster", arg).await
}

fn read_file(what: &str, path: &std::path::Path) -> Result<String, ClientError> {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .map_err(|e| ClientError::Usage(format!("cannot read the {what} {}: {e}", path.display())))
}

/// The `spec` of a new cluster.
fn spec_of(a: &CreateArgs) -> Result<Value, ClientError> {
    if let Some(hosts) = &a.static_hosts {
        let hosts: Vec<&str> = hosts
            .iter()
            .map(|h| h.trim())
            .filter(|h| !h.is_empty())
            .collect();
        return Ok(json!({"kind": "static", "hosts": hosts}));
    }
    if let Some(master) = &a.mesos {
        return Ok(json!({"kind": "mesos", "master": master, "attribute": a.attribute}));
    }
    let token = match &a.token_file {
        Some(f) => Some(read_file("token file", f)?),
        None => None,
    };
    let ca = match &a.ca_file {
        Some(f) => Some(read_file("CA file", f)?),
        None => None,
    };
    Ok(
        json!({"kind": "kubernetes", "api_server": a.api_server, "token": token, "ca_cert": ca,
              "label_selector": a.label_selector.clone().unwrap_or_default()}),
    )
}

/// Nodes by health: `2 healthy, 1 offline`, or `-`.
fn health_counts(nodes: &Value) -> String {
    let parts: Vec<String> = ["healthy", "degraded", "offline"]
        .iter()
        .filter_map(|h| {
            nodes[h]
                .as_i64()
                .filter(|n| *n > 0)
                .map(|n| format!("{n} {h}"))
        })
        .collect();
    if parts.is_empty() {
        "-".into()
    } else {
        parts.join(", ")
    }
}

/// What a cluster's nodes come from: `static: a, b`, `kubernetes: selector`, `mesos: URL`.
fn source(spec: &Value) -> String {
    match spec["kind"].as_str() {
        Some("static") => text(&spec["hosts"]),
        Some("kubernetes") => format!(
            "{} {}",
            spec["api_server"].as_str().unwrap_or("in-cluster"),
            spec["label_selector"]
                .as_str()
                .filter(|s| !s.is_empty())
                .unwrap_or("(all nodes)")
        ),
        Some("mesos") => text(&spec["master"]),
        _ => "-".into(),
    }
}

/// `shoal cluster …`.
pub(super) async fn cluster(args: ClusterArgs) -> Result<i32, ClientError> {
    let client = Client::from_opts(&args.opts, None)?;
    match args.command {
        ClusterCommand::List => {
            let reply = client.get("/api/v1/clusters", &[]).await?;
            output::show(&client, &reply, |v| {
                let mut table = Table::new(&["ID", "NAME", "KIND", "ZONE", "MEMBERS", "NODES"]);
                for c in v.as_array().into_iter().flatten() {
                    table.row(vec![
                        int(&c["id"]).to_string(),
                        text(&c["name"]),
                        text(&c["spec"]["kind"]),
                        text(&c["zone"]),
                        c["members"].as_array().map_or(0, Vec::len).to_string(),
                        health_counts(&c["nodes"]),
                    ]);
                }
                table.print();
                Ok(())
            })
        }
        ClusterCommand::Create(a) => {
            let tenant = match &a.tenant {
                Some(t) => Some(client.resolve("/api/v1/tenants", "tenant", t).await?),
                None => None,
            };
            let body = json!({"name": a.name, "description": a.description, "zone": a.zone,
                              "spec": spec_of(&a)?, "tenant_id": tenant});
            let reply = client.post("/api/v1/clusters", &body).await?;
            output::show(&client, &reply, |c| {
                println!(
                    "cluster {} ({}) created; its join token (shown this once):",
                    int(&c["id"]),
                    text(&c["name"])
                );
                println!("{}", text(&c["join_token"]));
                Ok(())
            })
        }
        ClusterCommand::Show { cluster } => {
            let id = cluster_id(&client, &cluster).await?;
            let reply = client.get(&format!("/api/v1/clusters/{id}"), &[]).await?;
            output::show(&client, &reply, |c| {
                output::print_fields(&[
                    ("id", int(&c["id"]).to_string()),
                    ("name", text(&c["name"])),
                    ("tenant", int(&c["tenant_id"]).to_string()),
                    ("description", text(&c["description"])),
                    ("kind", text(&c["spec"]["kind"])),
                    ("source", source(&c["spec"])),
                    ("zone", text(&c["zone"])),
                    ("nodes", health_counts(&c["nodes"])),
                    ("discovered", output::time_of(&c["discovered_at"])),
                    ("discovery error", text(&c["discovery_error"])),
                ]);
                let members = c["members"].as_array().cloned().unwrap_or_default();
                if !members.is_empty() {
                    println!();
                    let mut table = Table::new(&["MEMBER", "ADDRESS", "ZONE", "READY"]);
                    for m in &members {
                        table.row(vec![
                            text(&m["name"]),
                            text(&m["address"]),
                            text(&m["zone"]),
                            text(&m["ready"]),
                        ]);
                    }
                    table.print();
                }
                Ok(())
            })
        }
        ClusterCommand::Delete { cluster } => {
            let id = cluster_id(&client, &cluster).await?;
            let reply = client.delete(&format!("/api/v1/clusters/{id}")).await?;
            output::show(&client, &reply, |_| {
                println!("cluster {id} deleted");
                Ok(())
            })
        }
        ClusterCommand::Token { cluster } => {
            let id = cluster_id(&client, &cluster).await?;
            let reply = client
                .post(&format!("/api/v1/clusters/{id}/token"), &json!({}))
                .await?;
            // Only the token: `shoal cluster token c1 > join-token` is the point.
            output::show(&client, &reply, |c| {
                println!("{}", text(&c["join_token"]));
                Ok(())
            })
        }
        ClusterCommand::Discover { cluster } => {
            let id = cluster_id(&client, &cluster).await?;
            let reply = client
                .post(&format!("/api/v1/clusters/{id}/discover"), &json!({}))
                .await?;
            output::show(&client, &reply, |c| {
                let members = c["members"].as_array().map_or(0, Vec::len);
                match c["discovery_error"].as_str() {
                    Some(e) => println!(
                        "cluster {id} ({}): discovery failed: {e} ({members} members kept)",
                        text(&c["name"])
                    ),
                    None => println!("cluster {id} ({}): {members} members", text(&c["name"])),
                }
                Ok(())
            })
        }
    }
}

/// `shoal node list|show|remove`.
pub(super) async fn node(
    command: NodeCommand,
    node_manager: Option<String>,
) -> Result<i32, ClientError> {
    let opts = match &command {
        NodeCommand::List(a) => &a.opts,
        NodeCommand::Show(a) | NodeCommand::Remove(a) => &a.opts,
    };
    let client = Client::from_opts(opts, node_manager.as_deref())?;
    match command {
        NodeCommand::List(a) => {
            let mut query = Vec::new();
            if let Some(c) = &a.cluster {
                query.push(("cluster_id", cluster_id(&client, c).await?.to_string()));
            }
            if let Some(h) = a.health {
                query.push(("health", h));
            }
            let reply = client.get("/api/v1/nodes", &query).await?;
            output::show(&client, &reply, |v| {
                let now = output::now_ms();
                let mut table = Table::new(&[
                    "ID",
                    "NAME",
                    "CLUSTER",
                    "ZONE",
                    "ROLE",
                    "HEALTH",
                    "VERSION",
                    "PEERS",
                    "DISK FREE",
                    "LAST SEEN",
                ]);
                for n in v.as_array().into_iter().flatten() {
                    table.row(vec![
                        int(&n["id"]).to_string(),
                        text(&n["name"]),
                        int(&n["cluster_id"]).to_string(),
                        text(&n["zone"]),
                        text(&n["role"]),
                        text(&n["health"]),
                        text(&n["version"]),
                        int(&n["peers"]).to_string(),
                        disk(n),
                        format!(
                            "{} ago",
                            output::duration((now - int(&n["last_seen"])).max(0))
                        ),
                    ]);
                }
                table.print();
                Ok(())
            })
        }
        NodeCommand::Show(a) => {
            let id = client.resolve("/api/v1/nodes", "node", &a.node).await?;
            let reply = client.get(&format!("/api/v1/nodes/{id}"), &[]).await?;
            output::show(&client, &reply, |n| {
                output::print_fields(&[
                    ("id", int(&n["id"]).to_string()),
                    ("name", text(&n["name"])),
                    ("cluster", int(&n["cluster_id"]).to_string()),
                    ("peer id", text(&n["peer_id"])),
                    ("address", text(&n["address"])),
                    ("role", text(&n["role"])),
                    ("zone", text(&n["zone"])),
                    ("version", text(&n["version"])),
                    ("health", text(&n["health"])),
                    ("member", text(&n["member"])),
                    ("ready", text(&n["ready"])),
                    ("disk free", disk(n)),
                    ("peers", int(&n["peers"]).to_string()),
                    ("downloads", int(&n["downloads"]).to_string()),
                    ("load", text(&n["load"])),
                    ("registered", output::time_of(&n["registered_at"])),
                    ("last seen", output::time_of(&n["last_seen"])),
                ]);
                let tasks = n["tasks"].as_array().cloned().unwrap_or_default();
                if !tasks.is_empty() {
                    println!();
                    let mut table = Table::new(&["TASK", "STATE", "PROGRESS", "ERROR"]);
                    for t in &tasks {
                        table.row(vec![
                            int(&t["task_id"]).to_string(),
                            text(&t["state"]),
                            output::percent(int(&t["bytes_done"]), int(&t["bytes_total"])),
                            text(&t["error"]),
                        ]);
                    }
                    table.print();
                }
                Ok(())
            })
        }
        NodeCommand::Remove(a) => {
            let id = client.resolve("/api/v1/nodes", "node", &a.node).await?;
            let reply = client.delete(&format!("/api/v1/nodes/{id}")).await?;
            output::show(&client, &reply, |_| {
                println!("node {id} removed");
                Ok(())
            })
        }
    }
}

/// Free disk of a node: `12.0 GiB of 100.0 GiB`.
fn disk(n: &Value) -> String {
    let total = int(&n["disk_total"]);
    if total <= 0 {
        return "-".into();
    }
    format!(
        "{} of {}",
        output::bytes(int(&n["disk_free"])),
        output::bytes(total)
    )
}
