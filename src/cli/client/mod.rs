//! The manager's command-line client: `shoal login|logout|user|role|cluster|node|task|file|
//! tenant|token|audit|stats`, each a thin layer over the REST API under `/api/v1`.
//!
//! - [`http`]: the HTTP client, which manager and token it uses, and [`ClientError`] with the
//!   exit status each failure means; [`credentials`]: the stored sign-in (mode 0600).
//! - [`output`]: aligned tables, key–value views and the formatting of bytes, rates and times;
//!   `--output json` prints the API's JSON unchanged instead.
//! - `auth`, `users`, `clusters`, `tasks`, `watch`, `files`, `reports`: one file per resource
//!   group, each with its clap types and handlers.
//!
//! Exit status: 0 on success; 1 when the request or its arguments are wrong (a 4xx answer,
//! including 401, which asks the user to sign in); 2 when the manager cannot be reached or
//! failed (5xx), which a script may retry. `task watch` exits 1 when the task did not succeed.

mod auth;
mod clusters;
pub mod credentials;
mod files;
pub mod http;
pub mod output;
mod reports;
mod tasks;
mod users;
mod watch;

use clap::{Args, Subcommand, ValueEnum};

pub use clusters::NodeCommand;
pub use http::{Client, ClientError};

/// The manager a client talks to when neither a flag, the environment nor a stored sign-in
/// names one: `shoal manager`'s default address.
pub const DEFAULT_MANAGER: &str = "http://127.0.0.1:8080";

/// How results are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum OutputFormat {
    /// Aligned tables and short messages for people.
    #[default]
    Table,
    /// The API's JSON, unchanged, for scripts.
    Json,
}

/// Flags every client command takes (also after its subcommand).
#[derive(Debug, Clone, Default, Args)]
#[command(next_help_heading = "Manager options")]
pub struct ClientOpts {
    /// The manager's URL [default: the one signed in to, else http://127.0.0.1:8080].
    #[arg(long, global = true, value_name = "URL", env = "SHOAL_MANAGER_URL")]
    pub manager: Option<String>,
    /// A personal access token to use instead of the stored session.
    #[arg(
        long,
        global = true,
        value_name = "TOKEN",
        env = "SHOAL_TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,
    /// `table` for people, `json` for scripts (the API's JSON as it is).
    #[arg(
        long,
        short = 'o',
        global = true,
        value_enum,
        default_value_t = OutputFormat::Table,
        env = "SHOAL_OUTPUT"
    )]
    pub output: OutputFormat,
}

/// The client's top-level commands (`shoal node list|show|remove` hangs under `shoal node`,
/// see [`NodeCommand`]).
#[derive(Debug, Subcommand)]
pub enum ClientCommand {
    /// Sign in to a manager; the session is stored for the commands below.
    Login(auth::LoginArgs),
    /// Sign out: revoke the stored session and forget it.
    Logout(auth::LogoutArgs),
    /// The manager's users and their role bindings.
    User(users::UserArgs),
    /// Roles: sets of permissions bound to users.
    Role(users::RoleArgs),
    /// Clusters: the node groups tasks target, and their join tokens.
    Cluster(clusters::ClusterArgs),
    /// Distribution tasks: send an image or a file to clusters or nodes.
    Task(tasks::TaskArgs),
    /// Published file versions.
    File(files::FileArgs),
    /// Tenants and their bandwidth budgets.
    Tenant(users::TenantArgs),
    /// Your personal access tokens (for scripts: --token or SHOAL_TOKEN).
    Token(auth::TokenArgs),
    /// The audit log: who changed what, newest first.
    Audit(reports::AuditArgs),
    /// Statistics of finished tasks, per day.
    Stats(reports::StatsArgs),
}

/// Runs a client command; returns the process's exit status (errors are printed to stderr).
pub async fn run(command: ClientCommand) -> i32 {
    let result = match command {
        ClientCommand::Login(a) => auth::login(a).await,
        ClientCommand::Logout(a) => auth::logout(a).await,
        ClientCommand::User(a) => users::user(a).await,
        ClientCommand::Role(a) => users::role(a).await,
        ClientCommand::Cluster(a) => clusters::cluster(a).await,
        ClientCommand::Task(a) => tasks::task(a).await,
        ClientCommand::File(a) => files::file(a).await,
        ClientCommand::Tenant(a) => users::tenant(a).await,
        ClientCommand::Token(a) => auth::token(a).await,
        ClientCommand::Audit(a) => reports::audit(a).await,
        ClientCommand::Stats(a) => reports::stats(a).await,
    };
    finish(result)
}

/// Runs `shoal node list|show|remove`; `node_manager` is `shoal node --manager`, used when the
/// subcommand names no manager.
pub async fn run_node(command: NodeCommand, node_manager: Option<String>) -> i32 {
    finish(clusters::node(command, node_manager).await)
}

/// Prints an error and turns a result into an exit status.
fn finish(result: Result<i32, ClientError>) -> i32 {
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            e.exit_code()
        }
    }
}

/// Whether `args` (the process's arguments) invoke a client command, so that an argument error
/// exits 1 like the client's other usage errors rather than clap's 2, which the client keeps
/// for "the manager is unreachable or failed".
pub fn is_client_invocation(args: impl IntoIterator<Item = std::ffi::OsString>) -> bool {
    const COMMANDS: [&str; 11] = [
        "login", "logout", "user", "role", "cluster", "task", "file", "tenant", "token", "audit",
        "stats",
    ];
    // The top-level flags that take a value (`--log debug task list`).
    const VALUED: [&str; 2] = ["--log", "--log-format"];
    let mut words = Vec::new();
    let mut skip = false;
    for arg in args.into_iter().skip(1) {
        let arg = arg.to_string_lossy().into_owned();
        if skip {
            skip = false;
        } else if VALUED.contains(&arg.as_str()) {
            skip = true;
        } else if !arg.starts_with('-') {
            words.push(arg);
            if words.len() == 2 {
                break;
            }
        }
    }
    match words.first().map(String::as_str) {
        Some("node") => matches!(
            words.get(1).map(String::as_str),
            Some("list" | "show" | "remove")
        ),
        Some(w) => COMMANDS.contains(&w),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::is_client_invocation;

    fn client(line: &str) -> bool {
        is_client_invocation(line.split(' ').map(std::ffi::OsString::from))
    }

    #[test]
    fn client_invocations_are_told_apart() {
        assert!(client("shoal task create --bogus"));
        assert!(client("shoal --log debug cluster list"));
        assert!(client("shoal node list --health x"));
        assert!(!client("shoal node --zone a"));
        assert!(!client("shoal get http://x/y"));
        assert!(!client("shoal"));
    }
}
