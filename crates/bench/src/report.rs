//! The tables the benchmark prints, and the JSON of every figure behind them.

use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;

use crate::load::{Measurement, Run};
use crate::stats::median;

/// A path of the server and, where it has one, the ceiling it is compared with.
#[derive(Debug, Serialize)]
pub(crate) struct PathRow {
    pub(crate) measurement: Measurement,
    pub(crate) ceiling: Option<Measurement>,
}

impl PathRow {
    /// The path's rate over its ceiling's: the median over the runs of each run's rate divided by
    /// the rate of the ceiling's run taken right after it (the two are measured in turns, see
    /// `Bench::measure_in_turns`).
    pub(crate) fn ratio(&self) -> Option<f64> {
        self.run_ratios().map(|ratios| median(&ratios))
    }

    /// The lowest and highest of the runs' ratios behind [`PathRow::ratio`]: how far one pair
    /// of runs can be from the median on this machine at this moment.
    pub(crate) fn ratio_range(&self) -> Option<(f64, f64)> {
        Some(low_high(&self.run_ratios()?))
    }

    /// Each run's rate divided by the rate of the ceiling's run taken right after it.
    fn run_ratios(&self) -> Option<Vec<f64>> {
        Some(paired_ratios(&self.measurement, self.ceiling.as_ref()?))
    }
}

#[derive(Debug, Serialize)]
pub(crate) struct SweepRow {
    pub(crate) path: &'static str,
    pub(crate) measurement: Measurement,
    /// A run of the same path at the sweep's first step, taken in turns with this one (none for
    /// the first step itself): what this step's rate is divided by.
    pub(crate) reference: Option<Measurement>,
}

impl SweepRow {
    /// This step's rate over the first step's, run beside it: the median over the pairs of runs
    /// taken in turns; 1 for the first step.
    pub(crate) fn ratio(&self) -> f64 {
        self.reference
            .as_ref()
            .map_or(1.0, |r| median(&paired_ratios(&self.measurement, r)))
    }

    /// The lowest and highest of the pairs' ratios behind [`SweepRow::ratio`], when there are
    /// several pairs.
    pub(crate) fn ratio_range(&self) -> Option<(f64, f64)> {
        let ratios = paired_ratios(&self.measurement, self.reference.as_ref()?);
        (ratios.len() > 1).then(|| low_high(&ratios))
    }
}

fn low_high(values: &[f64]) -> (f64, f64) {
    let low = values.iter().copied().fold(f64::INFINITY, f64::min);
    let high = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    (low, high)
}

/// Each of `runs`' rates divided by the rate of `beside`'s run taken right after it.
fn paired_ratios(runs: &Measurement, beside: &Measurement) -> Vec<f64> {
    let pairs = runs.runs.iter().zip(&beside.runs);
    pairs.map(|(m, b)| m.rps / b.rps).collect()
}

/// The sweep's rows: userstack's two paths, hyper alone sending each path's bytes (the floor of a
/// hyper server), and nginx serving them as a static file (the ceiling of a server with its
/// answer ready).
pub(crate) const SWEEP_ROOT: &str = "GET /";
pub(crate) const SWEEP_WARM: &str = "GET /users warm";
pub(crate) const SWEEP_FLOOR: &str = "hyper alone, GET /";
pub(crate) const SWEEP_FLOOR_WARM: &str = "hyper alone, page";
pub(crate) const SWEEP_NGINX_ROOT: &str = "nginx, GET / file";
pub(crate) const SWEEP_NGINX_WARM: &str = "nginx, page file";

/// The nginx row that is the ceiling of one of our sweep rows or of hyper alone's.
fn sweep_ceiling(path: &str) -> Option<&'static str> {
    match path {
        SWEEP_ROOT | SWEEP_FLOOR => Some(SWEEP_NGINX_ROOT),
        SWEEP_WARM | SWEEP_FLOOR_WARM => Some(SWEEP_NGINX_WARM),
        _ => None,
    }
}

#[derive(Debug, Serialize)]
pub(crate) struct SoakPoint {
    pub(crate) requests: u64,
    pub(crate) seconds: f64,
    pub(crate) rss_mib: f64,
    pub(crate) errors: u64,
}

#[derive(Debug, Serialize)]
pub(crate) struct SeedRow {
    pub(crate) path: &'static str,
    pub(crate) runner: &'static str,
    pub(crate) measurement: Measurement,
}

