//! Driving load (wrk, pgbench) and measuring one path: repeated runs, CPU of every party, the
//! server's memory and pool, the cache's hit rate.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use tokio::process::Command;

use crate::procs::{self, machine_ticks, ticks, tree_rss_kib, tree_ticks};
use crate::stats::{median, percentile};

/// How to generate load for one measurement.
#[derive(Debug, Clone)]
pub(crate) enum Load {
    /// wrk with `bench/wrk.lua` in `mode` (see there) against `url`.
    Wrk {
        url: String,
        mode: &'static str,
        modulus: u64,
        connections: u32,
    },
    /// pgbench running `script` (prepared statements) with `clients` connections.
    Pgbench {
        script: PathBuf,
        clients: u32,
        vars: Vec<(String, String)>,
    },
}

impl Load {
    pub(crate) fn wrk(url: String, mode: &'static str, modulus: u64, connections: u32) -> Self {
        Self::Wrk {
            url,
            mode,
            modulus,
            connections,
        }
    }

    fn connections(&self) -> u32 {
        match self {
            Self::Wrk { connections, .. } => *connections,
            Self::Pgbench { clients, .. } => *clients,
        }
    }
}

/// What to watch while a path is measured, besides the load generator.
#[derive(Debug, Clone, Default)]
pub(crate) struct Watch {
    /// The serving process (tree): its CPU per request and its memory.
    pub(crate) server: Option<u32>,
    /// The userstack server's `/metrics`, for cache hits and the PostgreSQL pool.
    pub(crate) metrics: Option<String>,
}

/// One measured run.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Run {
    pub(crate) seconds: f64,
    pub(crate) requests: u64,
    pub(crate) rps: f64,
    pub(crate) p50_ms: f64,
    pub(crate) p90_ms: f64,
    pub(crate) p99_ms: f64,
    pub(crate) p999_ms: f64,
    pub(crate) max_ms: f64,
    /// Failed requests by kind (wrk: connect, read, write, timeout, status = non-2xx/3xx;
    /// pgbench: failed).
    pub(crate) errors: BTreeMap<String, u64>,
}

impl Run {
    pub(crate) fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }
}

/// CPU cores used while measuring, by party.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub(crate) struct Cores {
    pub(crate) server: f64,
    pub(crate) postgres: f64,
    pub(crate) redis: f64,
    pub(crate) load: f64,
    pub(crate) other: f64,
}

/// One path, measured: the runs, their medians and what was observed meanwhile.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Measurement {
    pub(crate) id: String,
    pub(crate) label: String,
    pub(crate) connections: u32,
    pub(crate) runs: Vec<Run>,
    pub(crate) rps: f64,
    pub(crate) rps_min: f64,
    pub(crate) rps_max: f64,
    pub(crate) p50_ms: f64,
    pub(crate) p99_ms: f64,
    pub(crate) p999_ms: f64,
    pub(crate) requests: u64,
    pub(crate) errors: u64,
    /// Server CPU time per request, microseconds.
    pub(crate) us_per_req: Option<f64>,
    /// The load generator's CPU time per request, microseconds: on two shared cores, what it
    /// spends more per request is taken from the server.
    pub(crate) load_us_per_req: Option<f64>,
    /// TCP segments the machine sent per request (each once: over loopback they are also the
    /// segments received): a request and its response are two; the rest are ACKs on their own.
    pub(crate) tcp_segments_per_req: Option<f64>,
    /// Of those, delayed ACKs per request: sent when a segment had waited for an answer to ride
    /// on (about 40 ms or more) and none came.
    pub(crate) delayed_acks_per_req: Option<f64>,
    /// Handshakes dropped because a listener's accept queue was full, per run: each waits a
    /// second or more for its retry, its connection idle meanwhile.
    pub(crate) listen_overflows_per_run: Option<f64>,
    pub(crate) cores: Cores,
    /// Share of cache reads Redis answered; `None` when the path read no cache.
    pub(crate) hit_rate: Option<f64>,
    /// The share of cache reads answered from the server's memory (a part of `hit_rate`).
    pub(crate) memory_rate: Option<f64>,
    pub(crate) cache_errors: Option<u64>,
    /// Most PostgreSQL connections in the server's pool, sampled every 0.5 s.
    pub(crate) pg_pool_peak: Option<u64>,
    /// Most resident memory of the server (tree), sampled every 0.5 s, MiB.
    pub(crate) rss_peak_mib: Option<f64>,
}

