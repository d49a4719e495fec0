//! Instructions per request on the PostgreSQL path, counted by callgrind: the figure to compare
//! before and after an optimisation on a machine whose wall-clock timings are noisy (shared
//! cores) and whose virtual CPU has no performance counters for `perf stat`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use tokio::process::Command;

use crate::procs::{Proc, free_port};

/// Which requests the instrumented server answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Target {
    /// `GET /users?limit=100&after=K`, K distinct, on a server that bypasses the cache.
    Postgres,
    /// `GET /users?limit=100` every time, on a server with Redis: every request after the first
    /// is a cache hit.
    Warm,
    /// `GET /users?limit=100` every time, answered by hyper alone
    /// (crates/bench/src/bin/hyper-floor.rs) with the warm page's bytes: the floor of `warm`,
    /// what any server on hyper's HTTP/1 connection executes for this page.
    Floor,
}

impl Target {
    fn url(self, port: u16, i: u64, step: u64, modulus: u64) -> String {
        match self {
            Self::Postgres => format!(
                "http://127.0.0.1:{port}/users?limit=100&after={}",
                i * step % modulus
            ),
            Self::Warm | Self::Floor => format!("http://127.0.0.1:{port}/users?limit=100"),
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Self::Postgres => "GET /users?limit=100 (cache bypassed, distinct after=)",
            Self::Warm => "GET /users?limit=100 (warm: the same page from Redis)",
            Self::Floor => "GET /users?limit=100 answered by hyper alone (the warm page's bytes)",
        }
    }
}

/// Runs `bin serve` under callgrind with `env` twice: once for a warm-up of 200 distinct
/// `GET /users?limit=100&after=K` sent one after another over one keep-alive connection, once
/// for the warm-up and `requests` more. The difference of the two counts, per request, is the
/// cost of a request without start-up and shutdown. Writes it and the functions that execute
/// most (self cost, the longer run) to `out/callgrind.txt`.
pub(crate) async fn callgrind(
    bin: &Path,
    work: &Path,
    env: &[(&str, String)],
    target: Target,
    requests: u64,
    modulus: u64,
    out: &Path,
) -> Result<String> {
    const WARMUP: u64 = 200;
    let (_, base) = instrumented_run(bin, work, env, target, WARMUP, modulus, "base").await?;
    let (dump, total) = instrumented_run(
        bin,
        work,
        env,
        target,
        WARMUP + requests,
        modulus,
        "measured",
    )
    .await?;
    let per_request = total.saturating_sub(base) as f64 / requests as f64;
    let annotate = std::process::Command::new("callgrind_annotate")
        .arg(&dump)
        .output()
        .context("run callgrind_annotate")?;
    let annotated = String::from_utf8_lossy(&annotate.stdout);
    let top: Vec<&str> = annotated
        .lines()
        .skip_while(|l| !l.contains("file:function"))
        .take(40)
        .collect();
    let report = format!(
        "callgrind: {}, one at a time\n\
         instructions (Ir) in the server: {base} for start, {WARMUP} requests and stop; {total} \
         with {requests} more: {per_request:.0} per request\n\n\
         functions by self cost in the longer run (callgrind_annotate):\n{}\n",
        target.describe(),
        top.join("\n")
    );
    std::fs::create_dir_all(out)?;
    std::fs::write(out.join("callgrind.txt"), &report)?;
    std::fs::copy(&dump, out.join("callgrind.out"))?;
    Ok(report)
}

/// One server under callgrind for `requests` requests; its dump and total instruction count.
async fn instrumented_run(
    bin: &Path,
    work: &Path,
    env: &[(&str, String)],
    target: Target,
    requests: u64,
    modulus: u64,
    name: &str,
) -> Result<(PathBuf, u64)> {
    let port = free_port()?;
    let dump = work.join(format!("callgrind-{name}.out"));
    let mut cmd = Command::new("valgrind");
    cmd.args(["--tool=callgrind", "--dump-instr=no"])
        .arg(format!("--callgrind-out-file={}", dump.display()))
        .arg(bin)
        .arg("serve")
        .env("HOST", "127.0.0.1")
        .env("PORT", port.to_string())
        // No admin listener: none to collide on port 9000 (as in servers.rs).
        .env("ADMIN_PORT", "0")
        .env("RUST_LOG", "warn");
    for (k, v) in env {
        cmd.env(k, v);
    }
    eprintln!(
        "==> {} under callgrind on 127.0.0.1:{port}, {requests} requests",
        bin.display()
    );
    let mut proc = Proc::spawn(
        "callgrind",
        cmd,
        &work.join(format!("callgrind-{name}.log")),
    )
    .context("run valgrind (Debian: apt-get install valgrind)")?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()?;
    let deadline = Instant::now() + Duration::from_secs(180);
    while !http
        .get(format!("http://127.0.0.1:{port}/healthz"))
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
    {
        proc.check_running()?;
        ensure!(
            Instant::now() < deadline,
            "the server under callgrind did not start"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let step = (modulus as f64 * 0.618_033_988_7) as u64 | 1;
    for i in 0..requests {
        let url = target.url(port, i, step, modulus);
        let r = http.get(&url).send().await?;
        ensure!(r.status().is_success(), "{url}: {}", r.status());
        let body = r.bytes().await?;
        ensure!(
            body.len() > 1000,
            "{url}: a short page ({} bytes)",
            body.len()
        );
    }
    // SIGTERM: the server drains and exits, and callgrind writes the dump.
    proc.stop().await;
    let total = std::fs::read_to_string(&dump)
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("totals: "))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .with_context(|| format!("callgrind wrote no complete dump at {}", dump.display()))?;
    Ok((dump, total))
}
