//! Configuration from the environment (12-factor), with defaults that match the deploy files:
//! PostgreSQL at `db:5432` (database `mydb`, user `postgres`), Redis at `redis:6379`, HTTP on
//! `0.0.0.0:5000`. Every setting is also a command-line flag; `userstack --help` lists them all.
//!
//! Each default is written once, by the part that owns the setting: the adapters'
//! [`PgSettings::default`] and [`RedisSettings::default`], the core's [`ServiceConfig::default`],
//! and the attributes below for what only the server has (listening, HTTP limits, start-up).
//! The flags show those values (`--help`), and [`HttpConfig::default`] reads them back from here.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Arg, Args, FromArgMatches, ValueEnum};
use tokio_postgres::config::Host;
use userstack_cache_redis::RedisSettings;
use userstack_core::ServiceConfig;
use userstack_storage_pg::PgSettings;

// Every option is global, so it may also follow a subcommand (`userstack migrate --pghost x`).
// `mut_args` runs after the flattened groups below have added theirs, so this one line covers
// them all.
#[derive(Debug, Clone, Args)]
#[command(mut_args = |arg: Arg| arg.global(true))]
pub struct Config {
    /// Address to listen on.
    #[arg(long, env = "HOST", default_value = "0.0.0.0")]
    pub host: String,
    /// Port to listen on (also the port `healthcheck` asks).
    #[arg(long, env = "PORT", default_value_t = 5000)]
    pub port: u16,

    #[command(flatten)]
    pub database: DatabaseConfig,
    #[command(flatten)]
    pub cache: CacheConfig,
    #[command(flatten)]
    pub http: HttpConfig,
    #[command(flatten)]
    pub auth: AuthConfig,
    #[command(flatten)]
    pub admin: AdminConfig,

    /// Log format: human-readable text or one JSON object per line.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Args)]
pub struct DatabaseConfig {
    /// PostgreSQL connection URL or key=value string; when set, the PG* variables are ignored.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// PostgreSQL host.
    #[arg(long, env = "PGHOST", default_value_t = pg_default::host())]
    pub pghost: String,
    /// PostgreSQL port.
    #[arg(long, env = "PGPORT", default_value_t = pg_default::port())]
    pub pgport: u16,
    /// PostgreSQL user.
    #[arg(long, env = "PGUSER", default_value_t = pg_default::user())]
    pub pguser: String,
    /// PostgreSQL password (prefer DATABASE_PASSWORD_FILE).
    #[arg(
        long,
        env = "PGPASSWORD",
        default_value_t = pg_default::password(),
        hide_env_values = true,
        hide_default_value = true
    )]
    pub pgpassword: String,
    /// PostgreSQL database.
    #[arg(long, env = "PGDATABASE", default_value_t = pg_default::dbname())]
    pub pgdatabase: String,
    /// File holding the PostgreSQL password (e.g. a Docker secret); overrides every other source.
    #[arg(long, env = "DATABASE_PASSWORD_FILE")]
    pub database_password_file: Option<PathBuf>,
    /// Most PostgreSQL connections held by this process.
    #[arg(long, env = "DATABASE_POOL_SIZE", default_value_t = PgSettings::default().pool_size)]
    pub database_pool_size: u32,
    /// Longest one database operation may take, on this process's clock: a pooled connection
    /// (or a new one) plus its statement. Past it the request fails with 503, and a connection
    /// left waiting on a hung server is discarded (ms).
    #[arg(
        long,
        env = "DATABASE_TIMEOUT_MS",
        default_value_t = millis(PgSettings::default().connection_timeout)
    )]
    pub database_timeout_ms: u64,
    /// PostgreSQL's `statement_timeout` for the pool's connections: the server cancels longer
    /// statements itself (ms). Keep it under DATABASE_TIMEOUT_MS.
    #[arg(
        long,
        env = "DATABASE_STATEMENT_TIMEOUT_MS",
        default_value_t = millis(PgSettings::default().statement_timeout)
    )]
    pub database_statement_timeout_ms: u64,
    /// PostgreSQL's `lock_timeout` while migrating: a schema change that waits longer for a
    /// table lock gives up instead of blocking every query on that table (ms).
    #[arg(
        long,
        env = "DATABASE_MIGRATION_LOCK_TIMEOUT_MS",
        default_value_t = millis(PgSettings::default().migration_lock_timeout)
    )]
    pub database_migration_lock_timeout_ms: u64,
    /// How long start-up waits for PostgreSQL to accept connections (s).
    #[arg(long, env = "DATABASE_STARTUP_TIMEOUT_SECS", default_value_t = 60)]
    pub database_startup_timeout_secs: u64,
}