/// One path to measure: what drives its load and what to watch meanwhile.
pub(crate) struct Subject<'a> {
    pub(crate) id: &'a str,
    pub(crate) label: &'a str,
    pub(crate) load: &'a Load,
    pub(crate) watch: &'a Watch,
}

impl<'a> Subject<'a> {
    pub(crate) fn new(id: &'a str, label: &'a str, load: &'a Load, watch: &'a Watch) -> Self {
        Self {
            id,
            label,
            load,
            watch,
        }
    }
}

/// What is counted for one path while its runs are taken: CPU ticks by party (see
/// `Bench::cpu`) and seconds, over its own runs only.
struct Tally {
    runs: Vec<Run>,
    cpu: [u64; 5],
    /// The machine's TCP counters (`procs::tcp_counters`) over the runs; `None` if unreadable.
    tcp: Option<[u64; 3]>,
    seconds: f64,
    cache_before: Option<[u64; 6]>,
    sampler: Sampler,
}

/// The fixed parts of every measurement: durations, tools, the processes to account CPU to.
#[derive(Debug)]
pub(crate) struct Bench {
    pub(crate) threads: u32,
    pub(crate) duration: u64,
    pub(crate) warmup: u64,
    pub(crate) repeats: u32,
    pub(crate) lua: PathBuf,
    pub(crate) work: PathBuf,
    pub(crate) postmaster: u32,
    pub(crate) redis: u32,
    /// libpq arguments for pgbench: host, port, user, database.
    pub(crate) pg_args: Vec<String>,
    pub(crate) http: reqwest::Client,
    pub(crate) hz: f64,
    runs: AtomicU64,
}