/// Everything one run measured.
#[derive(Debug, Serialize)]
pub(crate) struct Report {
    pub(crate) date: String,
    pub(crate) plan: String,
    pub(crate) binary: String,
    pub(crate) revision: String,
    pub(crate) machine: String,
    pub(crate) paths: Vec<PathRow>,
    /// Not ours: hyper alone sending a path's bytes, beside the same ceiling as the path.
    pub(crate) floors: Vec<PathRow>,
    /// The PostgreSQL path by table size (rows).
    pub(crate) sizes: Vec<(u64, Measurement)>,
    pub(crate) sweep: Vec<SweepRow>,
    pub(crate) soak: Vec<SoakPoint>,
    pub(crate) seed: Vec<SeedRow>,
    pub(crate) main_hwm_mib: f64,
    pub(crate) bypass_hwm_mib: f64,
    pub(crate) binary_mb: f64,
    pub(crate) table_size: String,
    pub(crate) load_average_end: String,
    pub(crate) elapsed_s: u64,
}

impl Report {
    pub(crate) fn new(plan: &str, bin: &Path, root: &Path) -> Self {
        let sh = |cmd: &str| {
            std::process::Command::new("sh")
                .args(["-c", cmd])
                .current_dir(root)
                .output()
                .ok()
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
                .unwrap_or_default()
        };
        let mut revision = sh("git rev-parse --short HEAD");
        if !sh("git status --porcelain -- crates Cargo.toml Cargo.lock").is_empty() {
            revision.push_str(" + uncommitted changes in crates/");
        }
        Self {
            date: sh("date -u +%Y-%m-%dT%H:%MZ"),
            plan: plan.to_owned(),
            binary: bin.display().to_string(),
            revision,
            machine: sh(
                "echo \"$(nproc) CPUs ($(lscpu | sed -n 's/^Model name: *//p' | head -n 1)), \
                 $(awk '/^MemTotal:/ {printf \"%.1f GiB\", $2 / 1048576}' /proc/meminfo) RAM; \
                 load average at the start: $(cut -d' ' -f1-3 /proc/loadavg)\"",
            ),
            paths: Vec::new(),
            floors: Vec::new(),
            sizes: Vec::new(),
            sweep: Vec::new(),
            soak: Vec::new(),
            seed: Vec::new(),
            main_hwm_mib: 0.0,
            bypass_hwm_mib: 0.0,
            binary_mb: std::fs::metadata(bin).map_or(0.0, |m| m.len() as f64 / 1e6),
            table_size: String::new(),
            load_average_end: String::new(),
            elapsed_s: 0,
        }
    }

    pub(crate) fn path(&mut self, measurement: Measurement, ceiling: Option<Measurement>) {
        self.paths.push(PathRow {
            measurement,
            ceiling,
        });
    }

    /// A floor (hyper alone) measured in turns with `ceiling`, as a path is.
    pub(crate) fn floor(&mut self, measurement: Measurement, ceiling: Measurement) {
        self.floors.push(PathRow {
            measurement,
            ceiling: Some(ceiling),
        });
    }

    /// Failed requests to userstack, to the ceilings and to hyper alone (not in the concurrency sweep nor to the
    /// Flask baseline, whose failures are their figures).
    pub(crate) fn failed_requests(&self) -> u64 {
        let paths = self
            .paths
            .iter()
            .map(|p| p.measurement.errors + p.ceiling.as_ref().map_or(0, |c| c.errors));
        // A floor's ceiling is its path's, counted there.
        let floors = self.floors.iter().map(|f| f.measurement.errors);
        let sizes = self.sizes.iter().map(|(_, m)| m.errors);
        let soak = self.soak.iter().map(|s| s.errors);
        let seed = self
            .seed
            .iter()
            .filter(|s| s.runner == "userstack")
            .map(|s| s.measurement.errors);
        paths
            .chain(floors)
            .chain(sizes)
            .chain(soak)
            .chain(seed)
            .sum()
    }

