//! `shoal login`, `shoal logout` and `shoal token` (personal access tokens), plus reading
//! passwords: from stdin when asked, else from `SHOAL_PASSWORD` (sign-in only), else from a
//! prompt on the terminal with echo off.

use std::io::{BufRead as _, IsTerminal as _};

use clap::{Args, Subcommand};
use serde_json::json;

use super::ClientOpts;
use super::credentials::{self, Credentials};
use super::http::{Client, ClientError};
use super::output::{self, Table, int, text};

/// Flags of `shoal login`.
#[derive(Debug, Args)]
pub struct LoginArgs {
    #[command(flatten)]
    opts: ClientOpts,
    /// The user name [default: asked on a terminal].
    #[arg(long, short = 'u', value_name = "NAME", env = "SHOAL_USER")]
    user: Option<String>,
    /// Read the password from stdin (one line) instead of SHOAL_PASSWORD or a prompt.
    #[arg(long)]
    password_stdin: bool,
}

/// Flags of `shoal logout`.
#[derive(Debug, Args)]
pub struct LogoutArgs {
    #[command(flatten)]
    opts: ClientOpts,
}

/// `shoal token …`.
#[derive(Debug, Args)]
pub struct TokenArgs {
    #[command(flatten)]
    opts: ClientOpts,
    #[command(subcommand)]
    command: TokenCommand,
}

/// Personal access tokens.
#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Create a token (printed once; it cannot create tokens itself).
    Create {
        /// What it is for.
        name: String,
        /// A permission it is limited to, e.g. tasks:write (repeatable) [default: all yours].
        #[arg(long, value_name = "PERMISSION", value_delimiter = ',')]
        scope: Vec<String>,
        /// Days until it expires (1 to 365).
        #[arg(long, default_value_t = 90)]
        days: i64,
    },
    /// List your tokens.
    List,
    /// Revoke a token.
    Revoke {
        /// The token's id.
        id: i64,
    },
}

/// Reads one line from stdin, without its line end.
fn stdin_line(what: &str) -> Result<String, ClientError> {
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|e| ClientError::Usage(format!("cannot read the {what} from stdin: {e}")))?;
    let line = line.trim_end_matches(['\n', '\r']).to_string();
    if line.is_empty() {
        return Err(ClientError::Usage(format!("no {what} on stdin")));
    }
    Ok(line)
}

/// Asks on the terminal; `secret` turns echo off.
fn prompt(question: &str, secret: bool) -> Result<String, ClientError> {
    let term = console::Term::stderr();
    let fail =
        |e: std::io::Error| ClientError::Usage(format!("cannot read from the terminal: {e}"));
    term.write_str(question).map_err(fail)?;
    let answer = if secret {
        term.read_secure_line()
    } else {
        term.read_line()
    }
    .map_err(fail)?;
    Ok(answer.trim_end_matches(['\n', '\r']).to_string())
}

/// The password of a sign-in.
fn login_password(from_stdin: bool, user: &str, manager: &str) -> Result<String, ClientError> {
    if from_stdin {
        return stdin_line("password");
    }
    if let Some(p) = std::env::var("SHOAL_PASSWORD")
        .ok()
        .filter(|p| !p.is_empty())
    {
        return Ok(p);
    }
    if std::io::stdin().is_terminal() {
        return prompt(&format!("Password for {user} at {manager}: "), true);
    }
    Err(ClientError::Usage(
        "no password: give --password-stdin, set SHOAL_PASSWORD, or run in a terminal".into(),
    ))
}

/// A new password: from stdin, or asked twice on the terminal.
pub(super) fn new_password(from_stdin: bool, whose: &str) -> Result<String, ClientError> {
    if from_stdin {
        return stdin_line("password");
    }
    if !std::io::stdin().is_terminal() {
        return Err(ClientError::Usage(
            "no password: give --password-stdin or run in a terminal".into(),
        ));
    }
    let first = prompt(&format!("New password for {whose}: "), true)?;
    let again = prompt("Again: ", true)?;
    if first != again {
        return Err(ClientError::Usage("the passwords differ".into()));
    }
    Ok(first)
}