#[derive(Debug, Clone, Args)]
pub struct CacheConfig {
    /// Redis URL.
    #[arg(long, env = "REDIS_URL", default_value_t = RedisSettings::default().url)]
    pub redis_url: String,
    /// File holding the Redis password (`requirepass`; e.g. a Docker secret). Overrides a
    /// password in REDIS_URL, which would show in `docker inspect`.
    #[arg(long, env = "REDIS_PASSWORD_FILE")]
    pub redis_password_file: Option<PathBuf>,
    /// Prefix of every Redis key this service writes.
    #[arg(
        long,
        env = "REDIS_KEY_PREFIX",
        default_value_t = RedisSettings::default().key_prefix
    )]
    pub redis_key_prefix: String,
    /// Most Redis connections (each is multiplexed).
    #[arg(long, env = "REDIS_POOL_SIZE", default_value_t = RedisSettings::default().pool_size)]
    pub redis_pool_size: u32,
    /// How long the Redis pool keeps trying to open a connection before giving up on it (ms).
    /// Independent of CACHE_TIMEOUT_MS: a request stops waiting for Redis after that, while the
    /// connection it asked for may still open and serve the next request.
    #[arg(
        long,
        env = "REDIS_CONNECT_TIMEOUT_MS",
        default_value_t = millis(RedisSettings::default().connection_timeout)
    )]
    pub redis_connect_timeout_ms: u64,
    /// How long a cached user or page may be served (s); from memory, for as long again while
    /// one read refreshes it or when that refresh fails.
    #[arg(
        long,
        env = "CACHE_TTL_SECS",
        default_value_t = ServiceConfig::default().cache_ttl.as_secs()
    )]
    pub cache_ttl_secs: u64,
    /// Longest wait for one Redis call before falling back to PostgreSQL (ms).
    #[arg(
        long,
        env = "CACHE_TIMEOUT_MS",
        default_value_t = millis(ServiceConfig::default().cache_timeout)
    )]
    pub cache_timeout_ms: u64,
    /// How long Redis is bypassed after it failed (ms).
    #[arg(
        long,
        env = "CACHE_BACKOFF_MS",
        default_value_t = millis(ServiceConfig::default().cache_backoff)
    )]
    pub cache_backoff_ms: u64,
    /// Most bytes of cached users and pages kept in the server's memory in front of Redis; 0
    /// keeps none, and every read asks Redis. Another replica's write reaches them through a
    /// Redis announcement (see ARCHITECTURE.md, "The cache in memory").
    #[arg(
        long,
        env = "LOCAL_CACHE_BYTES",
        default_value_t = ServiceConfig::default().local_cache_bytes
    )]
    pub local_cache_bytes: usize,
    /// How often the generation is checked in Redis while memory is used (ms); memory stops
    /// being used as soon as a check fails or takes ten checks (1 s), or twenty checks after the
    /// last good one.
    #[arg(
        long,
        env = "LOCAL_CACHE_CHECK_MS",
        default_value_t = millis(ServiceConfig::default().local_cache_check)
    )]
    pub local_cache_check_ms: u64,
}