    pub(crate) fn render(&mut self) -> String {
        self.load_average_end = std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ");
        let mut o = String::new();
        let w = &mut o;
        let _ = writeln!(w, "userstack benchmark, {}", self.date);
        let _ = writeln!(w, "binary: {} (checkout at {})", self.binary, self.revision);
        let _ = writeln!(
            w,
            "machine: {}; at the end: {}",
            self.machine, self.load_average_end
        );
        let _ = writeln!(w, "{}", self.plan);
        let _ = writeln!(
            w,
            "wrk, pgbench, the servers, PostgreSQL and Redis share the machine. The server: RUST_LOG=warn,\n\
             DATABASE_POOL_SIZE=16, CACHE_TIMEOUT_MS=1000, MAX_CONNECTIONS and MAX_IN_FLIGHT = the sweep's largest step + 100,\n\
             otherwise defaults. PostgreSQL: the test support's settings (fsync,\n\
             synchronous_commit and full_page_writes off: CPU is measured, not the disk).\n"
        );

        let _ = writeln!(w, "## Paths and their ceilings\n");
        table_header(
            w,
            &[
                ("path", 52, false),
                ("req/s", 7, true),
                ("ceiling", 7, true),
                ("x ceiling", 9, true),
                ("x range", 9, false),
                ("p50 ms", 6, true),
                ("p99 ms", 6, true),
                ("p99.9 ms", 8, true),
                ("req/s range", 11, false),
                ("hits", 4, true),
                ("mem", 4, true),
                ("c.err", 5, true),
                ("PG", 3, true),
                ("us/req", 6, true),
                ("cores srv/pg/redis/load/+", 25, false),
            ],
        );
        let floors = self.floors.iter().map(|row| ("(floor) ", row));
        for (prefix, row) in self.paths.iter().map(|row| ("", row)).chain(floors) {
            let m = &row.measurement;
            let (ceiling, ratio, range) = match (&row.ceiling, row.ratio(), row.ratio_range()) {
                (Some(c), Some(r), Some((low, high))) => (
                    format!("{:.0}", c.rps),
                    format!("{r:.2}"),
                    format!("{low:.2}-{high:.2}"),
                ),
                _ => ("-".into(), "-".into(), "-".into()),
            };
            path_line(
                w,
                &format!("{prefix}{}", m.label),
                m,
                &ceiling,
                &ratio,
                &range,
            );
        }
        // A floor's ceiling is its path's, printed with the path's.
        for c in self.paths.iter().filter_map(|row| row.ceiling.as_ref()) {
            path_line(w, &format!("(ceiling) {}", c.label), c, "-", "-", "-");
        }
        let _ = writeln!(
            w,
            "\nceiling: the rate of the ceiling row below, measured in turns with the path (a run of the path,\n\
             a run of the ceiling, and so on). x ceiling: the median of each run's req/s / its ceiling run's;\n\
             x range: the lowest and highest of those ratios.\n\
             Ceilings: nginx ({} workers, keep-alive, no access log, sendfile) serving the warm page's\n\
             bytes as a file; pgbench with 16 connections (the server's pool), prepared, running the\n\
             server's page query, one page per statement, and for POST one single-row INSERT per create\n\
             (the server batches the pages, users and creates asked for together). req/s range: min-max\n\
             over the runs. hits: share of cache reads answered by a cache; mem: of those, from the\n\
             server's memory (the rest: Redis). c.err: failed Redis calls. PG: most connections in the\n\
             server's pool.\n\
             (floor) hyper alone: crates/bench/src/bin/hyper-floor.rs sending the warm page's bytes from\n\
             memory with hyper's HTTP/1 connection only (no router, middleware or timeouts), in turns\n\
             with the path and nginx: what any server on hyper pays for this page.\n\
             us/req: server CPU per request (for a ceiling: nginx's). cores: CPU of the server, PostgreSQL,\n\
             Redis, the load generator (wrk or pgbench), and everything else.",
            std::thread::available_parallelism().map_or(2, |n| n.get())
        );

        let _ = writeln!(
            w,
            "\n## The PostgreSQL path by table size (cache bypassed, distinct after= per request)\n"
        );
        table_header(
            w,
            &[
                ("rows", 9, true),
                ("req/s", 7, true),
                ("p50 ms", 6, true),
                ("p99 ms", 6, true),
                ("p99.9 ms", 8, true),
                ("x p50 of smallest", 17, true),
                ("us/req", 6, true),
                ("errors", 6, true),
            ],
        );
        let base = self.sizes.first().map_or(f64::NAN, |(_, m)| m.p50_ms);
        for (rows, m) in &self.sizes {
            let _ = writeln!(
                w,
                "| {rows:>9} | {:>7.0} | {:>6.2} | {:>6.2} | {:>8.2} | {:>17.2} | {:>6} | {:>6} |",
                m.rps,
                m.p50_ms,
                m.p99_ms,
                m.p999_ms,
                m.p50_ms / base,
                opt(m.us_per_req, 0),
                m.errors
            );
        }

        let _ = writeln!(
            w,
            "\n## Concurrency sweep (keep-alive connections, one wrk process)\n"
        );
        table_header(
            w,
            &[
                ("path", 18, false),
                ("conns", 6, true),
                ("req/s", 7, true),
                ("x 64 conns", 10, true),
                ("p50 ms", 7, true),
                ("p99 ms", 7, true),
                ("p99.9 ms", 8, true),
                ("errors", 6, true),
                ("by kind", 16, false),
                ("mem", 4, true),
                ("c.err", 5, true),
                ("server RSS MiB", 14, true),
                ("us/req srv/wrk", 14, true),
                ("TCP seg/dACK", 12, true),
                ("ovfl/run", 8, true),
            ],
        );
        for s in &self.sweep {
            let m = &s.measurement;
            let _ = writeln!(
                w,
                "| {:<18} | {:>6} | {:>7.0} | {:>10.2} | {:>7.2} | {:>7.2} | {:>8.2} | {:>6} | {:<16} | {:>4} | {:>5} | {:>14} | {:>14} | {:>12} | {:>8} |",
                s.path,
                m.connections,
                m.rps,
                s.ratio(),
                m.p50_ms,
                m.p99_ms,
                m.p999_ms,
                m.errors,
                error_kinds(&m.runs),
                percent(m.memory_rate),
                count(m.cache_errors),
                opt(m.rss_peak_mib, 1),
                cpu_split(m),
                tcp_split(m),
                opt(m.listen_overflows_per_run, 0)
            );
        }
        let _ = writeln!(
            w,
            "x 64 conns: req/s relative to a run of the same path at the sweep's first (smallest) step,\n\
             measured in turns with this step (warm-ups, then that run, then this step's); at the largest\n\
             step, the goal's, the median of --repeats such pairs. RSS: peak, sampled every 0.5 s.\n\
             by kind: wrk's (status: a non-2xx answer; timeout: no answer within wrk's timeout, 10 s, or\n\
             30 s above 1000 connections; connect, read, write: socket errors). mem: share of cache reads\n\
             answered from the server's memory. c.err: failed Redis calls.\n\
             hyper alone: crates/bench/src/bin/hyper-floor.rs, hyper's HTTP/1 connection sending GET /'s\n\
             bytes or the warm page's from memory (no router, middleware or timeouts), same allocator:\n\
             the floor of a hyper server.\n\
             nginx, GET / file and page file: the nginx above serving GET /'s bytes and the warm page's\n\
             bytes as files: what many connections cost a server with its answer ready, on this machine.\n\
             RSS: of the process and its children (nginx's workers).\n\
             us/req srv/wrk: CPU time per request of the server (nginx: its workers) and of wrk. They\n\
             share two cores: what either spends more per request at a step is taken from the rate.\n\
             TCP seg/dACK: TCP segments the machine sent per request, and of those the delayed ACKs\n\
             (sent after a segment waited about 40 ms or more for an answer to carry the ACK): a\n\
             request and its response are 2; each further segment is an ACK on its own, which the\n\
             kernels of both sides pay for. ovfl/run: handshakes dropped per run because the server's\n\
             accept queue (its listen backlog) was full; each client retries a second or more later\n\
             (each run opens its connections anew)."
        );

        let _ = writeln!(
            w,
            "\n## Memory over time (mixed traffic, see bench/wrk.lua 'mixed')\n"
        );
        table_header(
            w,
            &[
                ("requests", 10, true),
                ("seconds", 7, true),
                ("RSS MiB", 7, true),
                ("errors", 6, true),
            ],
        );
        for p in &self.soak {
            let _ = writeln!(
                w,
                "| {:>10} | {:>7.0} | {:>7.1} | {:>6} |",
                p.requests, p.seconds, p.rss_mib, p.errors
            );
        }

        if !self.seed.is_empty() {
            let _ = writeln!(
                w,
                "\n## The seed's Flask app beside us (100 users; same PostgreSQL and Redis)\n"
            );
            table_header(
                w,
                &[
                    ("server", 17, false),
                    ("path", 6, false),
                    ("req/s", 7, true),
                    ("userstack x", 11, true),
                    ("p50 ms", 7, true),
                    ("p99 ms", 7, true),
                    ("errors", 6, true),
                    ("us/req", 6, true),
                    ("RSS MiB", 7, true),
                ],
            );
            for s in &self.seed {
                let m = &s.measurement;
                let ours = self
                    .seed
                    .iter()
                    .find(|x| x.runner == "userstack" && x.path == s.path)
                    .map_or(f64::NAN, |x| x.measurement.rps);
                let _ = writeln!(
                    w,
                    "| {:<17} | {:<6} | {:>7.0} | {:>11.1} | {:>7.2} | {:>7.2} | {:>6} | {:>6} | {:>7} |",
                    s.runner,
                    s.path,
                    m.rps,
                    ours / m.rps,
                    m.p50_ms,
                    m.p99_ms,
                    m.errors,
                    opt(m.us_per_req, 0),
                    opt(m.rss_peak_mib, 1)
                );
            }
            let _ = writeln!(
                w,
                "userstack x: our req/s divided by this row's. The seed's /users is SELECT * on a new connection\n\
                 per request; ours is the cached page (the same 100 users)."
            );
        }

        let _ = writeln!(w, "\n## Goals (issue 13)\n");
        for line in self.goals() {
            let _ = writeln!(w, "- {line}");
        }
        let _ = writeln!(
            w,
            "\npeak RSS (VmHWM): {:.1} MiB main server, {:.1} MiB bypassing server; release binary {:.1} MB\n\
             users table at the end: {}\n\
             requests to userstack that failed: {}; wall time {} s",
            self.main_hwm_mib,
            self.bypass_hwm_mib,
            self.binary_mb,
            self.table_size,
            self.failed_requests(),
            self.elapsed_s
        );
        o
    }

