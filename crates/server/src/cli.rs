//! The command line: `serve` (default), `migrate`, `healthcheck`.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, ToSocketAddrs};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;

use crate::auth::Auth;
use crate::config::{Config, HttpConfig, LogFormat};
use crate::startup::{self, StartupError};

/// A users service over PostgreSQL and Redis.
///
/// Every option can be set through the environment variable shown next to it.
#[derive(Debug, Parser)]
#[command(name = "userstack", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub config: Config,
}

#[derive(Debug, Clone, Copy, Subcommand)]
pub enum Command {
    /// Apply migrations, then serve HTTP until SIGTERM/SIGINT (the default).
    Serve,
    /// Apply pending database migrations and exit.
    Migrate,
    /// Exit 0 if the server this configuration describes answers GET /healthz with 200 on both
    /// its listeners (HOST:PORT and the admin listener ADMIN_HOST:ADMIN_PORT unless
    /// ADMIN_PORT=0; loopback for a wildcard address), else 1. For container health checks:
    /// needs no shell and no curl.
    Healthcheck,
    /// Print the answer of GET /readyz on the admin listener (on PORT when ADMIN_PORT=0) and
    /// exit 0 if it is 200, else 1: readiness from inside the container (`docker exec APP
    /// userstack ready`), where the admin port is reachable without being published.
    Ready,
}

/// Runs the command line; the process exit code. The async runtime is started only for the
/// commands that need one: `healthcheck` is a few blocking socket calls, done before any runtime
/// exists.
pub fn run(cli: Cli) -> ExitCode {
    let config = cli.config;
    let command = cli.command.unwrap_or(Command::Serve);
    if let Command::Ready = command {
        let (host, port) = config
            .admin
            .address(&config.host)
            .unwrap_or_else(|| (config.host.clone(), config.port));
        return match http_get(&host, port, "/readyz") {
            Ok(answer) => {
                eprintln!("{}", answer.trim_end());
                if answer.starts_with("HTTP/1.1 200") {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                }
            }
            Err(e) => {
                eprintln!("not ready: {host}:{port}: {e}");
                ExitCode::FAILURE
            }
        };
    }
    if let Command::Healthcheck = command {
        // Both listeners: a process whose public port died is not healthy either.
        let mut status = healthcheck(&config.host, config.port);
        if let Some((host, port)) = config.admin.address(&config.host)
            && healthcheck(&host, port) != ExitCode::SUCCESS
        {
            status = ExitCode::FAILURE;
        }
        return status;
    }
    init_tracing(config.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match command {
            Command::Migrate => migrate(&config).await,
            Command::Serve | Command::Healthcheck | Command::Ready => serve(&config).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "exiting");
            let mut message = format!("error: {e}");
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                message.push_str(&format!("\n  caused by: {s}"));
                source = s.source();
            }
            eprintln!("{message}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Text => builder.init(),
    }
}

async fn serve(config: &Config) -> Result<(), StartupError> {
    let auth = Auth::from_config(&config.auth)?;
    announce_auth(&auth, config);
    let state = startup::build_state(config).await?.with_auth(auth.clone());
    tokio::spawn(auth.watch(TOKEN_FILE_CHECK));

    let listener = bind(&config.host, config.port, config.http.listen_backlog).await?;
    let draining = state.draining.clone();
    let connections = state.connections.clone();
    // The admin listener outlives the public one, so that readiness can be watched failing
    // during the drain; it stops when the public listener has finished.
    let (admin_stop, admin_stopped) = tokio::sync::oneshot::channel::<()>();
    let (router, admin) = match config.admin.address(&config.host) {
        Some((host, port)) => {
            let admin_listener = bind(&host, port, config.http.listen_backlog).await?;
            let admin_router = crate::admin_app(state.clone(), &config.http);
            // A probe or a scrape is quick: a short drain, and a few connections are plenty.
            let admin_http = HttpConfig {
                shutdown_timeout_secs: 1,
                max_connections: ADMIN_MAX_CONNECTIONS,
                ..config.http.clone()
            };
            let admin = tokio::spawn(async move {
                crate::serve(
                    admin_listener,
                    admin_router,
                    async move {
                        let _ = admin_stopped.await;
                    },
                    &admin_http,
                    Default::default(),
                )
                .await
            });
            (crate::public_app(state, &config.http), Some(admin))
        }
        None => {
            tracing::warn!(
                "ADMIN_PORT=0: /readyz and /metrics are served on the public port (behind the token, if any)"
            );
            (crate::app(state, &config.http), None)
        }
    };
    let served = crate::serve(
        listener,
        router,
        crate::drain::after_readiness_fails(
            crate::shutdown_signal(),
            draining,
            config.http.shutdown_delay(),
        ),
        &config.http,
        connections,
    )
    .await;
    let _ = admin_stop.send(());
    if let Some(admin) = admin {
        match admin.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "admin listener failed"),
            Err(e) => tracing::error!(error = %e, "admin listener panicked"),
        }
    }
    served.map_err(StartupError::Serve)?;
    tracing::info!("stopped");
    Ok(())
}

