//! The servers under load: userstack itself, and its ceilings and baseline (nginx serving a
//! static file, the seed's Flask app under its dev server and under gunicorn).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tokio::process::Command;

use crate::procs::{Proc, free_port, wait_for_port};

/// A server listening on a loopback port.
#[derive(Debug)]
pub(crate) struct Server {
    pub(crate) proc: Proc,
    pub(crate) port: u16,
}

impl Server {
    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub(crate) fn pid(&self) -> u32 {
        self.proc.pid()
    }

    pub(crate) async fn stop(self) {
        self.proc.stop().await;
    }
}

/// `userstack serve` on a free port with `env` on top of the benchmark's defaults; returns once
/// `/healthz` answers 200.
pub(crate) async fn userstack(
    bin: &Path,
    work: &Path,
    name: &str,
    env: &[(&str, String)],
    http: &reqwest::Client,
) -> Result<Server> {
    let port = free_port()?;
    let mut cmd = Command::new(bin);
    cmd.arg("serve")
        .env("HOST", "127.0.0.1")
        .env("PORT", port.to_string())
        // /metrics on the benchmarked port (open: no token), and no admin listener to collide
        // on port 9000 between the servers of one run.
        .env("ADMIN_PORT", "0")
        .env("RUST_LOG", "warn");
    for (k, v) in env {
        cmd.env(k, v);
    }
    eprintln!("==> userstack server '{name}' on 127.0.0.1:{port}");
    let mut proc = Proc::spawn(name, cmd, &work.join(format!("server-{name}.log")))?;
    let deadline = Instant::now() + Duration::from_secs(60);
    let health = format!("http://127.0.0.1:{port}/healthz");
    loop {
        proc.check_running()?;
        if let Ok(r) = http.get(&health).send().await
            && r.status().is_success()
        {
            break;
        }
        if Instant::now() > deadline {
            bail!("server '{name}' did not answer {health} within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(Server { proc, port })
}

/// `hyper-floor` (crates/bench/src/bin) on a free port, answering `GET /users` with the bytes of
/// `page`; returns once it accepts connections.
pub(crate) async fn hyper_floor(bin: &Path, work: &Path, page: &Path) -> Result<Server> {
    let port = free_port()?;
    let mut cmd = Command::new(bin);
    cmd.env("PORT", port.to_string()).env("PAGE", page);
    eprintln!("==> hyper alone on 127.0.0.1:{port}");
    let proc = Proc::spawn("hyper-floor", cmd, &work.join("hyper-floor.log"))?;
    wait_for_port("hyper-floor", port, Duration::from_secs(10)).await?;
    Ok(Server { proc, port })
}

/// Debian's nginx serving `files` (name, bytes) at `/{name}`: one worker per core, keep-alive
/// without a request limit, no access log, sendfile and an open-file cache: nginx at its best on
/// a static file, the ceiling of a response the server has ready in memory.
pub(crate) async fn nginx(work: &Path, files: &[(&str, &[u8])], workers: usize) -> Result<Server> {
    let dir = work.join("nginx");
    std::fs::create_dir_all(dir.join("www"))?;
    std::fs::create_dir_all(dir.join("tmp"))?;
    for (name, body) in files {
        std::fs::write(dir.join("www").join(name), body)?;
    }
    let port = free_port()?;
    let d = dir.display();
    let conf = format!(
        "worker_processes {workers};
worker_rlimit_nofile 65536;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 20000; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_timeout 75s;
    keepalive_requests 1000000000;
    open_file_cache max=16 inactive=60s;
    client_body_temp_path {d}/tmp/body;
    proxy_temp_path {d}/tmp/proxy;
    types {{ application/json json; text/plain txt; }}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        root {d}/www;
    }}
}}
"
    );
    std::fs::write(dir.join("nginx.conf"), conf)?;
    let mut cmd = Command::new(nginx_bin());
    cmd.args([
        "-e",
        &format!("{d}/error.log"),
        "-p",
        &format!("{d}/"),
        "-c",
    ])
    .arg(dir.join("nginx.conf"))
    .args(["-g", "daemon off;"]);
    eprintln!("==> nginx ({workers} workers) on 127.0.0.1:{port}");
    let mut proc = Proc::spawn("nginx", cmd, &work.join("nginx.log"))?;
    wait_for_port("nginx", port, Duration::from_secs(20))
        .await
        .inspect_err(|_| {
            let _ = proc.check_running();
        })?;
    proc.check_running()?;
    Ok(Server { proc, port })
}

fn nginx_bin() -> PathBuf {
    ["/usr/sbin/nginx", "/usr/bin/nginx"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from("nginx"))
}

/// How the seed's Flask app is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FlaskRunner {
    /// `flask run`: Werkzeug's development server, a thread per request.
    Dev,
    /// gunicorn with 2 x cores + 1 sync workers, gunicorn's documented starting point.
    Gunicorn,
}

/// `bench/flask_app.py` on PostgreSQL `pg` (host, port, user, database) and Redis `redis_port`.
pub(crate) async fn flask(
    runner: FlaskRunner,
    python: &str,
    bench_dir: &Path,
    work: &Path,
    pg: (&str, u16, &str, &str),
    redis_port: u16,
) -> Result<Server> {
    let port = free_port()?;
    let mut cmd = Command::new(python);
    match runner {
        FlaskRunner::Dev => {
            cmd.args(["-m", "flask", "--app", "flask_app", "run", "--no-reload"])
                .args([
                    "--no-debugger",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    &port.to_string(),
                ]);
        }
        FlaskRunner::Gunicorn => {
            let workers = 2 * std::thread::available_parallelism().map_or(2, |n| n.get()) + 1;
            cmd.args(["-m", "gunicorn", "--workers", &workers.to_string()])
                .args(["--bind", &format!("127.0.0.1:{port}"), "flask_app:app"]);
        }
    }
    cmd.current_dir(bench_dir)
        .env("PGHOST", pg.0)
        .env("PGPORT", pg.1.to_string())
        .env("PGUSER", pg.2)
        .env("PGDATABASE", pg.3)
        .env("REDIS_HOST", "127.0.0.1")
        .env("REDIS_PORT", redis_port.to_string())
        .env("PYTHONDONTWRITEBYTECODE", "1");
    let name = match runner {
        FlaskRunner::Dev => "flask-dev",
        FlaskRunner::Gunicorn => "gunicorn",
    };
    eprintln!("==> the seed's Flask app ({name}) on 127.0.0.1:{port}");
    let mut proc = Proc::spawn(name, cmd, &work.join(format!("{name}.log")))?;
    if let Err(e) = wait_for_port(name, port, Duration::from_secs(30)).await {
        proc.check_running()?;
        return Err(e);
    }
    Ok(Server { proc, port })
}

/// Checks that `python` can import what the Flask baseline needs.
pub(crate) fn check_python(python: &str) -> Result<()> {
    let out = std::process::Command::new(python)
        .args(["-c", "import flask, psycopg2, redis, gunicorn"])
        .output()
        .with_context(|| format!("run {python}"))?;
    if !out.status.success() {
        bail!(
            "{python} cannot import flask, psycopg2, redis and gunicorn (Debian: apt-get install \
             python3-flask python3-psycopg2 python3-redis gunicorn; .ci/install.sh does), or pass \
             --python PATH, or --no-seed to skip the Flask baseline: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}
