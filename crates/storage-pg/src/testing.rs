//! A throwaway PostgreSQL server for tests (feature `testing`).
//!
//! [`TestPostgres::start`] uses `TEST_DATABASE_URL` when set; otherwise it runs `initdb` and
//! `pg_ctl` from the local PostgreSQL installation into a temporary directory, on a free port,
//! and removes it all on drop. A missing installation is a test failure that says what to
//! install, never a silent skip.

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::repository::PgSettings;

/// A PostgreSQL server owned by a test.
#[derive(Debug)]
pub struct TestPostgres {
    base: tokio_postgres::Config,
    managed: Option<Managed>,
}

#[derive(Debug)]
struct Managed {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    /// PostgreSQL refuses to run as root; when we are root it runs as this uid/gid.
    run_as: Option<(u32, u32)>,
    /// Commits are acknowledged only once their WAL is written (see `start_durable`).
    durable: bool,
}

static DATABASES: AtomicU32 = AtomicU32::new(0);

impl TestPostgres {
    /// The server named by `TEST_DATABASE_URL`, or a new private one.
    pub fn start() -> Self {
        match std::env::var("TEST_DATABASE_URL") {
            Ok(url) if !url.is_empty() => Self {
                base: url
                    .parse()
                    .expect("TEST_DATABASE_URL is not a valid PostgreSQL URL"),
                managed: None,
            },
            _ => Self::start_private(),
        }
    }

    /// Always a new private server (for tests that stop and restart it).
    pub fn start_private() -> Self {
        Self::start_private_with(false)
    }

    /// A new private server that keeps every acknowledged commit through a crash of its
    /// processes (`synchronous_commit=on`; `fsync` stays off, which only matters if the machine
    /// itself crashes). For tests that kill it and then count what was lost.
    pub fn start_durable() -> Self {
        Self::start_private_with(true)
    }

    fn start_private_with(durable: bool) -> Self {
        let bin = find_bin_dir();
        let dir = tempfile::Builder::new()
            .prefix("userstack-pg-")
            .tempdir()
            .expect("create a temporary directory");
        let run_as = postgres_user_if_root();
        if let Some((uid, gid)) = run_as {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).expect("chown data dir");
        }
        let port = free_port();
        let managed = Managed {
            dir,
            bin,
            port,
            run_as,
            durable,
        };
        managed.run(
            "initdb",
            &[
                "-D",
                "data",
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ],
        );
        managed.pg_ctl_start();
        let mut base = tokio_postgres::Config::new();
        base.host("127.0.0.1")
            .port(port)
            .user("postgres")
            .dbname("postgres");
        Self {
            base,
            managed: Some(managed),
        }
    }

    /// Settings for a new, empty database on this server, so tests never see each other's rows.
    pub async fn fresh_database(&self) -> PgSettings {
        let name = format!(
            "userstack_test_{}_{}",
            std::process::id(),
            DATABASES.fetch_add(1, Ordering::Relaxed)
        );
        connect(&self.base)
            .await
            // A Unicode LC_CTYPE, as the official image's en_US.utf8, so that locale-dependent
            // behaviour (lower() on non-ASCII letters) shows in tests.
            .batch_execute(&format!(
                "CREATE DATABASE {name} TEMPLATE template0 ENCODING 'UTF8' \
                 LC_COLLATE 'C.UTF-8' LC_CTYPE 'C.UTF-8'"
            ))
            .await
            .expect("create a test database");
        let mut config = self.base.clone();
        config.dbname(&name);
        PgSettings {
            config,
            pool_size: 4,
            ..PgSettings::default()
        }
    }

    /// A connection of its own to `settings`' database, outside any pool (to hold a lock, to
    /// watch `pg_stat_activity`, to check what was stored); its driver runs on a spawned task.
    pub async fn client(settings: &PgSettings) -> tokio_postgres::Client {
        connect(&settings.config).await
    }

    /// A `postgres://` URL for `settings`, for programs configured through `DATABASE_URL`.
    pub fn url(settings: &PgSettings) -> String {
        let c = &settings.config;
        let host = match &c.get_hosts()[0] {
            tokio_postgres::config::Host::Tcp(h) => h.clone(),
            tokio_postgres::config::Host::Unix(p) => p.display().to_string(),
        };
        let password = c
            .get_password()
            .map(|p| format!(":{}", String::from_utf8_lossy(p)))
            .unwrap_or_default();
        format!(
            "postgres://{}{password}@{host}:{}/{}",
            c.get_user().unwrap_or("postgres"),
            c.get_ports().first().copied().unwrap_or(5432),
            c.get_dbname().unwrap_or("postgres"),
        )
    }

    /// Stops the server (fast shutdown: clients are disconnected). Data is kept.
    pub fn stop(&self) {
        self.managed()
            .run("pg_ctl", &["-D", "data", "-m", "fast", "-w", "stop"]);
    }

    /// Starts a stopped server again on the same port and data.
    pub fn restart(&self) {
        self.managed().pg_ctl_start();
    }

    /// Crashes the server (`pg_ctl stop -m immediate`: every process exits at once, no
    /// checkpoint; the next start replays the WAL). Start it again with [`TestPostgres::restart`].
    pub fn crash(&self) {
        self.managed()
            .run("pg_ctl", &["-D", "data", "-m", "immediate", "-w", "stop"]);
    }

    /// Freezes (`SIGSTOP`) or thaws (`SIGCONT`) the whole server, postmaster and every backend:
    /// the kernel still accepts connections and acknowledges data, but nothing answers, as with
    /// a hung host or a stalled disk.
    pub fn freeze(&self, frozen: bool) {
        let postmaster = self.managed().postmaster().expect("the server is running");
        // The postmaster first when freezing, so that it forks no new backend meanwhile; last
        // when thawing, so that the backends are running when it hands them work.
        let mut pids = vec![postmaster];
        pids.extend(children_of(postmaster));
        if !frozen {
            pids.reverse();
        }
        let signal = if frozen { "-STOP" } else { "-CONT" };
        for pid in pids {
            let _ = Command::new("kill")
                .args([signal, &pid.to_string()])
                .stderr(std::process::Stdio::null())
                .status();
        }
    }

    /// The postmaster's process id, for programs that measure the server's CPU (the benchmark);
    /// `None` for a server named by `TEST_DATABASE_URL`.
    pub fn postmaster_pid(&self) -> Option<u32> {
        self.managed.as_ref()?.postmaster()
    }

    fn managed(&self) -> &Managed {
        self.managed.as_ref().expect(
            "this test stops PostgreSQL, so it needs its own server: unset TEST_DATABASE_URL",
        )
    }
}

