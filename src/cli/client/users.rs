//! `shoal user`, `shoal role` and `shoal tenant`: who may do what, and tenants' bandwidth
//! budgets. Users, roles and tenants may be named by id or by name.

use clap::{Args, Subcommand, ValueEnum};
use serde_json::{Value, json};

use super::ClientOpts;
use super::auth::new_password;
use super::http::{Client, ClientError};
use super::output::{self, Table, int, text};
use crate::fetch::limit::ByteRate;

/// `shoal user …`.
#[derive(Debug, Args)]
pub struct UserArgs {
    #[command(flatten)]
    opts: ClientOpts,
    #[command(subcommand)]
    command: UserCommand,
}

#[derive(Debug, Subcommand)]
enum UserCommand {
    /// List users and their roles.
    List,
    /// Create a user (password from --password-stdin or asked twice).
    Create {
        /// The user's name.
        name: String,
        /// Read the password from stdin (one line).
        #[arg(long)]
        password_stdin: bool,
        /// A role to bind on every cluster (id or name; repeatable).
        #[arg(long, value_name = "ROLE")]
        role: Vec<String>,
        /// The tenant (id or name; super administrators) [default: yours].
        #[arg(long, value_name = "TENANT")]
        tenant: Option<String>,
    },
    /// Refuse the user's sign-ins and end their sessions.
    Disable {
        /// The user (id or name).
        user: String,
    },
    /// Allow the user to sign in again.
    Enable {
        /// The user (id or name).
        user: String,
    },
    /// Delete a user with their tokens and role bindings.
    Delete {
        /// The user (id or name).
        user: String,
    },
    /// Set a user's password (ends their sessions).
    Passwd {
        /// The user (id or name).
        user: String,
        /// Read the password from stdin (one line).
        #[arg(long)]
        password_stdin: bool,
    },
    /// Bind a role to a user, on every cluster or on the listed ones.
    Bind {
        /// The user (id or name).
        user: String,
        /// The role (id or name).
        role: String,
        /// A cluster the binding covers (id or name; repeatable) [default: all].
        #[arg(long, value_name = "CLUSTER", value_delimiter = ',')]
        cluster: Vec<String>,
    },
    /// Remove a role binding (its id is in `shoal user list -o json`).
    Unbind {
        /// The binding's id.
        binding: i64,
    },
}

/// `shoal role …`.
#[derive(Debug, Args)]
pub struct RoleArgs {
    #[command(flatten)]
    opts: ClientOpts,
    #[command(subcommand)]
    command: RoleCommand,
}

#[derive(Debug, Subcommand)]
enum RoleCommand {
    /// List the built-in roles and your tenant's custom roles.
    List,
    /// Show a role's permissions.
    Show {
        /// The role (id or name).
        role: String,
    },
    /// Create a custom role from permissions you hold.
    Create {
        /// The role's name.
        name: String,
        /// A permission, e.g. tasks:write (repeatable or comma-separated).
        #[arg(
            long,
            value_name = "PERMISSION",
            value_delimiter = ',',
            required = true
        )]
        permission: Vec<String>,
        /// What it is for.
        #[arg(long, default_value = "")]
        description: String,
    },
    /// Delete a custom role with its bindings.
    Delete {
        /// The role (id or name).
        role: String,
    },
}

/// `shoal tenant …`.
#[derive(Debug, Args)]
pub struct TenantArgs {
    #[command(flatten)]
    opts: ClientOpts,
    #[command(subcommand)]
    command: TenantCommand,
}

/// What a tenant's tasks do when they would exceed its budget.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum Policy {
    /// Wait for room.
    Wait,
    /// Are refused.
    Refuse,
}

impl Policy {
    fn as_str(self) -> &'static str {
        match self {
            Policy::Wait => "wait",
            Policy::Refuse => "refuse",
        }
    }
}

#[derive(Debug, Subcommand)]
enum TenantCommand {
    /// List tenants with their budgets and the bandwidth in use.
    List,
    /// Create a tenant (super administrators).
    Create {
        /// The tenant's name.
        name: String,
        /// Cap on the sum of its running tasks' limits, e.g. 1GiB/s [default: none].
        #[arg(long, value_name = "RATE")]
        budget: Option<ByteRate>,
        /// What a task over the budget does.
        #[arg(long, value_enum, default_value = "wait")]
        policy: Policy,
    },
    /// Change a tenant's budget (super administrators).
    SetBudget {
        /// The tenant (id or name).
        tenant: String,
        /// The budget, e.g. 500MiB/s, or `none`.
        #[arg(value_name = "RATE|none")]
        budget: String,
        /// What a task over the budget does [default: unchanged].
        #[arg(long, value_enum)]
        policy: Option<Policy>,
    },
}

async fn user_id(client: &Client, arg: &str) -> Result<i64, ClientError> {
    client.resolve("/api/v1/users", "user", arg).await
}