    fn goals(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mark = |ok: bool| if ok { "met" } else { "NOT met" };
        // For the reference rows, which are not ours to meet.
        let would =
            |who: &str, ok: bool| format!("{who} would{} meet it", if ok { "" } else { " NOT" });
        let find = |id: &str| self.paths.iter().find(|p| p.measurement.id == id);
        if let Some(p) = find("get_users_warm")
            && let Some(r) = p.ratio()
        {
            let ok = r >= 0.8 && p.measurement.p99_ms <= 5.0;
            out.push(format!(
                "warm GET /users >= 0.8 x nginx, p99 <= 5 ms: {r:.2} x, p99 {:.2} ms: {}",
                p.measurement.p99_ms,
                mark(ok)
            ));
        }
        if let Some(f) = self.floors.first()
            && let Some(r) = f.ratio()
        {
            let ok = r >= 0.8 && f.measurement.p99_ms <= 5.0;
            out.push(format!(
                "hyper alone sending the same page: {r:.2} x nginx, p99 {:.2} ms: {}",
                f.measurement.p99_ms,
                would("hyper alone", ok)
            ));
        }
        if let Some(p) = self
            .paths
            .iter()
            .find(|p| p.measurement.id.starts_with("pg_path"))
            && let Some(r) = p.ratio()
        {
            let us = p.measurement.us_per_req.unwrap_or(f64::NAN);
            out.push(format!(
                "PostgreSQL path >= 0.7 x pgbench: {r:.2} x: {}; server CPU <= 50 us/req: {us:.0} us: {}",
                mark(r >= 0.7),
                mark(us <= 50.0)
            ));
        }
        if let Some(p) = find("post_users")
            && let Some(r) = p.ratio()
        {
            out.push(format!(
                "POST /users >= 0.7 x pgbench: {r:.2} x: {}",
                mark(r >= 0.7)
            ));
        }
        let sweep_last = |path: &str| self.sweep.iter().rfind(|s| s.path == path);
        for path in [
            SWEEP_ROOT,
            SWEEP_WARM,
            SWEEP_FLOOR,
            SWEEP_FLOOR_WARM,
            SWEEP_NGINX_ROOT,
            SWEEP_NGINX_WARM,
        ] {
            let first = self.sweep.iter().find(|s| s.path == path);
            if let (Some(first), Some(last)) = (first, sweep_last(path))
                && last.reference.is_some()
            {
                let (f, l) = (&first.measurement, &last.measurement);
                let r = last.ratio();
                let rate_met = l.errors == 0 && r >= 0.8;
                let pairs = last
                    .ratio_range()
                    .map(|(low, high)| format!(" ({low:.2}-{high:.2} over {} pairs)", l.runs.len()))
                    .unwrap_or_default();
                // What each request cost the two cores beside what it cost at the first step,
                // in the runs taken in turns: where the rate went.
                let cpu = last
                    .reference
                    .as_ref()
                    .map(|r| {
                        format!(
                            " [us/req srv/wrk {} vs {}; TCP seg/dACK {} vs {}]",
                            cpu_split(l),
                            cpu_split(r),
                            tcp_split(l),
                            tcp_split(r)
                        )
                    })
                    .unwrap_or_default();
                let rate = format!(
                    "{path} at {} connections: {} errors, {r:.2} x{pairs} the {}-connection rate (>= 0.8){cpu}",
                    l.connections, l.errors, f.connections
                );
                // hyper alone and nginx are not ours to meet: they show what the goal's rate
                // asks of any server on this machine (nginx's memory is in the table).
                out.push(match path {
                    SWEEP_NGINX_ROOT | SWEEP_NGINX_WARM => {
                        format!("{rate}: {}", would("nginx", rate_met))
                    }
                    _ => {
                        let rss = l.rss_peak_mib.unwrap_or(f64::NAN);
                        let (mb, small_enough) = memory_goal(rss);
                        let met = rate_met && small_enough;
                        let beside = sweep_ceiling(path)
                            .and_then(sweep_last)
                            .filter(|n| n.measurement.connections == l.connections)
                            .map(|n| {
                                format!(" ({:.2} x nginx's rate here)", l.rps / n.measurement.rps)
                            })
                            .unwrap_or_default();
                        let verdict = if matches!(path, SWEEP_FLOOR | SWEEP_FLOOR_WARM) {
                            would("hyper alone", met)
                        } else {
                            mark(met).to_string()
                        };
                        format!(
                            "{rate}, RSS {rss:.1} MiB = {mb:.1} MB (<= 100 MB){beside}: {verdict}"
                        )
                    }
                });
            }
        }
        if let (Some((s, first)), Some((l, last))) = (self.sizes.first(), self.sizes.last())
            && self.sizes.len() > 1
        {
            let r = last.p50_ms / first.p50_ms;
            out.push(format!(
                "PostgreSQL path p50 within 1.5 x from {s} to {l} rows: {r:.2} x: {}",
                mark(r <= 1.5)
            ));
        }
        let early = self.soak.iter().find(|p| p.requests >= 100_000);
        if let (Some(e), Some(last)) = (early, self.soak.last())
            && last.requests > e.requests
        {
            out.push(format!(
                "RSS after {} requests ({:.1} MiB) no higher than after {} ({:.1} MiB): {}",
                last.requests,
                last.rss_mib,
                e.requests,
                e.rss_mib,
                // Within 1 MiB: the allocator's page-level noise is not growth.
                mark(last.rss_mib <= e.rss_mib + 1.0)
            ));
        }
        out
    }
}