impl Managed {
    /// The postmaster's pid, from the first line of `postmaster.pid`, while it runs.
    fn postmaster(&self) -> Option<u32> {
        std::fs::read_to_string(self.dir.path().join("data/postmaster.pid"))
            .ok()?
            .lines()
            .next()?
            .trim()
            .parse()
            .ok()
    }

    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(self.bin.join(program));
        cmd.current_dir(self.dir.path());
        if let Some((uid, gid)) = self.run_as {
            cmd.uid(uid).gid(gid);
        }
        cmd
    }

    fn run(&self, program: &str, args: &[&str]) {
        let out = self
            .command(program)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
        assert!(
            out.status.success(),
            "{program} {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn pg_ctl_start(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit={} \
             -c full_page_writes=off -c max_connections=200",
            self.port,
            self.dir.path().display(),
            if self.durable { "on" } else { "off" }
        );
        self.run(
            "pg_ctl",
            &[
                "-D",
                "data",
                "-l",
                "server.log",
                "-o",
                &options,
                "-w",
                "-t",
                "60",
                "start",
            ],
        );
    }
}

impl Drop for Managed {
    fn drop(&mut self) {
        // A test that failed while the server was frozen: a stopped process cannot act on the
        // shutdown signal, so thaw it first.
        if let Some(postmaster) = self.postmaster() {
            for pid in std::iter::once(postmaster).chain(children_of(postmaster)) {
                let _ = Command::new("kill")
                    .args(["-CONT", &pid.to_string()])
                    .stderr(std::process::Stdio::null())
                    .status();
            }
        }
        // Immediate: nothing to keep, and the directory is removed next.
        let _ = self
            .command("pg_ctl")
            .args(["-D", "data", "-m", "immediate", "-w", "stop"])
            .output();
    }
}

/// Where `initdb` and `pg_ctl` live: `PG_BIN`, else the newest Debian-style
/// `/usr/lib/postgresql/*/bin`, else `PATH`.
fn find_bin_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("PG_BIN") {
        return PathBuf::from(dir);
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return bin;
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .find(|dir| dir.join("initdb").exists() && dir.join("pg_ctl").exists())
        .unwrap_or_else(|| {
            panic!(
                "PostgreSQL server binaries (initdb, pg_ctl) not found. Install them \
                 (Debian: apt-get install postgresql), set PG_BIN to their directory, or set \
                 TEST_DATABASE_URL to a server the tests may create databases on."
            )
        })
}

fn postgres_user_if_root() -> Option<(u32, u32)> {
    let root = std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false);
    if !root {
        return None;
    }
    let passwd = std::fs::read_to_string(Path::new("/etc/passwd")).unwrap_or_default();
    let entry = passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.first() == Some(&"postgres") && f.len() > 3)
        .unwrap_or_else(|| {
            panic!("running as root, and there is no 'postgres' user to run PostgreSQL as (Debian: apt-get install postgresql)")
        });
    Some((entry[2].parse().unwrap(), entry[3].parse().unwrap()))
}

/// The processes whose parent is `parent`, from /proc.
fn children_of(parent: u32) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(entry.path().join("stat")).ok()?;
            // "pid (comm) state ppid …"; comm may hold spaces and parentheses.
            let ppid: u32 = stat
                .rsplit_once(')')?
                .1
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()?;
            (ppid == parent).then_some(pid)
        })
        .collect()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("find a free port")
        .port()
}

async fn connect(config: &tokio_postgres::Config) -> tokio_postgres::Client {
    let (client, connection) = config
        .connect(tokio_postgres::NoTls)
        .await
        .expect("connect to the test PostgreSQL");
    tokio::spawn(connection);
    client
}
