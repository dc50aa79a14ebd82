//! The `stageworks` command: `serve` (the default), `check-config`,
//! `healthcheck`, `--version`.
//!
//! Exit codes: 0 success, 1 a runtime failure (cannot bind, database cannot
//! open, healthcheck failed), 2 an invalid configuration.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use actors::service::ServiceDefinition;
use clap::{Parser, Subcommand};

use stageworks::app::App;
use stageworks::config::{Config, ConfigError};
use stageworks::telemetry::logs;

#[derive(Parser)]
#[command(
    name = "stageworks",
    version,
    about = "A microservice platform as supervised actors in one process"
)]
struct Cli {
    /// Configuration file (defaults, then this file, then STAGEWORKS__* variables).
    #[arg(long, global = true, env = "STAGEWORKS_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the platform (the default).
    Serve,
    /// Validate the configuration and print it, secrets masked.
    CheckConfig,
    /// Exit 0 if the local /live answers 200 (for container health checks).
    Healthcheck,
    /// Manage users directly in the auth service's database.
    #[command(subcommand)]
    User(UserCommand),
}

#[derive(Subcommand)]
enum UserCommand {
    /// Create an admin (or promote an existing user): how a fresh install gets
    /// its first admin. The password is prompted for on a terminal, else read
    /// from the first line of standard input.
    Create {
        #[arg(long)]
        email: String,
        /// Grant the admin role (required: plain users sign up over HTTP).
        #[arg(long)]
        admin: bool,
    },
}

const DEFAULT_CONFIG: &str = "config.toml";

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let explicit = cli.config.is_some();
    let path = cli.config.unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG));
    let services = actors::BUILTIN;
    let config = match Config::load(&path, explicit, services) {
        Ok(config) => config,
        Err(err) => return config_failure(&err),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => runtime.block_on(serve(config)),
        Command::CheckConfig => check_config(&config, services),
        Command::Healthcheck => runtime.block_on(healthcheck(config.server.listen)),
        Command::User(UserCommand::Create { email, admin }) => {
            runtime.block_on(create_admin(&config, &email, admin))
        }
    }
}

fn config_failure(err: &ConfigError) -> ExitCode {
    eprintln!("error: {err}");
    ExitCode::from(2)
}

async fn serve(config: Config) -> ExitCode {
    logs::init(&config.log);
    match App::start(config).await {
        Ok(app) => {
            app.run_until_signal().await;
            ExitCode::SUCCESS
        }
        Err(err) => {
            tracing::error!(error = %err, "stageworks failed to start");
            eprintln!("error: {err}");
            if err.is_configuration() {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

fn check_config(config: &Config, services: &[ServiceDefinition]) -> ExitCode {
    match config.to_masked_toml(services) {
        Ok(text) => {
            println!("# configuration is valid\n{text}");
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("error: cannot print the configuration: {err}");
            ExitCode::FAILURE
        }
    }
}

/// GET /live on the local public listener; an unspecified listen address
/// (0.0.0.0, ::) is reached through loopback.
async fn healthcheck(listen: SocketAddr) -> ExitCode {
    let ip = match listen.ip() {
        IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    let url = format!("http://{}/live", SocketAddr::new(ip, listen.port()));
    match tokio::time::timeout(Duration::from_secs(3), get_status(&url)).await {
        Ok(Ok(200)) => ExitCode::SUCCESS,
        Ok(Ok(status)) => {
            eprintln!("unhealthy: {url} answered {status}");
            ExitCode::FAILURE
        }
        Ok(Err(err)) => {
            eprintln!("unhealthy: {url}: {err}");
            ExitCode::FAILURE
        }
        Err(_) => {
            eprintln!("unhealthy: {url} did not answer within 3 s");
            ExitCode::FAILURE
        }
    }
}

async fn get_status(url: &str) -> Result<u16, Box<dyn std::error::Error + Send + Sync>> {
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;
    let client: Client<_, http_body_util::Empty<bytes::Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let response = client.get(url.parse()?).await?;
    Ok(response.status().as_u16())
}

/// `stageworks user create --email … --admin`.
async fn create_admin(config: &Config, email: &str, admin: bool) -> ExitCode {
    use actors::auth::model::{Email, Password};
    use actors::auth::store::{AuthStore, GrantAdmin};
    if !admin {
        eprintln!("error: only admins are created here (--admin); users sign up with POST /api/v1/auth/register");
        return ExitCode::from(2);
    }
    let email = match Email::parse(email) {
        Ok(email) => email,
        Err(problem) => {
            eprintln!("error: --email: {problem}");
            return ExitCode::from(2);
        }
    };
    let password = match read_password() {
        Ok(password) => password,
        Err(err) => {
            eprintln!("error: cannot read the password: {err}");
            return ExitCode::FAILURE;
        }
    };
    let password = match Password::new(&password) {
        Ok(password) => password,
        Err(problem) => {
            eprintln!("error: password: {problem}");
            return ExitCode::from(2);
        }
    };
    let store = match AuthStore::open(
        &config.data_dir,
        &config.storage(actors::auth::NAME),
        Duration::from_secs(10),
    )
    .await
    {
        Ok(store) => store,
        Err(err) => {
            eprintln!("error: cannot open the auth database: {err}");
            return ExitCode::FAILURE;
        }
    };
    match actors::auth::ensure_admin(&store, &email, Some(password)).await {
        Ok(GrantAdmin::Created(user)) => println!("created admin {} ({})", user.email, user.id),
        Ok(GrantAdmin::Promoted(user)) => println!(
            "{} ({}) is now an admin; the password is unchanged",
            user.email, user.id
        ),
        Ok(GrantAdmin::AlreadyAdmin(user)) => {
            println!("{} ({}) is already an admin", user.email, user.id)
        }
        Ok(GrantAdmin::NoSuchUser) => {
            eprintln!("error: no such user");
            return ExitCode::FAILURE;
        }
        Err(err) => {
            eprintln!("error: {err}");
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}

/// A password prompted for without echo on a terminal, else the first line of stdin.
fn read_password() -> std::io::Result<String> {
    use std::io::{BufRead, IsTerminal};
    if std::io::stdin().is_terminal() {
        return rpassword::prompt_password("password for the admin: ");
    }
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}