fn opt(v: Option<f64>, decimals: usize) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{v:.decimals$}"))
}

fn table_header(w: &mut String, columns: &[(&str, usize, bool)]) {
    let mut head = String::from("|");
    let mut sep = String::from("|");
    for (name, width, right) in columns {
        if *right {
            let _ = write!(head, " {name:>width$} |");
            let _ = write!(sep, "{}:|", "-".repeat(width + 1));
        } else {
            let _ = write!(head, " {name:<width$} |");
            let _ = write!(sep, "{}|", "-".repeat(width + 2));
        }
    }
    let _ = writeln!(w, "{head}\n{sep}");
}

/// CPU time per request of the server and of the load generator, in microseconds: `16/13`.
fn cpu_split(m: &Measurement) -> String {
    format!("{}/{}", opt(m.us_per_req, 0), opt(m.load_us_per_req, 0))
}

/// TCP segments and, of those, delayed ACKs per request: `3.46/0.37`.
fn tcp_split(m: &Measurement) -> String {
    format!(
        "{}/{}",
        opt(m.tcp_segments_per_req, 2),
        opt(m.delayed_acks_per_req, 2)
    )
}

/// A count, or `-` where it does not apply.
fn count(n: Option<u64>) -> String {
    n.map_or("-".into(), |n| n.to_string())
}