impl Bench {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        threads: u32,
        duration: u64,
        warmup: u64,
        repeats: u32,
        lua: PathBuf,
        work: PathBuf,
        postmaster: u32,
        redis: u32,
        pg_args: Vec<String>,
    ) -> Self {
        Self {
            threads,
            duration,
            warmup,
            repeats,
            lua,
            work,
            postmaster,
            redis,
            pg_args,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("an HTTP client"),
            hz: procs::clock_ticks(),
            runs: AtomicU64::new(0),
        }
    }

    /// Measures one path: a warm-up run, then `repeats` runs of `duration` seconds, each with its
    /// own slice of distinct keys. With `strict`, fails if any request of a measured run failed.
    pub(crate) async fn measure(
        &self,
        id: &str,
        label: &str,
        load: &Load,
        watch: &Watch,
        strict: bool,
        repeats: u32,
    ) -> Result<Measurement> {
        let [m] = self
            .measure_in_turns([Subject::new(id, label, load, watch)], strict, repeats)
            .await?;
        Ok(m)
    }

    /// Measures paths in turns: the warm-up of each, then the first run of each, the second of
    /// each, and so on. A path and its ceiling measured this way share whatever the machine does
    /// meanwhile (on a shared host the same code's rate moved by two fifths within half an hour),
    /// and each run has a neighbour of the other to be divided by. Each path's CPU figures count
    /// its own runs only.
    pub(crate) async fn measure_in_turns<const N: usize>(
        &self,
        subjects: [Subject<'_>; N],
        strict: bool,
        repeats: u32,
    ) -> Result<[Measurement; N]> {
        for s in &subjects {
            eprintln!(
                "==> {}: {}s warm-up + {repeats} x {}s, {} connections{}",
                s.label,
                self.warmup,
                self.duration,
                s.load.connections(),
                if N > 1 { ", in turns" } else { "" }
            );
            self.run(s.load, 0, repeats + 1, self.warmup)
                .await
                .with_context(|| format!("{}: warm-up", s.label))?;
        }
        let mut tallies = Vec::with_capacity(N);
        for s in &subjects {
            tallies.push(Tally {
                runs: Vec::new(),
                cpu: [0; 5],
                tcp: Some([0; 3]),
                seconds: 0.0,
                cache_before: self.cache_counts(s.watch).await,
                sampler: Sampler::start(self, s.watch),
            });
        }
        for slice in 1..=repeats {
            for (s, tally) in subjects.iter().zip(&mut tallies) {
                let cpu_before = self.cpu(s.watch);
                let tcp_before = procs::tcp_counters();
                let started = Instant::now();
                let run = self
                    .run(s.load, slice, repeats + 1, self.duration)
                    .await
                    .with_context(|| format!("{}: run {slice}", s.label))?;
                tally.seconds += started.elapsed().as_secs_f64();
                let cpu_after = self.cpu(s.watch);
                tally.tcp = match (tally.tcp, tcp_before, procs::tcp_counters()) {
                    (Some(sum), Some(before), Some(after)) => {
                        Some([0, 1, 2].map(|i| sum[i] + after[i].saturating_sub(before[i])))
                    }
                    _ => None,
                };
                for (sum, (after, before)) in
                    tally.cpu.iter_mut().zip(cpu_after.iter().zip(cpu_before))
                {
                    *sum += after.saturating_sub(before);
                }
                eprintln!(
                    "    {} run {slice}: {:.0} req/s, p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, {} errors {:?}",
                    s.id,
                    run.rps,
                    run.p50_ms,
                    run.p99_ms,
                    run.p999_ms,
                    run.error_count(),
                    run.errors
                );
                if let Some(pid) = s.watch.server
                    && !Path::new(&format!("/proc/{pid}")).exists()
                {
                    bail!("{}: the server (pid {pid}) exited during the run", s.label);
                }
                tally.runs.push(run);
            }
        }
        let mut measurements = Vec::with_capacity(N);
        for (s, tally) in subjects.iter().zip(tallies) {
            measurements.push(self.summarise(s, tally, strict).await?);
        }
        measurements
            .try_into()
            .map_err(|_| anyhow::anyhow!("one measurement per path"))
    }

    /// A path of the paths table and its ceiling, in turns; any failed request fails both.
    pub(crate) async fn beside_ceiling(
        &self,
        path: Subject<'_>,
        ceiling: Subject<'_>,
    ) -> Result<(Measurement, Measurement)> {
        let [m, c] = self
            .measure_in_turns([path, ceiling], true, self.repeats)
            .await?;
        Ok((m, c))
    }

    /// A path's measurement from its runs and what was counted around them.
    async fn summarise(&self, s: &Subject<'_>, t: Tally, strict: bool) -> Result<Measurement> {
        let (rss_peak, pool_peak) = t.sampler.stop().await;
        let cache_after = self.cache_counts(s.watch).await;
        let runs = t.runs;
        let requests: u64 = runs.iter().map(|r| r.requests).sum();
        let errors: u64 = runs.iter().map(Run::error_count).sum();
        let per_s = |i: usize| t.cpu[i] as f64 / self.hz / t.seconds;
        let (server, postgres, redis, load_gen, all) =
            (per_s(0), per_s(1), per_s(2), per_s(3), per_s(4));
        let cores = Cores {
            server,
            postgres,
            redis,
            load: load_gen,
            other: (all - server - postgres - redis - load_gen).max(0.0),
        };
        let us_per_req = s
            .watch
            .server
            .filter(|_| requests > 0)
            .map(|_| t.cpu[0] as f64 / self.hz * 1e6 / requests as f64);
        let load_us_per_req =
            (requests > 0).then(|| t.cpu[3] as f64 / self.hz * 1e6 / requests as f64);
        let per_req = |i: usize| {
            t.tcp
                .filter(|_| requests > 0)
                .map(|tcp| tcp[i] as f64 / requests as f64)
        };
        let (hit_rate, memory_rate, cache_errors) = match (t.cache_before, cache_after) {
            (Some(b), Some(a)) => {
                let d: Vec<u64> = (0..6).map(|i| a[i].saturating_sub(b[i])).collect();
                let reads: u64 = d[..5].iter().sum();
                let share = |n: u64| (reads > 0).then(|| n as f64 / reads as f64);
                (share(d[0] + d[1]), share(d[0]), Some(d[5]))
            }
            _ => (None, None, None),
        };
        let pick = |f: fn(&Run) -> f64| median(&runs.iter().map(f).collect::<Vec<_>>());
        let rates: Vec<f64> = runs.iter().map(|r| r.rps).collect();
        let m = Measurement {
            id: s.id.to_owned(),
            label: s.label.to_owned(),
            connections: s.load.connections(),
            rps: median(&rates),
            rps_min: rates.iter().copied().fold(f64::INFINITY, f64::min),
            rps_max: rates.iter().copied().fold(0.0, f64::max),
            p50_ms: pick(|r| r.p50_ms),
            p99_ms: pick(|r| r.p99_ms),
            p999_ms: pick(|r| r.p999_ms),
            requests,
            errors,
            us_per_req,
            load_us_per_req,
            tcp_segments_per_req: per_req(0),
            delayed_acks_per_req: per_req(1),
            listen_overflows_per_run: t
                .tcp
                .filter(|_| !runs.is_empty())
                .map(|tcp| tcp[2] as f64 / runs.len() as f64),
            cores,
            hit_rate,
            memory_rate,
            cache_errors,
            pg_pool_peak: s.watch.metrics.as_ref().map(|_| pool_peak),
            rss_peak_mib: s.watch.server.map(|_| rss_peak as f64 / 1024.0),
            runs,
        };
        if strict && errors > 0 {
            bail!(
                "{}: {errors} requests failed (non-2xx answers or socket errors)",
                s.label
            );
        }
        Ok(m)
    }

    /// CPU ticks so far: server tree, PostgreSQL, Redis, load generators (this process's reaped
    /// children: wrk and pgbench are the only ones reaped while measuring), the machine.
    fn cpu(&self, watch: &Watch) -> [u64; 5] {
        let me = std::process::id();
        let reaped = procs::ticks(me, true) - procs::ticks(me, false);
        [
            watch.server.map_or(0, tree_ticks),
            tree_ticks(self.postmaster),
            ticks(self.redis, false),
            reaped,
            machine_ticks(),
        ]
    }

    /// `[memory_hit, hit, miss, shared, bypass, error]` from the userstack server's `/metrics`.
    async fn cache_counts(&self, watch: &Watch) -> Option<[u64; 6]> {
        let text = self.metrics_text(watch).await?;
        let mut out = [0; 6];
        for (i, result) in ["memory_hit", "hit", "miss", "shared", "bypass", "error"]
            .iter()
            .enumerate()
        {
            out[i] = metric(
                &text,
                &format!("userstack_cache_operations_total{{result=\"{result}\"}}"),
            )
            .unwrap_or(0.0) as u64;
        }
        Some(out)
    }

    async fn metrics_text(&self, watch: &Watch) -> Option<String> {
        let url = watch.metrics.as_ref()?;
        self.http.get(url).send().await.ok()?.text().await.ok()
    }

    /// One run of the load generator for `seconds`, using key slice `slice` of `slices`.
    pub(crate) async fn run(
        &self,
        load: &Load,
        slice: u32,
        slices: u32,
        seconds: u64,
    ) -> Result<Run> {
        let n = self.runs.fetch_add(1, Ordering::Relaxed);
        match load {
            Load::Wrk {
                url,
                mode,
                modulus,
                connections,
            } => {
                let out = self.work.join(format!("wrk-{n}.json"));
                let offset = modulus / u64::from(slices) * u64::from(slice);
                let threads = self.threads.min(*connections);
                // Long enough that a slow answer under 10 000 connections is a latency, not an error.
                let timeout = if *connections > 1000 { "30s" } else { "10s" };
                let output = Command::new("wrk")
                    .env("WRK_OUT", &out)
                    .args(["-t", &threads.to_string(), "-c", &connections.to_string()])
                    .args(["-d", &format!("{seconds}s"), "--timeout", timeout, "-s"])
                    .arg(&self.lua)
                    .arg(url)
                    .args(["--", mode, &threads.to_string(), &modulus.to_string()])
                    .args([offset.to_string(), format!("{}-{n}", std::process::id())])
                    .output()
                    .await
                    .context("run wrk (Debian: apt-get install wrk)")?;
                if !output.status.success() {
                    bail!(
                        "wrk failed ({}): {}{}",
                        output.status,
                        String::from_utf8_lossy(&output.stdout),
                        String::from_utf8_lossy(&output.stderr)
                    );
                }
                let text = std::fs::read_to_string(&out).with_context(|| {
                    format!(
                        "wrk wrote no result: {}",
                        String::from_utf8_lossy(&output.stderr)
                    )
                })?;
                let _ = std::fs::remove_file(&out);
                let w: WrkResult = serde_json::from_str(&text).context("parse wrk's result")?;
                let ms = |us: f64| us / 1000.0;
                let seconds = w.duration_us as f64 / 1e6;
                Ok(Run {
                    seconds,
                    requests: w.requests,
                    rps: w.requests as f64 / seconds,
                    p50_ms: ms(w.latency_us["p50"]),
                    p90_ms: ms(w.latency_us["p90"]),
                    p99_ms: ms(w.latency_us["p99"]),
                    p999_ms: ms(w.latency_us["p99.9"]),
                    max_ms: ms(w.latency_us["max"]),
                    errors: w.errors.into_iter().filter(|(_, v)| *v > 0).collect(),
                })
            }
            Load::Pgbench {
                script,
                clients,
                vars,
            } => self.pgbench(n, script, *clients, vars, seconds).await,
        }
    }

    async fn pgbench(
        &self,
        n: u64,
        script: &Path,
        clients: u32,
        vars: &[(String, String)],
        seconds: u64,
    ) -> Result<Run> {
        let prefix = self.work.join(format!("pgbench-{n}"));
        let mut cmd = Command::new("pgbench");
        cmd.args(["--no-vacuum", "--protocol=prepared", "--log"])
            .arg(format!("--log-prefix={}", prefix.display()))
            .args([
                "-c",
                &clients.to_string(),
                "-j",
                &self.threads.min(clients).to_string(),
            ])
            .args(["-T", &seconds.to_string(), "-f"])
            .arg(script);
        for (k, v) in vars {
            cmd.args(["-D", &format!("{k}={v}")]);
        }
        cmd.args(&self.pg_args).current_dir(&self.work);
        let output = cmd
            .output()
            .await
            .context("run pgbench (Debian: apt-get install postgresql-contrib)")?;
        let stdout = String::from_utf8_lossy(&output.stdout);
        if !output.status.success() {
            bail!(
                "pgbench failed ({}): {stdout}{}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            );
        }
        // One line per transaction: client, number, latency in us, script, epoch s, epoch us.
        let mut latencies = Vec::new();
        let name = prefix
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        for entry in std::fs::read_dir(&self.work)?.flatten() {
            if entry
                .file_name()
                .to_string_lossy()
                .starts_with(&format!("{name}."))
            {
                let text = std::fs::read_to_string(entry.path())?;
                latencies.extend(
                    text.lines()
                        .filter_map(|l| l.split_whitespace().nth(2)?.parse::<u64>().ok()),
                );
                std::fs::remove_file(entry.path())?;
            }
        }
        latencies.sort_unstable();
        let field = |key: &str| {
            stdout
                .lines()
                .find_map(|l| l.trim().strip_prefix(key))
                .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        };
        let rps = field("tps = ").context("no 'tps =' line in pgbench's output")?;
        let failed = field("number of failed transactions: ").unwrap_or(0.0) as u64;
        let ms = |p: f64| percentile(&latencies, p) as f64 / 1000.0;
        let mut errors = BTreeMap::new();
        if failed > 0 {
            errors.insert("failed".to_owned(), failed);
        }
        Ok(Run {
            seconds: seconds as f64,
            requests: latencies.len() as u64,
            rps,
            p50_ms: ms(50.0),
            p90_ms: ms(90.0),
            p99_ms: ms(99.0),
            p999_ms: ms(99.9),
            max_ms: latencies.last().copied().unwrap_or(0) as f64 / 1000.0,
            errors,
        })
    }
}

#[derive(Debug, Deserialize)]
struct WrkResult {
    requests: u64,
    duration_us: u64,
    errors: BTreeMap<String, u64>,
    latency_us: BTreeMap<String, f64>,
}

/// The value of the sample line starting with `prefix` in Prometheus/OpenMetrics text.
pub(crate) fn metric(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

/// Samples, every 0.5 s, the server's resident memory and its PostgreSQL pool; keeps the maxima.
struct Sampler {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<(u64, u64)>,
}

impl Sampler {
    fn start(bench: &Bench, watch: &Watch) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let (server, metrics, http) = (watch.server, watch.metrics.clone(), bench.http.clone());
        let flag = stop.clone();
        let task = tokio::spawn(async move {
            let (mut rss, mut pool) = (0, 0);
            loop {
                if let Some(pid) = server {
                    rss = rss.max(tree_rss_kib(pid));
                }
                if let Some(url) = &metrics
                    && let Ok(resp) = http.get(url).send().await
                    && let Ok(text) = resp.text().await
                {
                    let p = metric(&text, "userstack_pool_connections{pool=\"postgres\"}");
                    pool = pool.max(p.unwrap_or(0.0) as u64);
                }
                if flag.load(Ordering::Relaxed) {
                    return (rss, pool);
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        });
        Self { stop, task }
    }

    async fn stop(self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap_or((0, 0))
    }
}
