//! The `stageworks` command: `serve` (the default), `check-config`,
//! `healthcheck`, `--version`.
//!
//! Exit codes: 0 success, 1 a runtime failure (cannot bind, database cannot
//! open, healthcheck failed), 2 an invalid configuration.
//!
//! Output goes through [`say`] and [`complain`], never `println!` or
//! `eprintln!`: those panic when the reader of a pipe has gone
//! (`stageworks check-config | head -1`), and a closed pipe is the reader
//! saying it has seen enough, not a failure. Rust ignores SIGPIPE, so a
//! write to a closed pipe is an `EPIPE` error, which these treat as a quiet
//! end. Resetting SIGPIPE to its default instead would make the kernel kill
//! the process on such a write; that is wrong for `serve`, where a client
//! closing its socket must be an error on that connection, not the end of
//! the server, and doing it for the other commands only would need unsafe
//! code for what a match on the error kind does as well.

use std::fmt;
use std::io::{ErrorKind, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use actors::service::ServiceDefinition;
use clap::{Parser, Subcommand};

use stageworks::app::App;
use stageworks::config::{Config, ConfigError};
use stageworks::telemetry::{logs, traces};

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

/// `println!` that does not panic: see [`write_stdout`].
macro_rules! say {
    ($($arg:tt)*) => { write_stdout(format_args!($($arg)*)) };
}

/// `eprintln!` that does not panic: see [`write_stderr`].
macro_rules! complain {
    ($($arg:tt)*) => { write_stderr(format_args!($($arg)*)) };
}

/// Writes a line to standard output. A reader that has closed the pipe is
/// `Ok`: it has what it wanted, and the command ends as it would have
/// (see the module docs); any other failure (a full disk behind a
/// redirect) is the caller's to report.
fn write_stdout(args: fmt::Arguments<'_>) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    match out
        .write_fmt(args)
        .and_then(|()| out.write_all(b"\n"))
        .and_then(|()| out.flush())
    {
        Err(err) if err.kind() == ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}

/// Writes a line to standard error, ignoring failure: with standard error
/// gone there is nowhere left to say anything.
fn write_stderr(args: fmt::Arguments<'_>) {
    let mut err = std::io::stderr().lock();
    let _ = err.write_fmt(args).and_then(|()| err.write_all(b"\n"));
}

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
            complain!("error: cannot start the async runtime: {err}");
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
    complain!("error: {err}");
    ExitCode::from(2)
}

async fn serve(config: Config) -> ExitCode {
    logs::init(&config.log, &config.telemetry);
    match App::start(config).await {
        Ok(app) => {
            app.run_until_signal().await;
            traces::shutdown().await;
            ExitCode::SUCCESS
        }
        Err(err) => {
            tracing::error!(error = %err, "stageworks failed to start");
            complain!("error: {err}");
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
        Ok(text) => match say!("# configuration is valid\n{text}") {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                complain!("error: cannot print the configuration: {err}");
                ExitCode::FAILURE
            }
        },
        Err(err) => {
            complain!("error: cannot print the configuration: {err}");
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
            complain!("unhealthy: {url} answered {status}");
            ExitCode::FAILURE
        }
        Ok(Err(err)) => {
            complain!("unhealthy: {url}: {err}");
            ExitCode::FAILURE
        }
        Err(_) => {
            complain!("unhealthy: {url} did not answer within 3 s");
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
        complain!("error: only admins are created here (--admin); users sign up with POST /api/v1/auth/register");
        return ExitCode::from(2);
    }
    let email = match Email::parse(email) {
        Ok(email) => email,
        Err(problem) => {
            complain!("error: --email: {problem}");
            return ExitCode::from(2);
        }
    };
    let password = match read_password() {
        Ok(password) => password,
        Err(err) => {
            complain!("error: cannot read the password: {err}");
            return ExitCode::FAILURE;
        }
    };
    let password = match Password::new(&password) {
        Ok(password) => password,
        Err(problem) => {
            complain!("error: password: {problem}");
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
            complain!("error: cannot open the auth database: {err}");
            return ExitCode::FAILURE;
        }
    };
    let shown = match actors::auth::ensure_admin(&store, &email, Some(password)).await {
        Ok(GrantAdmin::Created(user)) => say!("created admin {} ({})", user.email, user.id),
        Ok(GrantAdmin::Promoted(user)) => say!(
            "{} ({}) is now an admin; the password is unchanged",
            user.email,
            user.id
        ),
        Ok(GrantAdmin::AlreadyAdmin(user)) => {
            say!("{} ({}) is already an admin", user.email, user.id)
        }
        Ok(GrantAdmin::NoSuchUser) => {
            complain!("error: no such user");
            return ExitCode::FAILURE;
        }
        Err(err) => {
            complain!("error: {err}");
            return ExitCode::FAILURE;
        }
    };
    // The admin exists whatever happens to this line; a closed pipe is
    // fine (`say!`), anything else is worth an exit code.
    if let Err(err) = shown {
        complain!("error: cannot print the result: {err}");
        return ExitCode::FAILURE;
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