#[derive(Debug, Clone, Args)]
pub struct HttpConfig {
    /// Longest time a request may take before it is answered 503 (s).
    #[arg(long, env = "REQUEST_TIMEOUT_SECS", default_value_t = 10)]
    pub request_timeout_secs: u64,
    /// Largest accepted request body (bytes).
    #[arg(long, env = "BODY_LIMIT_BYTES", default_value_t = 64 * 1024)]
    pub body_limit_bytes: usize,
    /// On SIGTERM/SIGINT, how long in-flight requests may finish before the process exits (s).
    /// Below Docker's default 10 s grace period, so we exit before being killed.
    #[arg(long, env = "SHUTDOWN_TIMEOUT_SECS", default_value_t = 8)]
    pub shutdown_timeout_secs: u64,
    /// On SIGTERM/SIGINT, how long to keep accepting connections with /readyz answering 503
    /// before the drain starts (s): the time a load balancer needs to take this process out of
    /// rotation. 0 without one; deploy/swarm sets it above HAProxy's check interval.
    #[arg(long, env = "SHUTDOWN_DELAY_SECS", default_value_t = 0)]
    pub shutdown_delay_secs: u64,
    /// Longest time a client may take to send a request's headers, from the moment the server
    /// waits for them, before the connection is closed (s). Bounds slowloris clients.
    #[arg(long, env = "HEADER_READ_TIMEOUT_SECS", default_value_t = 5)]
    pub header_read_timeout_secs: u64,
    /// How long a keep-alive connection may sit with no request in flight before it is closed
    /// (s).
    #[arg(long, env = "IDLE_TIMEOUT_SECS", default_value_t = 60)]
    pub idle_timeout_secs: u64,
    /// Most open client connections; further ones wait in the listen backlog until one closes.
    /// Keep it under the process's open-file limit (`ulimit -n`) minus the pools.
    #[arg(long, env = "MAX_CONNECTIONS", default_value_t = 1024)]
    pub max_connections: usize,
    /// Connections the kernel completes and holds until the server accepts them (`listen(2)`'s
    /// backlog; Linux caps it at `net.core.somaxconn`, 4096 by default). A burst of clients
    /// beyond it has its handshakes dropped and retried a second or more later.
    #[arg(long, env = "LISTEN_BACKLOG", default_value_t = 4096)]
    pub listen_backlog: u32,
    /// Open connections above which an idle keep-alive connection gives back hyper's buffers
    /// (about 10 KB) until its client sends again, at the cost of building them anew for each
    /// request. Equal to `MAX_CONNECTIONS`' default: parking starts only where that is raised.
    #[arg(long, env = "PARK_IDLE_ABOVE", default_value_t = 1024)]
    pub park_idle_above: usize,
    /// Most requests being handled at once; past it a request is answered 503 with
    /// `Retry-After` at once instead of queueing (health and metrics probes are exempt).
    #[arg(long, env = "MAX_IN_FLIGHT", default_value_t = 512)]
    pub max_in_flight: usize,
}

impl HttpConfig {
    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs(self.request_timeout_secs)
    }
    pub fn shutdown_timeout(&self) -> Duration {
        Duration::from_secs(self.shutdown_timeout_secs)
    }
    pub fn shutdown_delay(&self) -> Duration {
        Duration::from_secs(self.shutdown_delay_secs)
    }
    pub fn header_read_timeout(&self) -> Duration {
        Duration::from_secs(self.header_read_timeout_secs)
    }
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_secs(self.idle_timeout_secs)
    }
}

impl Default for HttpConfig {
    /// The defaults declared on the flags above, whatever the environment holds.
    fn default() -> Self {
        flag_defaults()
    }
}