/// `shoal login`.
pub(super) async fn login(args: LoginArgs) -> Result<i32, ClientError> {
    // Sign-in is by password; a token in the environment is not a session to store.
    let opts = ClientOpts {
        token: None,
        ..args.opts.clone()
    };
    let client = Client::from_opts(&opts, None)?;
    let manager = client.manager();
    let user = match args.user.filter(|u| !u.trim().is_empty()) {
        Some(u) => u,
        None if std::io::stdin().is_terminal() && !args.password_stdin => prompt("User: ", false)?,
        None => return Err(ClientError::Usage("give --user NAME".into())),
    };
    let password = login_password(args.password_stdin, &user, &manager)?;
    let reply = client
        .post(
            "/api/v1/auth/login",
            &json!({"name": user, "password": password}),
        )
        .await?;
    let mut body = reply.value()?;
    let token = body["token"]
        .as_str()
        .ok_or_else(|| ClientError::Local("the manager's answer has no token".into()))?
        .to_string();
    let expires_at = body["expires_at"].as_i64();
    let path = credentials::save(&Credentials {
        manager: manager.clone(),
        token,
        expires_at,
    })?;
    if client.json() {
        // The token stays in the credentials file, out of logs.
        if let Some(o) = body.as_object_mut() {
            o.remove("token");
        }
        println!("{body}");
    } else {
        println!(
            "signed in to {manager} as {} (session ends {}; stored in {})",
            text(&body["user"]["name"]),
            output::time_of(&body["expires_at"]),
            path.display()
        );
    }
    Ok(0)
}

/// `shoal logout`.
pub(super) async fn logout(_args: LogoutArgs) -> Result<i32, ClientError> {
    let Some(creds) = credentials::load()? else {
        println!("not signed in");
        return Ok(0);
    };
    // Only the stored session is revoked: a token given by --token or SHOAL_TOKEN is not ours
    // to end.
    let client = Client::new(
        &creds.manager,
        Some(creds.token.clone()),
        Default::default(),
    )?;
    let revoked = client.post("/api/v1/auth/logout", &json!({})).await;
    credentials::forget()?;
    match revoked {
        Ok(_) | Err(ClientError::SignIn) => {
            println!("signed out of {}", creds.manager);
            Ok(0)
        }
        Err(e) => {
            eprintln!("the stored session is forgotten, but the manager did not revoke it");
            Err(e)
        }
    }
}

/// `shoal token …`.
pub(super) async fn token(args: TokenArgs) -> Result<i32, ClientError> {
    let client = Client::from_opts(&args.opts, None)?;
    match args.command {
        TokenCommand::Create { name, scope, days } => {
            let reply = client
                .post(
                    "/api/v1/tokens",
                    &json!({"name": name, "scopes": scope, "expires_in_days": days}),
                )
                .await?;
            output::show(&client, &reply, |t| {
                println!(
                    "token {} ({}) created, expires {}; it is shown this once:",
                    int(&t["id"]),
                    text(&t["name"]),
                    output::time_of(&t["expires_at"])
                );
                println!("{}", text(&t["token"]));
                Ok(())
            })
        }
        TokenCommand::List => {
            let reply = client.get("/api/v1/tokens", &[]).await?;
            output::show(&client, &reply, |v| {
                let now = output::now_ms();
                let mut table =
                    Table::new(&["ID", "NAME", "SCOPES", "EXPIRES", "LAST USED", "STATE"]);
                for t in v.as_array().into_iter().flatten() {
                    let state = if t["revoked"] == true {
                        "revoked"
                    } else if int(&t["expires_at"]) <= now {
                        "expired"
                    } else {
                        "active"
                    };
                    let scopes = match text(&t["scopes"]).as_str() {
                        "-" => "all".to_string(),
                        s => s.to_string(),
                    };
                    table.row(vec![
                        int(&t["id"]).to_string(),
                        text(&t["name"]),
                        scopes,
                        output::time_of(&t["expires_at"]),
                        output::time_of(&t["last_used_at"]),
                        state.into(),
                    ]);
                }
                table.print();
                Ok(())
            })
        }
        TokenCommand::Revoke { id } => {
            let reply = client.delete(&format!("/api/v1/tokens/{id}")).await?;
            output::show(&client, &reply, |_| {
                println!("token {id} revoked");
                Ok(())
            })
        }
    }
}
