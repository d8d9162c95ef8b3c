//! The `shoal` binary: parse arguments, set up logging, run the chosen subcommand.

use anyhow::Context as _;
use clap::Parser as _;
use shoal::cli::{Cli, Command, LogFormat, NodeArgs};
use shoal::node::Node;

fn main() -> anyhow::Result<()> {
    let cli = Cli::try_parse().unwrap_or_else(|e| {
        // The manager's client keeps exit status 2 for "the manager is unreachable or failed":
        // its argument errors exit 1 like its other usage errors.
        if e.use_stderr() && shoal::cli::client::is_client_invocation(std::env::args_os()) {
            let _ = e.print();
            std::process::exit(1);
        }
        e.exit()
    });
    init_logging(cli.log_format, &cli.log)?;
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(run(cli.command))
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Node(mut args) => match args.manage.take() {
            Some(cmd) => {
                let code = shoal::cli::client::run_node(cmd, args.manager.clone()).await;
                std::process::exit(code);
            }
            None => run_node(&args, false).await,
        },
        Command::Client(cmd) => std::process::exit(shoal::cli::client::run(cmd).await),
        Command::Seed(mut args) => {
            if args.manage.is_some() {
                eprintln!("error: node list|show|remove are subcommands of `shoal node`");
                std::process::exit(1);
            }
            args.seed = true;
            run_node(&args, false).await
        }
        Command::Up(up) => run_up(up).await,
        Command::ContainerdConfig(args) => Ok(shoal::cli::runtime_config::containerd::run(
            &args,
            &mut std::io::stdout(),
        )?),
        Command::DockerConfig(args) => Ok(shoal::cli::runtime_config::docker::run(
            &args,
            &mut std::io::stdout(),
        )?),
        Command::RegistriesConfig(args) => Ok(shoal::cli::runtime_config::registries::run(
            &args,
            &mut std::io::stdout(),
        )?),
        Command::Get(args) => {
            let code = shoal::cli::get::run(&args).await;
            std::process::exit(code);
        }
        Command::Preheat(args) => {
            let code = shoal::cli::preheat::run(&args).await?;
            std::process::exit(code);
        }
        Command::Manager(args) => run_manager(&args).await,
        Command::SwarmKey => {
            print!("{}", shoal::p2p::keys::generate_swarm_key());
            Ok(())
        }
    }
}

async fn run_node(args: &NodeArgs, first_try: bool) -> anyhow::Result<()> {
    let settings = args.resolve()?.validate()?;
    let node = Node::bind(settings).await?;
    let mirror = node.mirror_addr();
    tracing::info!(%mirror, admin = %node.admin_addr(), "shoal node listening");
    if first_try {
        println!(
            "shoal is running. Point your container runtime at it:\n\n\
             containerd: shoal containerd-config --node http://{mirror} --write /etc/containerd/certs.d\n\
             \x20           (and set config_path = \"/etc/containerd/certs.d\" in containerd's CRI registry section)\n\
             Docker:     add to /etc/docker/daemon.json: {}\n\
             Metrics:    http://{}/metrics\n",
            shoal::cli::docker_fragment(&format!("http://{mirror}")),
            node.admin_addr()
        );
    }
    node.run(shutdown_signal()).await?;
    tracing::info!("shoal node stopped");
    Ok(())
}

/// `shoal up`: a manager (SQLite in the data dir) and a node that is its own seed, registered
/// in the manager's cluster `local`.
async fn run_up(up: shoal::cli::UpArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&up.data_dir)
        .with_context(|| format!("cannot create {}", up.data_dir.display()))?;
    let mut settings = shoal::manager::ManagerSettings::new(&up.data_dir);
    settings.listen = up.manager_listen;
    settings.admin_password = std::env::var("SHOAL_ADMIN_PASSWORD").ok();
    let manager =
        shoal::manager::Manager::bind(settings, std::sync::Arc::new(shoal::manager::SystemClock))
            .await?;
    let api = format!("http://{}", manager.addr());
    let host = shoal::agent::hostname().unwrap_or_else(|| "localhost".into());
    let token = shoal::manager::local_cluster(manager.state(), &host).await?;
    let token_file = up.data_dir.join("join.token");
    write_private(&token_file, &token)?;
    match manager.first_admin() {
        Some(admin) if admin.generated => println!(
            "shoal manager: {api} (API: {api}/api/v1, OpenAPI: {api}/api/v1/openapi.json)\n\
             first start: the super administrator is {:?} with the password {:?} (shown once: \
             change it, or set SHOAL_ADMIN_PASSWORD before the first start)\n\
             sign in:     shoal login --manager {api} --user admin\n",
            admin.name, admin.password
        ),
        _ => println!(
            "shoal manager: {api} (API: {api}/api/v1, OpenAPI: {api}/api/v1/openapi.json)\n\
             sign in:     shoal login --manager {api} --user admin\n"
        ),
    }
    let manager = tokio::spawn(manager.run(shutdown_signal()));
    let args = NodeArgs {
        data_dir: Some(up.data_dir),
        upstream: up.upstream,
        // The same path as a cluster: the local node fetches as its own seed.
        seed: true,
        // One machine: the swarm listens on loopback only.
        p2p_listen: vec!["/ip4/127.0.0.1/tcp/65002".into()],
        manager: Some(api),
        token_file: Some(token_file),
        node_name: Some(host),
        ..NodeArgs::default()
    };
    let node = run_node(&args, true).await;
    manager.abort();
    node
}

/// Writes a secret file readable by its owner only.
fn write_private(path: &std::path::Path, content: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    f.write_all(content.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))
}

async fn run_manager(args: &shoal::cli::manager::ManagerArgs) -> anyhow::Result<()> {
    let settings = args.settings().map_err(anyhow::Error::msg)?;
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("cannot create {}", args.data_dir.display()))?;
    let manager =
        shoal::manager::Manager::bind(settings, std::sync::Arc::new(shoal::manager::SystemClock))
            .await?;
    tracing::info!(addr = %manager.addr(), "shoal manager listening");
    if let Some(admin) = manager.first_admin() {
        if admin.generated {
            println!(
                "first start: created the super administrator {:?} with the password {:?} (shown once; change it)",
                admin.name, admin.password
            );
        } else {
            println!(
                "first start: created the super administrator {:?}",
                admin.name
            );
        }
    }
    manager.run(shutdown_signal()).await?;
    tracing::info!("shoal manager stopped");
    Ok(())
}

/// Resolves on Ctrl-C or SIGTERM (what Kubernetes sends).
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutting down");
}

fn init_logging(format: LogFormat, filter: &str) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .with_context(|| format!("invalid log filter {filter:?}"))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
    Ok(())
}