/// What a group of flags holds when none is given and no variable is set: the defaults exactly as
/// `--help` shows them, so that `Default` impls never restate them.
fn flag_defaults<T: Args + FromArgMatches>() -> T {
    let command = T::augment_args(clap::Command::new("defaults")).mut_args(|arg| arg.env(None));
    let matches = command.get_matches_from(["defaults"]);
    T::from_arg_matches(&matches).expect("the declared defaults parse")
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// The connection defaults of [`PgSettings::default`], as the PG* flags spell them.
mod pg_default {
    use super::{Host, PgSettings};

    fn config() -> tokio_postgres::Config {
        PgSettings::default().config
    }
    pub(super) fn host() -> String {
        match config().get_hosts().first() {
            Some(Host::Tcp(host)) => host.clone(),
            other => panic!("PgSettings::default() names no TCP host: {other:?}"),
        }
    }
    pub(super) fn port() -> u16 {
        config().get_ports().first().copied().unwrap_or(5432)
    }
    pub(super) fn user() -> String {
        config().get_user().unwrap_or_default().to_owned()
    }
    pub(super) fn password() -> String {
        String::from_utf8_lossy(config().get_password().unwrap_or_default()).into_owned()
    }
    pub(super) fn dbname() -> String {
        config().get_dbname().unwrap_or_default().to_owned()
    }
}

/// Who may use the API. With neither setting the API is open (as the original application was)
/// and the server says so loudly at start-up.
#[derive(Debug, Clone, Args)]
pub struct AuthConfig {
    /// File of bearer tokens, one per line (`#` comments and blank lines ignored; e.g. a Docker
    /// secret). Every route but /, /cache and /healthz then requires
    /// `Authorization: Bearer <one of them>`. Several lines let clients move to a new token
    /// before the old one is removed; the file is re-read when it changes.
    #[arg(long, env = "API_TOKEN_FILE")]
    pub api_token_file: Option<PathBuf>,
    /// Bearer tokens, comma-separated, for development (prefer API_TOKEN_FILE: a value in the
    /// environment shows in `docker inspect`). Used only when API_TOKEN_FILE is unset.
    #[arg(long, env = "API_TOKEN", hide_env_values = true)]
    pub api_token: Option<String>,
}

/// The admin listener: /metrics, /readyz and /healthz on a port of their own, for the container
/// network (health checks, a Prometheus scraper), never published.
#[derive(Debug, Clone, Args)]
pub struct AdminConfig {
    /// Port of the admin listener (also the port `healthcheck` asks). 0: no admin listener;
    /// /metrics and /readyz are then served on PORT, behind the token when one is set.
    #[arg(long, env = "ADMIN_PORT", default_value_t = 9000)]
    pub admin_port: u16,
    /// Address of the admin listener [default: HOST].
    #[arg(long, env = "ADMIN_HOST")]
    pub admin_host: Option<String>,
}

impl AdminConfig {
    /// Where the admin listener listens, or `None` when it is off.
    pub fn address(&self, host: &str) -> Option<(String, u16)> {
        (self.admin_port != 0).then(|| {
            (
                self.admin_host.clone().unwrap_or_else(|| host.to_owned()),
                self.admin_port,
            )
        })
    }
}

/// A setting that parsed but cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("DATABASE_URL is not a valid PostgreSQL URL: {0}")]
    DatabaseUrl(#[source] tokio_postgres::Error),
    #[error("cannot read {variable} {path}: {source}")]
    SecretFile {
        variable: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{variable}: every token must be at least {min} printable ASCII characters without spaces (e.g. `openssl rand -hex 32`)"
    )]
    BadToken { variable: &'static str, min: usize },
    #[error("{0} holds no token (one per line; `#` starts a comment)")]
    NoToken(&'static str),
    #[error("{0} must be greater than zero")]
    Zero(&'static str),
}

/// A secret from a file (a Docker secret). Files written by `echo` end in a newline that is not
/// part of the secret.
fn read_secret(variable: &'static str, path: &std::path::Path) -> Result<String, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::SecretFile {
        variable,
        path: path.to_owned(),
        source,
    })?;
    Ok(text.trim_end_matches(['\r', '\n']).to_owned())
}

impl DatabaseConfig {
    pub fn settings(&self) -> Result<PgSettings, ConfigError> {
        if self.database_pool_size == 0 {
            return Err(ConfigError::Zero("DATABASE_POOL_SIZE"));
        }
        if self.database_timeout_ms == 0 {
            return Err(ConfigError::Zero("DATABASE_TIMEOUT_MS"));
        }
        let mut config = match &self.database_url {
            Some(url) => url
                .parse::<tokio_postgres::Config>()
                .map_err(ConfigError::DatabaseUrl)?,
            None => {
                let mut c = tokio_postgres::Config::new();
                c.host(&self.pghost)
                    .port(self.pgport)
                    .user(&self.pguser)
                    .password(&self.pgpassword)
                    .dbname(&self.pgdatabase);
                c
            }
        };
        if let Some(path) = &self.database_password_file {
            config.password(read_secret("DATABASE_PASSWORD_FILE", path)?);
        }
        config.application_name("userstack");
        Ok(PgSettings {
            config,
            pool_size: self.database_pool_size,
            connection_timeout: Duration::from_millis(self.database_timeout_ms),
            statement_timeout: Duration::from_millis(self.database_statement_timeout_ms),
            migration_lock_timeout: Duration::from_millis(self.database_migration_lock_timeout_ms),
        })
    }

    pub fn startup_timeout(&self) -> Duration {
        Duration::from_secs(self.database_startup_timeout_secs)
    }
}

impl CacheConfig {
    pub fn settings(&self) -> Result<RedisSettings, ConfigError> {
        if self.redis_pool_size == 0 {
            return Err(ConfigError::Zero("REDIS_POOL_SIZE"));
        }
        let password = match &self.redis_password_file {
            Some(path) => Some(read_secret("REDIS_PASSWORD_FILE", path)?),
            None => None,
        };
        Ok(RedisSettings {
            url: self.redis_url.clone(),
            password,
            key_prefix: self.redis_key_prefix.clone(),
            pool_size: self.redis_pool_size,
            connection_timeout: Duration::from_millis(self.redis_connect_timeout_ms),
        })
    }

    pub fn service(&self) -> Result<ServiceConfig, ConfigError> {
        if self.cache_ttl_secs == 0 {
            return Err(ConfigError::Zero("CACHE_TTL_SECS"));
        }
        if self.local_cache_bytes > 0 && self.local_cache_check_ms == 0 {
            return Err(ConfigError::Zero("LOCAL_CACHE_CHECK_MS"));
        }
        Ok(ServiceConfig {
            cache_ttl: Duration::from_secs(self.cache_ttl_secs),
            cache_timeout: Duration::from_millis(self.cache_timeout_ms),
            cache_backoff: Duration::from_millis(self.cache_backoff_ms),
            local_cache_bytes: self.local_cache_bytes,
            local_cache_check: Duration::from_millis(self.local_cache_check_ms),
            // Not a flag: a readiness probe's own bound, not something to tune per deployment.
            ..ServiceConfig::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;
    use userstack_cache_redis::RedisSettings;
    use userstack_core::ServiceConfig;
    use userstack_storage_pg::PgSettings;

    use super::{Config, flag_defaults};
    use crate::cli::{Cli, Command};

    #[test]
    fn the_flags_default_to_what_the_adapters_and_the_core_declare() {
        let config: Config = flag_defaults();
        let (pg, pg_default) = (config.database.settings().unwrap(), PgSettings::default());
        assert_eq!(
            format!("{:?}", pg.config),
            format!("{:?}", pg_default.config)
        );
        assert_eq!(pg.pool_size, pg_default.pool_size);
        assert_eq!(pg.connection_timeout, pg_default.connection_timeout);
        assert_eq!(pg.statement_timeout, pg_default.statement_timeout);
        assert_eq!(pg.migration_lock_timeout, pg_default.migration_lock_timeout);

        let (redis, redis_default) = (config.cache.settings().unwrap(), RedisSettings::default());
        assert_eq!(redis.url, redis_default.url);
        assert_eq!(redis.key_prefix, redis_default.key_prefix);
        assert_eq!(redis.pool_size, redis_default.pool_size);
        assert_eq!(redis.connection_timeout, redis_default.connection_timeout);

        let (service, service_default) =
            (config.cache.service().unwrap(), ServiceConfig::default());
        assert_eq!(service.cache_ttl, service_default.cache_ttl);
        assert_eq!(service.cache_timeout, service_default.cache_timeout);
        assert_eq!(service.cache_backoff, service_default.cache_backoff);
        assert_eq!(service.local_cache_bytes, service_default.local_cache_bytes);
        assert_eq!(service.local_cache_check, service_default.local_cache_check);
    }

    /// A zero check period would make the memory watcher's timer panic; it is refused unless
    /// memory is off.
    #[test]
    fn a_zero_local_cache_check_is_refused_while_memory_is_on() {
        let service = |args: &[&str]| {
            let args = std::iter::once("userstack").chain(args.iter().copied());
            Cli::try_parse_from(args).unwrap().config.cache.service()
        };
        let refused = service(&["--local-cache-check-ms", "0"]).unwrap_err();
        assert!(
            refused.to_string().contains("LOCAL_CACHE_CHECK_MS"),
            "{refused}"
        );
        let off = service(&["--local-cache-bytes", "0", "--local-cache-check-ms", "0"]).unwrap();
        assert_eq!(off.local_cache_bytes, 0);
    }

    #[test]
    fn every_option_may_come_before_or_after_the_subcommand() {
        for args in [
            ["userstack", "--pghost", "elsewhere", "migrate"],
            ["userstack", "migrate", "--pghost", "elsewhere"],
        ] {
            let cli = Cli::try_parse_from(args).unwrap();
            assert!(matches!(cli.command, Some(Command::Migrate)));
            assert_eq!(cli.config.database.pghost, "elsewhere");
        }
        let cli = Cli::try_parse_from(["userstack", "healthcheck", "--port", "8080"]).unwrap();
        assert_eq!(cli.config.port, 8080);
    }

    fn database_settings(args: &[&str]) -> userstack_storage_pg::PgSettings {
        let args = std::iter::once("userstack").chain(args.iter().copied());
        let cli = Cli::try_parse_from(args).unwrap();
        cli.config.database.settings().unwrap()
    }

    #[test]
    fn the_password_file_overrides_the_url_and_loses_only_its_line_ending() {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), "s3cret \r\n").unwrap();
        let path = file.path().to_str().unwrap();
        let settings = database_settings(&[
            "--database-url",
            "postgres://app:from-url@db/mydb",
            "--database-password-file",
            path,
        ]);
        assert_eq!(settings.config.get_password(), Some(&b"s3cret "[..]));
        assert_eq!(settings.config.get_user(), Some("app"));

        let settings = database_settings(&["--pgpassword", "pw", "--database-password-file", path]);
        assert_eq!(settings.config.get_password(), Some(&b"s3cret "[..]));
    }
}