/// Connections the admin listener holds open at once (health checks, scrapers).
const ADMIN_MAX_CONNECTIONS: usize = 64;

/// How often the token file is checked for a rewrite (a stat; read only when it changed).
const TOKEN_FILE_CHECK: Duration = Duration::from_secs(2);

async fn bind(host: &str, port: u16, backlog: u32) -> Result<TcpListener, StartupError> {
    let address = format!("{host}:{port}");
    let listener = crate::listen(&address, backlog)
        .await
        .map_err(|source| StartupError::Bind {
            address: address.clone(),
            source,
        })?;
    tracing::info!(%address, "listening");
    Ok(listener)
}

/// Says at start-up who may use the API; an open API is said loudly, on every log line a person
/// might read first. Never the tokens themselves.
fn announce_auth(auth: &Auth, config: &Config) {
    if auth.is_enabled() {
        let source = if config.auth.api_token_file.is_some() {
            "API_TOKEN_FILE"
        } else {
            "API_TOKEN"
        };
        tracing::info!(
            tokens = auth.token_count(),
            source,
            "bearer tokens required on /users (and on /readyz, /metrics when ADMIN_PORT=0)"
        );
        if source == "API_TOKEN" {
            tracing::warn!(
                "the tokens come from API_TOKEN, which `docker inspect` shows: use API_TOKEN_FILE outside development"
            );
        }
    } else {
        for line in [
            "**************************************************************************",
            "NO AUTHENTICATION: neither API_TOKEN_FILE nor API_TOKEN is set, so anyone",
            "who can reach this port can list, change and delete every user.",
            "Set API_TOKEN_FILE to a file of bearer tokens (docs/security.md).",
            "**************************************************************************",
        ] {
            tracing::warn!("{line}");
        }
    }
}

async fn migrate(config: &Config) -> Result<(), StartupError> {
    let repo = userstack_storage_pg::PgUserRepository::new(config.database.settings()?);
    let applied = startup::migrate_when_reachable(&repo, config.database.startup_timeout()).await?;
    if applied.is_empty() {
        eprintln!("database schema is up to date; nothing to apply");
    } else {
        eprintln!("applied migrations: {applied:?}");
    }
    Ok(())
}

/// Where a server listening on `host:port` can be reached from the same host: loopback when it
/// listens on every address, else the address it listens on.
fn probe_address(host: &str, port: u16) -> std::io::Result<SocketAddr> {
    let ip = match host.parse::<IpAddr>() {
        Ok(IpAddr::V4(ip)) if ip.is_unspecified() => Ipv4Addr::LOCALHOST.into(),
        Ok(IpAddr::V6(ip)) if ip.is_unspecified() => Ipv6Addr::LOCALHOST.into(),
        Ok(ip) => ip,
        Err(_) => {
            return (host, port).to_socket_addrs()?.next().ok_or_else(|| {
                std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    format!("{host} has no address"),
                )
            });
        }
    };
    Ok(SocketAddr::new(ip, port))
}

/// A minimal HTTP/1.1 GET, so the runtime image needs nothing but this binary: the status line
/// and the body (the server closes the connection after one answer).
fn http_get(host: &str, port: u16, path: &str) -> std::io::Result<String> {
    let timeout = Duration::from_secs(3);
    let address = probe_address(host, port)?;
    let mut stream = TcpStream::connect_timeout(&address, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )?;
    let mut answer = Vec::new();
    stream.take(64 * 1024).read_to_end(&mut answer)?;
    let answer = String::from_utf8_lossy(&answer);
    let status = answer.lines().next().unwrap_or("empty answer");
    let body = answer.split_once("\r\n\r\n").map_or("", |(_, body)| body);
    Ok(format!("{status}\n{body}"))
}

fn healthcheck(host: &str, port: u16) -> ExitCode {
    match http_get(host, port, "/healthz") {
        Ok(answer) if answer.starts_with("HTTP/1.1 200") => ExitCode::SUCCESS,
        Ok(answer) => {
            eprintln!(
                "unhealthy: {host}:{port}: {}",
                answer.lines().next().unwrap_or("")
            );
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("unhealthy: {host}:{port}: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::probe_address;

    #[test]
    fn the_healthcheck_probes_loopback_for_wildcards_and_the_listen_address_otherwise() {
        let probe = |host| probe_address(host, 5000).unwrap().to_string();
        assert_eq!(probe("0.0.0.0"), "127.0.0.1:5000");
        assert_eq!(probe("::"), "[::1]:5000");
        assert_eq!(probe("127.0.0.2"), "127.0.0.2:5000");
        assert_eq!(probe("fd00::5"), "[fd00::5]:5000");
        assert!(probe_address("localhost", 5000).unwrap().ip().is_loopback());
        assert!(probe_address("no-such-host.invalid", 5000).is_err());
    }
}