async fn role_id(client: &Client, arg: &str) -> Result<i64, ClientError> {
    client.resolve("/api/v1/roles", "role", arg).await
}

async fn cluster_ids(client: &Client, args: &[String]) -> Result<Vec<i64>, ClientError> {
    let mut ids = Vec::new();
    for c in args {
        ids.push(client.resolve("/api/v1/clusters", "cluster", c).await?);
    }
    Ok(ids)
}

/// A binding as `role` or `role (clusters 1, 2)`.
fn binding(b: &Value) -> String {
    let clusters = text(&b["clusters"]);
    if clusters == "-" {
        text(&b["role"])
    } else {
        format!("{} (clusters {clusters})", text(&b["role"]))
    }
}

/// `shoal user …`.
pub(super) async fn user(args: UserArgs) -> Result<i32, ClientError> {
    let client = Client::from_opts(&args.opts, None)?;
    match args.command {
        UserCommand::List => {
            let reply = client.get("/api/v1/users", &[]).await?;
            output::show(&client, &reply, |v| {
                let mut table = Table::new(&["ID", "NAME", "TENANT", "STATE", "ROLES"]);
                for u in v.as_array().into_iter().flatten() {
                    let roles: Vec<String> = u["bindings"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(binding)
                        .collect();
                    table.row(vec![
                        int(&u["id"]).to_string(),
                        text(&u["name"]),
                        int(&u["tenant_id"]).to_string(),
                        if u["disabled"] == true {
                            "disabled"
                        } else {
                            "enabled"
                        }
                        .into(),
                        if roles.is_empty() {
                            "-".into()
                        } else {
                            roles.join(", ")
                        },
                    ]);
                }
                table.print();
                Ok(())
            })
        }
        UserCommand::Create {
            name,
            password_stdin,
            role,
            tenant,
        } => {
            let mut bindings = Vec::new();
            for r in &role {
                bindings.push(json!({"role_id": role_id(&client, r).await?}));
            }
            let tenant_id = match &tenant {
                Some(t) => Some(client.resolve("/api/v1/tenants", "tenant", t).await?),
                None => None,
            };
            let password = new_password(password_stdin, &name)?;
            let body = json!({"name": name, "password": password, "tenant_id": tenant_id, "bindings": bindings});
            let reply = client.post("/api/v1/users", &body).await?;
            output::show(&client, &reply, |u| {
                println!("user {} ({}) created", int(&u["id"]), text(&u["name"]));
                Ok(())
            })
        }
        UserCommand::Disable { user } => set_disabled(&client, &user, true).await,
        UserCommand::Enable { user } => set_disabled(&client, &user, false).await,
        UserCommand::Delete { user } => {
            let id = user_id(&client, &user).await?;
            let reply = client.delete(&format!("/api/v1/users/{id}")).await?;
            output::show(&client, &reply, |_| {
                println!("user {id} deleted");
                Ok(())
            })
        }
        UserCommand::Passwd {
            user,
            password_stdin,
        } => {
            let id = user_id(&client, &user).await?;
            let password = new_password(password_stdin, &user)?;
            let reply = client
                .patch(
                    &format!("/api/v1/users/{id}"),
                    &json!({"password": password}),
                )
                .await?;
            output::show(&client, &reply, |u| {
                println!("password of user {id} ({}) changed", text(&u["name"]));
                Ok(())
            })
        }
        UserCommand::Bind {
            user,
            role,
            cluster,
        } => {
            let id = user_id(&client, &user).await?;
            let role = role_id(&client, &role).await?;
            let clusters = cluster_ids(&client, &cluster).await?;
            let reply = client
                .post(
                    &format!("/api/v1/users/{id}/bindings"),
                    &json!({"role_id": role, "clusters": clusters}),
                )
                .await?;
            output::show(&client, &reply, |b| {
                let scope = if clusters.is_empty() {
                    "every cluster".to_string()
                } else {
                    format!("clusters {}", text(&b["clusters"]))
                };
                println!(
                    "binding {}: role {} for user {id} on {scope}",
                    int(&b["id"]),
                    text(&b["role"])
                );
                Ok(())
            })
        }
        UserCommand::Unbind { binding } => {
            let reply = client
                .delete(&format!("/api/v1/bindings/{binding}"))
                .await?;
            output::show(&client, &reply, |_| {
                println!("binding {binding} removed");
                Ok(())
            })
        }
    }
}

async fn set_disabled(client: &Client, user: &str, disabled: bool) -> Result<i32, ClientError> {
    let id = user_id(client, user).await?;
    let reply = client
        .patch(
            &format!("/api/v1/users/{id}"),
            &json!({"disabled": disabled}),
        )
        .await?;
    output::show(client, &reply, |u| {
        let state = if disabled { "disabled" } else { "enabled" };
        println!("user {id} ({}) {state}", text(&u["name"]));
        Ok(())
    })
}

/// `shoal role …`.
pub(super) async fn role(args: RoleArgs) -> Result<i32, ClientError> {
    let client = Client::from_opts(&args.opts, None)?;
    match args.command {
        RoleCommand::List => {
            let reply = client.get("/api/v1/roles", &[]).await?;
            output::show(&client, &reply, |v| {
                let mut table = Table::new(&["ID", "NAME", "KIND", "PERMISSIONS"]);
                for r in v.as_array().into_iter().flatten() {
                    table.row(vec![
                        int(&r["id"]).to_string(),
                        text(&r["name"]),
                        if r["builtin"] == true {
                            "built-in"
                        } else {
                            "custom"
                        }
                        .into(),
                        text(&r["permissions"]),
                    ]);
                }
                table.print();
                Ok(())
            })
        }
        RoleCommand::Show { role } => {
            let id = role_id(&client, &role).await?;
            let reply = client.get(&format!("/api/v1/roles/{id}"), &[]).await?;
            output::show(&client, &reply, |r| {
                output::print_fields(&[
                    ("id", int(&r["id"]).to_string()),
                    ("name", text(&r["name"])),
                    (
                        "kind",
                        if r["builtin"] == true {
                            "built-in"
                        } else {
                            "custom"
                        }
                        .into(),
                    ),
                    ("description", text(&r["description"])),
                    ("permissions", text(&r["permissions"])),
                ]);
                Ok(())
            })
        }
        RoleCommand::Create {
            name,
            permission,
            description,
        } => {
            let body = json!({"name": name, "description": description, "permissions": permission});
            let reply = client.post("/api/v1/roles", &body).await?;
            output::show(&client, &reply, |r| {
                println!("role {} ({}) created", int(&r["id"]), text(&r["name"]));
                Ok(())
            })
        }
        RoleCommand::Delete { role } => {
            let id = role_id(&client, &role).await?;
            let reply = client.delete(&format!("/api/v1/roles/{id}")).await?;
            output::show(&client, &reply, |_| {
                println!("role {id} deleted");
                Ok(())
            })
        }
    }
}

fn budget_text(t: &Value) -> String {
    t["bandwidth_budget"]
        .as_i64()
        .map(output::rate)
        .unwrap_or_else(|| "none".into())
}

/// `shoal tenant …`.
pub(super) async fn tenant(args: TenantArgs) -> Result<i32, ClientError> {
    let client = Client::from_opts(&args.opts, None)?;
    match args.command {
        TenantCommand::List => {
            let reply = client.get("/api/v1/tenants", &[]).await?;
            output::show(&client, &reply, |v| {
                let mut table = Table::new(&["ID", "NAME", "BUDGET", "POLICY", "IN USE"]);
                for t in v.as_array().into_iter().flatten() {
                    table.row(vec![
                        int(&t["id"]).to_string(),
                        text(&t["name"]),
                        budget_text(t),
                        text(&t["budget_policy"]),
                        output::rate(int(&t["bandwidth_in_use"])),
                    ]);
                }
                table.print();
                Ok(())
            })
        }
        TenantCommand::Create {
            name,
            budget,
            policy,
        } => {
            let body = json!({"name": name, "bandwidth_budget": budget.map(|b| b.bytes_per_sec()),
                              "budget_policy": policy.as_str()});
            let reply = client.post("/api/v1/tenants", &body).await?;
            output::show(&client, &reply, |t| {
                println!(
                    "tenant {} ({}) created: budget {}, policy {}",
                    int(&t["id"]),
                    text(&t["name"]),
                    budget_text(t),
                    text(&t["budget_policy"])
                );
                Ok(())
            })
        }
        TenantCommand::SetBudget {
            tenant,
            budget,
            policy,
        } => {
            let budget = match budget.trim() {
                "none" => None,
                b => Some(
                    b.parse::<ByteRate>()
                        .map_err(|e| ClientError::Usage(e.to_string()))?
                        .bytes_per_sec(),
                ),
            };
            let id = client.resolve("/api/v1/tenants", "tenant", &tenant).await?;
            // The API resets an omitted policy to `wait`: send the current one unless changed.
            let policy = match policy {
                Some(p) => p.as_str().to_string(),
                None => text(
                    &client
                        .get_value(&format!("/api/v1/tenants/{id}"), &[])
                        .await?["budget_policy"],
                ),
            };
            let reply = client
                .patch(
                    &format!("/api/v1/tenants/{id}"),
                    &json!({"bandwidth_budget": budget, "budget_policy": policy}),
                )
                .await?;
            output::show(&client, &reply, |t| {
                println!(
                    "tenant {id} ({}): budget {}, policy {}",
                    text(&t["name"]),
                    budget_text(t),
                    text(&t["budget_policy"])
                );
                Ok(())
            })
        }
    }
}