/// A share as a whole percentage, or `-` where it does not apply.
fn percent(share: Option<f64>) -> String {
    share.map_or("-".into(), |h| format!("{:.0}%", h * 100.0))
}

/// The memory goal at the sweep's largest step, 100 MB of resident memory: the issue writes
/// megabytes (10^6 bytes), the tables print MiB (2^20). The figure in MB, and whether it is met.
fn memory_goal(rss_mib: f64) -> (f64, bool) {
    let mb = rss_mib * 1.048_576;
    (mb, mb <= 100.0)
}

/// The failed requests of all runs by kind (`status 34, timeout 2`), or `-` when none failed.
fn error_kinds(runs: &[Run]) -> String {
    let mut kinds = std::collections::BTreeMap::<&str, u64>::new();
    for (kind, n) in runs.iter().flat_map(|r| &r.errors) {
        *kinds.entry(kind).or_default() += n;
    }
    if kinds.is_empty() {
        return "-".into();
    }
    kinds
        .iter()
        .map(|(kind, n)| format!("{kind} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn path_line(
    w: &mut String,
    label: &str,
    m: &Measurement,
    ceiling: &str,
    ratio: &str,
    range: &str,
) {
    let c = &m.cores;
    let hits = percent(m.hit_rate);
    let memory = percent(m.memory_rate);
    let _ = writeln!(
        w,
        "| {label:<52} | {:>7.0} | {ceiling:>7} | {ratio:>9} | {range:<9} | {:>6.2} | {:>6.2} | {:>8.2} | {:<11} | {hits:>4} | {memory:>4} | {:>5} | {:>3} | {:>6} | {:<25} |",
        m.rps,
        m.p50_ms,
        m.p99_ms,
        m.p999_ms,
        format!("{:.0}-{:.0}", m.rps_min, m.rps_max),
        count(m.cache_errors),
        count(m.pg_pool_peak),
        opt(m.us_per_req, 0),
        format!(
            "{:.2}/{:.2}/{:.2}/{:.2}/{:.2}",
            c.server, c.postgres, c.redis, c.load, c.other
        ),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(errors: &[(&str, u64)]) -> Run {
        Run {
            seconds: 1.0,
            requests: 100,
            rps: 100.0,
            p50_ms: 1.0,
            p90_ms: 1.0,
            p99_ms: 1.0,
            p999_ms: 1.0,
            max_ms: 1.0,
            errors: errors.iter().map(|(k, n)| (k.to_string(), *n)).collect(),
        }
    }

    #[test]
    fn the_memory_goal_is_read_in_megabytes() {
        let (mb, met) = memory_goal(96.6);
        assert!((mb - 101.29).abs() < 0.01, "{mb}");
        assert!(!met, "96.6 MiB is over 100 MB");
        assert!(memory_goal(95.3).1);
    }

    #[test]
    fn failed_requests_are_summed_over_the_runs_by_kind() {
        let runs = [
            run(&[("status", 30)]),
            run(&[]),
            run(&[("timeout", 2), ("status", 4)]),
        ];
        assert_eq!(error_kinds(&runs), "status 34, timeout 2");
        assert_eq!(error_kinds(&[run(&[]), run(&[])]), "-");
    }

    fn measured(rates: &[f64]) -> Measurement {
        let runs: Vec<Run> = rates.iter().map(|&rps| Run { rps, ..run(&[]) }).collect();
        Measurement {
            id: "path".into(),
            label: "path".into(),
            connections: 64,
            rps: median(rates),
            rps_min: 0.0,
            rps_max: 0.0,
            p50_ms: 1.0,
            p99_ms: 1.0,
            p999_ms: 1.0,
            requests: 0,
            errors: 0,
            us_per_req: None,
            load_us_per_req: None,
            tcp_segments_per_req: None,
            delayed_acks_per_req: None,
            listen_overflows_per_run: None,
            cores: Default::default(),
            hit_rate: None,
            memory_rate: None,
            cache_errors: None,
            pg_pool_peak: None,
            rss_peak_mib: None,
            runs,
        }
    }

    #[test]
    fn the_ratio_to_a_ceiling_divides_each_run_by_its_neighbour() {
        // Run by run the path is at 0.6, 0.4 and 0.625 of the ceiling: the ratio is the median
        // of those, not the quotient of the two sides' medians (80 / 160 = 0.5).
        let row = PathRow {
            measurement: measured(&[60.0, 80.0, 100.0]),
            ceiling: Some(measured(&[100.0, 200.0, 160.0])),
        };
        let ratio = row.ratio().unwrap();
        assert!((ratio - 0.6).abs() < 1e-9, "{ratio}");
        assert_eq!(row.ratio_range(), Some((0.4, 0.625)));
        let alone = PathRow {
            ceiling: None,
            ..row
        };
        assert_eq!(alone.ratio(), None);
        assert_eq!(alone.ratio_range(), None);
    }

    #[test]
    fn a_sweep_step_is_divided_by_the_run_beside_it() {
        let step = SweepRow {
            path: SWEEP_ROOT,
            measurement: measured(&[30_000.0]),
            // The sweep's first step, run minutes earlier, may have seen 60 000: not the divisor.
            reference: Some(measured(&[40_000.0])),
        };
        assert!((step.ratio() - 0.75).abs() < 1e-9, "{}", step.ratio());
        // Several pairs (the goal's step): the median of each run over its neighbour (0.5, 0.9,
        // 0.96), not the medians' ratio (36 000 / 50 000 = 0.72).
        let repeated = SweepRow {
            path: SWEEP_ROOT,
            measurement: measured(&[30_000.0, 36_000.0, 48_000.0]),
            reference: Some(measured(&[60_000.0, 40_000.0, 50_000.0])),
        };
        assert!(
            (repeated.ratio() - 0.9).abs() < 1e-9,
            "{}",
            repeated.ratio()
        );
        let first = SweepRow {
            reference: None,
            ..step
        };
        assert_eq!(first.ratio(), 1.0);
    }

    #[test]
    fn the_sweep_goals_read_ours_beside_nginx_at_the_same_step() {
        let step = |path, conns, rps: f64, reference: Option<f64>| {
            // CPU per request grows with the connections, the server's and wrk's alike.
            let at = |rps, conns| Measurement {
                connections: conns,
                rss_peak_mib: Some(50.0),
                us_per_req: Some(f64::from(conns).log2() * 2.0),
                load_us_per_req: Some(f64::from(conns).log2()),
                // Past a few thousand connections a request waits long enough for an ACK of
                // its own.
                tcp_segments_per_req: Some(if conns > 1000 { 3.5 } else { 2.0 }),
                delayed_acks_per_req: Some(if conns > 1000 { 0.37 } else { 0.0 }),
                listen_overflows_per_run: Some(0.0),
                ..measured(&[rps])
            };
            SweepRow {
                path,
                measurement: at(rps, conns),
                reference: reference.map(|r| at(r, 64)),
            }
        };
        let mut report = Report::new("test", Path::new("/nonexistent"), Path::new("/"));
        report.sweep = vec![
            step(SWEEP_ROOT, 64, 60_000.0, None),
            step(SWEEP_NGINX_ROOT, 64, 80_000.0, None),
            step(SWEEP_ROOT, 10_000, 42_000.0, Some(60_000.0)),
            step(SWEEP_NGINX_ROOT, 10_000, 40_000.0, Some(80_000.0)),
            step(SWEEP_FLOOR_WARM, 64, 90_000.0, None),
            step(SWEEP_NGINX_WARM, 64, 100_000.0, None),
            step(SWEEP_FLOOR_WARM, 10_000, 63_000.0, Some(90_000.0)),
            step(SWEEP_NGINX_WARM, 10_000, 45_000.0, Some(100_000.0)),
        ];
        let goals = report.goals();
        let line = |path: &str| {
            let prefix = format!("{path} at 10000 connections:");
            goals
                .iter()
                .find(|g| g.starts_with(&prefix))
                .cloned()
                .unwrap()
        };
        let ours = line(SWEEP_ROOT);
        assert!(ours.contains("0.70 x the 64-connection rate"), "{ours}");
        assert!(ours.contains("(1.05 x nginx's rate here)"), "{ours}");
        // The CPU per request at this step beside the run of the first step taken with it.
        assert!(
            ours.contains("[us/req srv/wrk 27/13 vs 12/6; TCP seg/dACK 3.50/0.37 vs 2.00/0.00]"),
            "{ours}"
        );
        let table = report.render();
        let row = table
            .lines()
            .find(|l| l.starts_with("| GET /              |  10000 |"))
            .unwrap_or_else(|| panic!("{table}"));
        assert!(
            row.ends_with("|          27/13 |    3.50/0.37 |        0 |"),
            "{row}"
        );
        assert!(ours.ends_with("NOT met"), "{ours}");
        let nginx = line(SWEEP_NGINX_ROOT);
        assert!(nginx.contains("0.50 x the 64-connection rate"), "{nginx}");
        assert!(nginx.ends_with("nginx would NOT meet it"), "{nginx}");
        // hyper alone's page is read beside nginx's page, not its GET / file.
        let floor = line(SWEEP_FLOOR_WARM);
        assert!(floor.contains("0.70 x the 64-connection rate"), "{floor}");
        assert!(floor.contains("(1.40 x nginx's rate here)"), "{floor}");
        assert!(floor.ends_with("hyper alone would NOT meet it"), "{floor}");
    }

    #[test]
    fn a_floor_is_read_against_its_paths_ceiling_printed_once() {
        let labelled = |id: &str, label: &str, rates: &[f64]| Measurement {
            id: id.into(),
            label: label.into(),
            ..measured(rates)
        };
        let nginx = Measurement {
            errors: 2,
            ..labelled("nginx_static", "nginx: the page", &[100.0, 100.0, 100.0])
        };
        let mut report = Report::new("test", Path::new("/nonexistent"), Path::new("/"));
        report.path(
            labelled("get_users_warm", "GET /users warm", &[60.0, 60.0, 60.0]),
            Some(nginx.clone()),
        );
        report.floor(
            Measurement {
                errors: 1,
                ..labelled(
                    "hyper_floor_page",
                    "hyper alone: the page",
                    &[90.0, 85.0, 80.0],
                )
            },
            nginx,
        );
        // nginx's two failures once (the floor shares the path's ceiling), the floor's one.
        assert_eq!(report.failed_requests(), 3);
        let goals = report.goals();
        assert!(
            goals.contains(&"hyper alone sending the same page: 0.85 x nginx, p99 1.00 ms: hyper alone would meet it".to_owned()),
            "{goals:?}"
        );
        assert!(
            goals
                .iter()
                .any(|g| g.starts_with("warm GET /users >= 0.8 x nginx, p99 <= 5 ms: 0.60 x")),
            "{goals:?}"
        );
        let table = report.render();
        let floor_line = table
            .lines()
            .find(|l| l.starts_with("| (floor) hyper alone: the page"))
            .unwrap_or_else(|| panic!("{table}"));
        assert!(
            floor_line.contains("|      0.85 | 0.80-0.90 |"),
            "{floor_line}"
        );
        assert_eq!(
            table.matches("| (ceiling) nginx: the page").count(),
            1,
            "{table}"
        );
    }
}
