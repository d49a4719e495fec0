//! `userstack-bench`: the load benchmark of the userstack server, beside its ceilings.
//!
//! It starts its own PostgreSQL and Redis (the `testing` support of `userstack-storage-pg` and
//! `userstack-cache-redis`), runs the release `userstack` binary against them, drives load with
//! wrk (and pgbench for the database's own rate), and prints one table per question plus a JSON
//! file of every figure. Everything it starts is stopped when it ends, also on failure.
//!
//! ```sh
//! bench/run.sh --quick          # CI: every path briefly; fails on any failed request, never on time
//! bench/run.sh                  # the full run docs/performance.md is made from
//! cargo run --release -p userstack-bench -- --help
//! ```
//!
//! Why wrk: it is C with one event loop per thread, so on a 2-core machine shared with the server,
//! PostgreSQL and Redis it takes the least CPU per request of the generators we could use (the
//! Rust ones on crates.io — oha, goose, rewrk — run a tokio runtime and an HTTP client stack per
//! request; rewrk is unmaintained, goose is built for scenarios with sessions); it holds 10 000
//! keep-alive connections in one process, and its Lua hook generates the distinct keys and writes
//! the results as JSON (`bench/wrk.lua`). pgbench measures PostgreSQL's own rate on the same
//! queries. A path and its ceiling run in turns (`Bench::measure_in_turns`), so that the host's
//! drift falls on both.

mod load;
mod procs;
mod profile;
mod report;
mod servers;
mod stats;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use clap::Parser;
use tokio_postgres::Client;
use userstack_cache_redis::testing::TestRedis;
use userstack_storage_pg::testing::TestPostgres;

use crate::load::{Bench, Load, Measurement, Subject, Watch};
use crate::report::{
    Report, SWEEP_FLOOR, SWEEP_FLOOR_WARM, SWEEP_NGINX_ROOT, SWEEP_NGINX_WARM, SWEEP_ROOT,
    SWEEP_WARM, SeedRow, SoakPoint, SweepRow,
};
use crate::servers::FlaskRunner;

/// The server's PostgreSQL pool size in every run, and pgbench's connection count.
const POOL_SIZE: u32 = 16;

#[derive(Debug, Parser)]
#[command(
    about = "Load benchmark of the userstack server beside its ceilings (nginx, pgbench, the seed's Flask app)"
)]
struct Args {
    /// CI smoke run: every path for 1 s, small tables, a short sweep; asserts no failed
    /// request, never a timing.
    #[arg(long)]
    quick: bool,
    /// Seconds per measured run [default: 10; quick 1].
    #[arg(long)]
    duration: Option<u64>,
    /// Measured runs per path; tables show medians [default: 3; quick 1].
    #[arg(long)]
    repeats: Option<u32>,
    /// wrk connections for the paths table.
    #[arg(long, default_value_t = 64)]
    connections: u32,
    /// wrk and pgbench threads [default: the number of CPUs].
    #[arg(long)]
    threads: Option<u32>,
    /// Users in the table while the paths are measured [default: 1000000; quick 100000].
    #[arg(long)]
    rows: Option<u64>,
    /// Table sizes for the PostgreSQL path, comma-separated [default:
    /// 1000,100000,1000000,10000000; quick 1000,100000].
    #[arg(long, value_delimiter = ',')]
    sizes: Option<Vec<u64>>,
    /// Connection counts of the sweep, comma-separated [default: 64,256,1024,4096,10000; quick
    /// 64,512].
    #[arg(long, value_delimiter = ',')]
    sweep: Option<Vec<u32>>,
    /// Requests of mixed traffic in the memory soak [default: 10000000; quick 100000].
    #[arg(long)]
    soak_requests: Option<u64>,
    /// Skip the seed's Flask app (it needs python3-flask, -psycopg2, -redis and gunicorn).
    #[arg(long)]
    no_seed: bool,
    /// Python with flask, psycopg2, redis and gunicorn.
    #[arg(long, default_value = "/usr/bin/python3")]
    python: String,
    /// Use this userstack binary instead of building target/release/userstack.
    #[arg(long)]
    bin: Option<PathBuf>,
    /// Instead of the benchmark: count the server's instructions per request with callgrind over
    /// this many requests (`--rows` users), into callgrind.txt.
    #[arg(long, value_name = "REQUESTS")]
    callgrind: Option<u64>,
    /// What --callgrind requests: `postgres` (distinct pages, cache bypassed), `warm` (the same
    /// page every time, from Redis) or `floor` (that page from hyper alone).
    #[arg(long, value_enum, default_value_t = profile::Target::Postgres)]
    callgrind_path: profile::Target,
    /// Where the table (bench.txt) and every figure (bench.json) are written.
    #[arg(long, default_value = "out/bench")]
    out: PathBuf,
}

/// What a run does, from the arguments.
#[derive(Debug)]
struct Plan {
    quick: bool,
    duration: u64,
    warmup: u64,
    repeats: u32,
    connections: u32,
    threads: u32,
    rows: u64,
    sizes: Vec<u64>,
    sweep: Vec<u32>,
    soak_requests: u64,
    seed: bool,
}

impl Plan {
    fn new(a: &Args) -> Result<Self> {
        let q = a.quick;
        let cpus = std::thread::available_parallelism().map_or(2, |n| n.get() as u32);
        let plan = Self {
            quick: q,
            duration: a.duration.unwrap_or(if q { 1 } else { 10 }),
            warmup: if q { 1 } else { 2 },
            repeats: a.repeats.unwrap_or(if q { 1 } else { 3 }),
            connections: a.connections,
            threads: a.threads.unwrap_or(cpus),
            rows: a.rows.unwrap_or(if q { 100_000 } else { 1_000_000 }),
            sizes: a.sizes.clone().unwrap_or_else(|| {
                if q {
                    vec![1_000, 100_000]
                } else {
                    vec![1_000, 100_000, 1_000_000, 10_000_000]
                }
            }),
            sweep: a.sweep.clone().unwrap_or_else(|| {
                if q {
                    vec![64, 512]
                } else {
                    vec![64, 256, 1024, 4096, 10_000]
                }
            }),
            soak_requests: a
                .soak_requests
                .unwrap_or(if q { 100_000 } else { 10_000_000 }),
            seed: !a.no_seed,
        };
        ensure!(
            plan.duration > 0 && plan.repeats > 0,
            "--duration and --repeats must be positive"
        );
        ensure!(plan.rows > 1_000, "--rows must exceed 1000");
        ensure!(
            plan.connections >= plan.threads,
            "--connections must be at least --threads"
        );
        Ok(plan)
    }
}

#[tokio::main]
async fn main() {
    // On Ctrl-C or SIGTERM the run's future is dropped, and with it every server it started
    // (each stops itself on drop), as the previous script's trap did.
    let outcome = tokio::select! {
        outcome = run(Args::parse()) => outcome,
        signal = interrupted() => Err(anyhow::anyhow!("interrupted by {signal}")),
    };
    if let Err(e) = outcome {
        eprintln!("bench: error: {e:#}");
        eprintln!("bench: failed; everything it started is stopped");
        std::process::exit(1);
    }
}

async fn run(args: Args) -> Result<()> {
    let plan = Plan::new(&args)?;
    let started = Instant::now();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()?;
    let bench_dir = root.join("bench");
    for tool in ["wrk", "pgbench"] {
        which(tool).with_context(|| format!("{tool} not found (run .ci/install.sh)"))?;
    }
    if plan.seed {
        servers::check_python(&args.python)?;
    }
    // 10 000 connections need 10 000 descriptors in wrk and as many in the server (children
    // inherit the limit).
    let nofile = rlimit::increase_nofile_limit(u64::MAX).context("raise RLIMIT_NOFILE")?;
    let most = u64::from(*plan.sweep.iter().max().unwrap_or(&64));
    ensure!(
        nofile > most + 100,
        "RLIMIT_NOFILE is {nofile} even raised to its hard limit; the sweep needs {most} \
         connections (raise the hard limit, e.g. ulimit -Hn, or pass a smaller --sweep)"
    );
    let bin = match &args.bin {
        Some(b) => b
            .canonicalize()
            .with_context(|| format!("--bin {}", b.display()))?,
        None => build(&root, "userstack-server", "userstack")?,
    };

    let work = tempfile::Builder::new()
        .prefix("userstack-bench-")
        .tempdir()?;
    // nginx's workers run as nobody when we are root: they must reach their files inside.
    std::fs::set_permissions(
        work.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )?;
    eprintln!("==> PostgreSQL and Redis (the test support of storage-pg and cache-redis)");
    let pg = TestPostgres::start_private();
    let redis = TestRedis::start_private();
    let postmaster = pg.postmaster_pid().context("the PostgreSQL server's pid")?;
    let redis_pid = redis.pid().context("the Redis server's pid")?;
    let redis_port: u16 = redis.url().rsplit(':').next().unwrap_or_default().parse()?;
    // Distinct pages fill Redis during the soak: cap it as a deployment would, evicting
    // cached pages (they have a TTL) and never the generation counter (it has none).
    redis_command(redis_port, "CONFIG SET maxmemory 256mb").await?;
    redis_command(redis_port, "CONFIG SET maxmemory-policy volatile-lru").await?;

    let settings = pg.fresh_database().await;
    let db_url = TestPostgres::url(&settings);
    let cfg = &settings.config;
    let pg_host = "127.0.0.1";
    let pg_port = cfg.get_ports().first().copied().unwrap_or(5432);
    let db_name = cfg.get_dbname().unwrap_or("postgres").to_owned();
    migrate(&bin, &db_url)?;
    let (db, conn) = cfg.connect(tokio_postgres::NoTls).await?;
    tokio::spawn(conn);

    let bench = Bench::new(
        plan.threads,
        plan.duration,
        plan.warmup,
        plan.repeats,
        bench_dir.join("wrk.lua"),
        work.path().to_owned(),
        postmaster,
        redis_pid,
        vec![
            "-h".into(),
            pg_host.into(),
            "-p".into(),
            pg_port.to_string(),
            "-U".into(),
            "postgres".into(),
            db_name.clone(),
        ],
    );
    let mut report = Report::new(&plan_summary(&plan), &bin, &root);
    let mut loaded = 0;

    // --- the PostgreSQL path at each table size, and pgbench's page query at the main size ---
    let closed = procs::free_port()?; // nothing listens here: the bypassing server's "Redis"
    let base_env = |redis_url: String, prefix: &str| {
        vec![
            ("DATABASE_URL", db_url.clone()),
            ("DATABASE_POOL_SIZE", POOL_SIZE.to_string()),
            ("REDIS_URL", redis_url),
            ("REDIS_KEY_PREFIX", prefix.to_owned()),
            // 100 ms (the default) is exceeded by Redis round trips when other work shares the
            // cores, and /cache then answers 503 by design; the benchmark measures throughput.
            ("CACHE_TIMEOUT_MS", "1000".to_owned()),
        ]
    };
    let mut bypass_env = base_env(format!("redis://127.0.0.1:{closed}"), "bench:");
    bypass_env.push(("CACHE_BACKOFF_MS", "86400000".into()));
    if let Some(requests) = args.callgrind {
        load_users(&db, &mut loaded, plan.rows).await?;
        let modulus = max_id(&db).await?.saturating_sub(100).max(1);
        let warm_env = base_env(redis.url().to_owned(), "bench:");
        let (bin, env) = match args.callgrind_path {
            profile::Target::Postgres => (bin, bypass_env),
            profile::Target::Warm => (bin, warm_env),
            profile::Target::Floor => {
                // The page hyper alone sends: the one the warm server sends, fetched from it.
                let server =
                    servers::userstack(&bin, work.path(), "page", &warm_env, &bench.http).await?;
                let url = server.url("/users?limit=100");
                let page = bench.http.get(url).send().await?.bytes().await?;
                server.stop().await;
                let file = work.path().join("page.json");
                std::fs::write(&file, &page)?;
                let floor = build(&root, "userstack-bench", "hyper-floor")?;
                (floor, vec![("PAGE", file.display().to_string())])
            }
        };
        let target = args.callgrind_path;
        let text = profile::callgrind(
            &bin,
            work.path(),
            &env,
            target,
            requests,
            modulus,
            &args.out,
        )
        .await?;
        eprintln!("{text}");
        return Ok(());
    }
    let bypass = servers::userstack(&bin, work.path(), "bypass", &bypass_env, &bench.http).await?;
    // Its first request finds Redis down; from then on it bypasses the cache (backoff of a day).
    bench.http.get(bypass.url("/users?limit=1")).send().await?;
    let bypass_watch = Watch {
        server: Some(bypass.pid()),
        metrics: Some(bypass.url("/metrics")),
    };
    let page_script = work.path().join("page.sql");
    std::fs::write(
        &page_script,
        "\\set after random(0, :maxafter)\n\
         SELECT id, name, email, created_at, updated_at FROM users WHERE id > :after ORDER BY id LIMIT 101;\n",
    )?;
    let (mut small, large): (Vec<u64>, Vec<u64>) =
        plan.sizes.iter().partition(|&&s| s <= plan.rows);
    small.push(plan.rows); // the paths table's PostgreSQL row, measured last, beside pgbench
    small.sort_unstable();
    small.dedup();
    let mut pg_main = None;
    for size in small {
        load_users(&db, &mut loaded, size).await?;
        let ceiling = (size == plan.rows).then_some(page_script.as_path());
        let (m, ceiling) = pg_path(&bench, &db, &bypass, &bypass_watch, size, ceiling).await?;
        report.sizes.push((size, m.clone()));
        pg_main = ceiling.map(|c| (m, c));
    }
    let (pg_main, ceiling) = pg_main.context("the main size was measured")?;

    // --- every path on the normal server --------------------------------------------------------
    let mut main_env = base_env(redis.url().to_owned(), "bench:");
    // The sweep holds up to its largest count of connections, each with a request in flight: the
    // server's caps (MAX_CONNECTIONS 1024, MAX_IN_FLIGHT 512 by default) are raised to fit, as a
    // deployment that expects that many clients would (the descriptor limit was raised above).
    let cap = (most + 100).to_string();
    main_env.push(("MAX_CONNECTIONS", cap.clone()));
    main_env.push(("MAX_IN_FLIGHT", cap));
    let main = servers::userstack(&bin, work.path(), "main", &main_env, &bench.http).await?;
    let watch = Watch {
        server: Some(main.pid()),
        metrics: Some(main.url("/metrics")),
    };
    let c = plan.connections;
    let maxid = max_id(&db).await?;
    let strict = true;
    let m = bench
        .measure(
            "get_root",
            "GET / (no I/O)",
            &Load::wrk(main.url("/"), "static", 1, c),
            &watch,
            strict,
            plan.repeats,
        )
        .await?;
    report.path(m, None);
    // nginx serves the very bytes of the warm page (this request also fills the cache).
    let page = bench
        .http
        .get(main.url("/users"))
        .send()
        .await?
        .bytes()
        .await?;
    ensure!(
        page.len() > 1000,
        "GET /users returned {} bytes",
        page.len()
    );
    // ... and, for the sweep, the bytes of `GET /`.
    let hello = bench.http.get(main.url("/")).send().await?.bytes().await?;
    let files: [(&str, &[u8]); 2] = [("users.json", &page), ("root.txt", &hello)];
    let nginx = servers::nginx(work.path(), &files, plan.threads as usize).await?;
    let nginx_watch = Watch {
        server: Some(nginx.pid()),
        metrics: None,
    };
    // hyper alone (crates/bench/src/bin/hyper-floor.rs) sends the same page too: the floor of
    // any server on hyper, beside nginx's ceiling, so the table shows which part of the gap is
    // ours. Here and in the concurrency sweep below.
    let page_file = work.path().join("page.json");
    std::fs::write(&page_file, &page)?;
    let floor = servers::hyper_floor(
        &build(&root, "userstack-bench", "hyper-floor")?,
        work.path(),
        &page_file,
    )
    .await?;
    let floor_watch = Watch {
        server: Some(floor.pid()),
        metrics: None,
    };
    let [m, n, f] = bench
        .measure_in_turns(
            [
                Subject::new(
                    "get_users_warm",
                    "GET /users warm cache",
                    &Load::wrk(main.url("/users"), "static", 1, c),
                    &watch,
                ),
                Subject::new(
                    "nginx_static",
                    "nginx: the same bytes as a file",
                    &Load::wrk(nginx.url("/users.json"), "static", 1, c),
                    &nginx_watch,
                ),
                Subject::new(
                    "hyper_floor_page",
                    "hyper alone: the same bytes from memory",
                    &Load::wrk(floor.url("/users"), "static", 1, c),
                    &floor_watch,
                ),
            ],
            strict,
            plan.repeats,
        )
        .await?;
    report.path(m, Some(n.clone()));
    report.floor(f, n);
    report.path(pg_main, Some(ceiling));
    let page_modulus = maxid.saturating_sub(100).max(1);
    for (id, label, load) in [
        (
            "get_users_cold",
            "GET /users cold cache (MGET+PG+SET)",
            Load::wrk(main.url("/users"), "page", page_modulus, c),
        ),
        (
            "get_user_warm",
            "GET /users/{id} warm (1000 ids)",
            Load::wrk(main.url("/users/1"), "user-hot", 1000, c),
        ),
        (
            "get_user_cold",
            "GET /users/{id} cold (distinct ids)",
            Load::wrk(main.url("/users/1"), "user-cold", maxid.max(1), c),
        ),
        (
            "get_cache",
            "GET /cache",
            Load::wrk(main.url("/cache"), "static", 1, c),
        ),
    ] {
        let m = bench
            .measure(id, label, &load, &watch, strict, plan.repeats)
            .await?;
        report.path(m, None);
    }
    let insert_script = work.path().join("insert.sql");
    std::fs::write(
        &insert_script,
        "\\set n random(1, 1000000000000000)\n\
         INSERT INTO users (name, email) VALUES ('pgbench ' || :client_id, 'pgbench-' || :client_id || '-' || :n || '@example.com') \
         RETURNING id, name, email, created_at, updated_at;\n",
    )?;
    let insert = Load::Pgbench {
        script: insert_script,
        clients: POOL_SIZE,
        vars: vec![],
    };
    let (m, ceiling) = bench
        .beside_ceiling(
            Subject::new(
                "post_users",
                "POST /users",
                &Load::wrk(main.url("/users"), "post", 1, c),
                &watch,
            ),
            Subject::new(
                "pgbench_insert",
                "pgbench: one-row INSERT ... RETURNING",
                &insert,
                &Watch::default(),
            ),
        )
        .await?;
    report.path(m, Some(ceiling));

    // --- concurrency sweep ----------------------------------------------------------------------
    // Beside userstack at each step: hyper alone, what any server on hyper's HTTP/1 connection
    // costs per connection; and nginx serving the bytes of each of our two paths as files, what
    // many connections cost a server that has its answer ready, with this machine's kernel and
    // load generator.
    // Each step after the first runs in turns with a run at the first step: the ratio the goal
    // reads is between two neighbouring runs, not between runs minutes apart.
    // The largest step, the one the goal reads, gets as many pairs as a path (--repeats) and the
    // median of their ratios: one pair moved the ratio by ±0.05 from run to run.
    let first = plan.sweep.first().copied().unwrap_or(64);
    let goal_step = plan.sweep.last().copied().unwrap_or(first);
    for &conns in &plan.sweep {
        let repeats = if conns == goal_step { plan.repeats } else { 1 };
        for (path, url, id, watch) in [
            (SWEEP_ROOT, main.url("/"), "get_root", &watch),
            (SWEEP_WARM, main.url("/users"), "get_users_warm", &watch),
            (SWEEP_FLOOR, floor.url("/"), "hyper_floor", &floor_watch),
            (
                SWEEP_FLOOR_WARM,
                floor.url("/users"),
                "hyper_floor_page",
                &floor_watch,
            ),
            (
                SWEEP_NGINX_ROOT,
                nginx.url("/root.txt"),
                "nginx_root",
                &nginx_watch,
            ),
            (
                SWEEP_NGINX_WARM,
                nginx.url("/users.json"),
                "nginx_page",
                &nginx_watch,
            ),
        ] {
            let load = Load::wrk(url.clone(), "static", 1, conns);
            let (step_id, label) = (
                format!("sweep_{id}_{conns}"),
                format!("{path} at {conns} connections"),
            );
            let this = Subject::new(&step_id, &label, &load, watch);
            // Failures under thousands of connections are the sweep's figures (the table and the
            // goals show them), not a broken benchmark.
            let strict = false;
            let (measurement, reference) = if conns == first {
                let [m] = bench.measure_in_turns([this], strict, repeats).await?;
                (m, None)
            } else {
                let (ref_id, ref_label) = (
                    format!("sweep_{id}_{first}_beside_{conns}"),
                    format!("{path} at {first} connections, beside {conns}"),
                );
                let ref_load = Load::wrk(url, "static", 1, first);
                let reference = Subject::new(&ref_id, &ref_label, &ref_load, watch);
                let [r, m] = bench
                    .measure_in_turns([reference, this], strict, repeats)
                    .await?;
                (m, Some(r))
            };
            report.sweep.push(SweepRow {
                path,
                measurement,
                reference,
            });
        }
    }
    floor.stop().await;
    nginx.stop().await;

    // --- memory over time -------------------------------------------------------------------------
    soak(&bench, &plan, &main, page_modulus, &mut report).await?;
    report.main_hwm_mib = procs::status_kib(main.pid(), "VmHWM:") as f64 / 1024.0;
    main.stop().await;

    // --- the seed's Flask app beside us, on a table of 100 users --------------------------------
    if plan.seed {
        seed(
            &bench,
            &bin,
            &pg,
            &redis,
            &args.python,
            &bench_dir,
            work.path(),
            &mut report,
        )
        .await?;
    }

    // --- the largest tables last: loading them takes longest --------------------------------------
    for size in large {
        load_users(&db, &mut loaded, size).await?;
        let (m, _) = pg_path(&bench, &db, &bypass, &bypass_watch, size, None).await?;
        report.sizes.push((size, m));
    }
    report.bypass_hwm_mib = procs::status_kib(bypass.pid(), "VmHWM:") as f64 / 1024.0;
    bypass.stop().await;

    report.table_size = db
        .query_one(
            "SELECT count(*)::text || ' rows, ' || pg_size_pretty(pg_total_relation_size('users')) \
             || ' with its indexes; shared_buffers ' || current_setting('shared_buffers') FROM users",
            &[],
        )
        .await?
        .get(0);
    report.elapsed_s = started.elapsed().as_secs();
    let text = report.render();
    // The table is the program's output; progress went to stderr.
    #[allow(clippy::print_stdout)]
    {
        println!("{text}");
    }
    std::fs::create_dir_all(&args.out)?;
    std::fs::write(args.out.join("bench.txt"), &text)?;
    std::fs::write(
        args.out.join("bench.json"),
        serde_json::to_string_pretty(&report)?,
    )?;
    eprintln!(
        "==> wrote {0}/bench.txt and {0}/bench.json",
        args.out.display()
    );
    let failed = report.failed_requests();
    if failed > 0 {
        bail!(
            "{failed} requests to userstack failed (non-2xx or socket errors); see the runs above"
        );
    }
    Ok(())
}

async fn interrupted() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = int.recv() => "SIGINT",
        _ = term.recv() => "SIGTERM",
    }
}

/// The PostgreSQL path (cache bypassed, a distinct `after=` per request) at the current size;
/// with `ceiling`, in turns with pgbench running that script over the same range of pages.
async fn pg_path(
    bench: &Bench,
    db: &Client,
    server: &servers::Server,
    watch: &Watch,
    size: u64,
    ceiling: Option<&Path>,
) -> Result<(Measurement, Option<Measurement>)> {
    let modulus = max_id(db).await?.saturating_sub(100).max(1);
    let (id, label) = (
        format!("pg_path_{size}"),
        format!("GET /users PostgreSQL (cache bypassed), {size} rows"),
    );
    let load = Load::wrk(server.url("/users"), "page", modulus, 64);
    let path = Subject::new(&id, &label, &load, watch);
    let Some(script) = ceiling else {
        let [m] = bench.measure_in_turns([path], true, bench.repeats).await?;
        return Ok((m, None));
    };
    let pgbench = Load::Pgbench {
        script: script.to_owned(),
        clients: POOL_SIZE,
        vars: vec![("maxafter".into(), modulus.to_string())],
    };
    let (m, c) = bench
        .beside_ceiling(
            path,
            Subject::new(
                "pgbench_page",
                "pgbench: the same page query",
                &pgbench,
                &Watch::default(),
            ),
        )
        .await?;
    Ok((m, Some(c)))
}

/// Mixed traffic in segments until `soak_requests` were made; RSS after each.
async fn soak(
    bench: &Bench,
    plan: &Plan,
    main: &servers::Server,
    page_modulus: u64,
    report: &mut Report,
) -> Result<()> {
    let segment = if plan.quick { 2 } else { 10 };
    // Bounded in time as well as in requests, whatever the machine's speed.
    let limit = Duration::from_secs(if plan.quick { 30 } else { 1200 });
    eprintln!(
        "==> memory over time: mixed traffic (see bench/wrk.lua 'mixed') until {} requests, RSS after each {segment}s segment",
        plan.soak_requests
    );
    let load = Load::wrk(main.url("/"), "mixed", page_modulus, plan.connections);
    let start = Instant::now();
    let mut total = 0;
    let mut segment_no = 0;
    report.soak.push(SoakPoint {
        requests: 0,
        seconds: 0.0,
        rss_mib: procs::status_kib(main.pid(), "VmRSS:") as f64 / 1024.0,
        errors: 0,
    });
    while total < plan.soak_requests && start.elapsed() < limit {
        segment_no += 1;
        let run = bench.run(&load, segment_no, 10_000, segment).await?;
        total += run.requests;
        let point = SoakPoint {
            requests: total,
            seconds: start.elapsed().as_secs_f64(),
            rss_mib: procs::status_kib(main.pid(), "VmRSS:") as f64 / 1024.0,
            errors: run.error_count(),
        };
        eprintln!(
            "    {} requests, RSS {:.1} MiB, {} errors {:?}",
            point.requests, point.rss_mib, point.errors, run.errors
        );
        report.soak.push(point);
    }
    Ok(())
}

/// Our server, the Flask dev server and gunicorn on one table of 100 users: `/`, `/users`,
/// `/cache`.
#[allow(clippy::too_many_arguments)]
async fn seed(
    bench: &Bench,
    bin: &Path,
    pg: &TestPostgres,
    redis: &TestRedis,
    python: &str,
    bench_dir: &Path,
    work: &Path,
    report: &mut Report,
) -> Result<()> {
    let settings = pg.fresh_database().await;
    let url = TestPostgres::url(&settings);
    migrate(bin, &url)?;
    let (db, conn) = settings.config.connect(tokio_postgres::NoTls).await?;
    tokio::spawn(conn);
    let mut loaded = 0;
    load_users(&db, &mut loaded, 100).await?;
    let redis_port: u16 = redis.url().rsplit(':').next().unwrap_or_default().parse()?;
    let env = vec![
        ("DATABASE_URL", url),
        ("DATABASE_POOL_SIZE", POOL_SIZE.to_string()),
        ("REDIS_URL", redis.url().to_owned()),
        ("REDIS_KEY_PREFIX", "bench-seed:".to_owned()),
        ("CACHE_TIMEOUT_MS", "1000".to_owned()),
    ];
    let ours = servers::userstack(bin, work, "seed", &env, &bench.http).await?;
    let pg_addr = (
        "127.0.0.1",
        settings.config.get_ports()[0],
        "postgres",
        settings.config.get_dbname().unwrap_or("postgres"),
    );
    let c = bench_connections(report);
    for path in ["/", "/users", "/cache"] {
        let watch = Watch {
            server: Some(ours.pid()),
            metrics: Some(ours.url("/metrics")),
        };
        let id = path.trim_matches('/');
        let id = if id.is_empty() { "root" } else { id };
        let m = bench
            .measure(
                &format!("seed_ours_{id}"),
                &format!("userstack GET {path}"),
                &Load::wrk(ours.url(path), "static", 1, c),
                &watch,
                true,
                bench.repeats,
            )
            .await?;
        report.seed.push(SeedRow {
            path,
            runner: "userstack",
            measurement: m,
        });
    }
    ours.stop().await;
    for runner in [FlaskRunner::Dev, FlaskRunner::Gunicorn] {
        let name = match runner {
            FlaskRunner::Dev => "flask dev server",
            FlaskRunner::Gunicorn => "gunicorn",
        };
        let server = servers::flask(runner, python, bench_dir, work, pg_addr, redis_port).await?;
        for path in ["/", "/users", "/cache"] {
            let watch = Watch {
                server: Some(server.pid()),
                metrics: None,
            };
            let id = path.trim_matches('/');
            let id = if id.is_empty() { "root" } else { id };
            // The baseline's own failures (timeouts, refused connections) are figures, not a
            // failure of the benchmark.
            let m = bench
                .measure(
                    &format!("seed_{}_{id}", name.replace(' ', "_")),
                    &format!("{name} GET {path}"),
                    &Load::wrk(server.url(path), "static", 1, c),
                    &watch,
                    false,
                    bench.repeats,
                )
                .await?;
            report.seed.push(SeedRow {
                path,
                runner: name,
                measurement: m,
            });
        }
        server.stop().await;
    }
    Ok(())
}

fn bench_connections(report: &Report) -> u32 {
    report
        .paths
        .first()
        .map_or(64, |p| p.measurement.connections)
}

/// Adds users until the table has `target` rows; `loaded` counts the generated ones, so their
/// emails never repeat.
async fn load_users(db: &Client, loaded: &mut u64, target: u64) -> Result<()> {
    let count: i64 = db
        .query_one("SELECT count(*) FROM users", &[])
        .await?
        .get(0);
    let mut missing = target.saturating_sub(count as u64);
    if missing == 0 {
        return Ok(());
    }
    eprintln!("==> loading users up to {target} rows (INSERT ... SELECT generate_series)");
    let start = Instant::now();
    while missing > 0 {
        let chunk = missing.min(1_000_000);
        let (first, last) = (*loaded as i64 + 1, (*loaded + chunk) as i64);
        db.execute(
            "INSERT INTO users (name, email) SELECT 'User ' || g, 'user' || g || '@example.com' \
             FROM generate_series($1::bigint, $2::bigint) g",
            &[&first, &last],
        )
        .await?;
        *loaded += chunk;
        missing -= chunk;
    }
    db.batch_execute("VACUUM ANALYZE users").await?;
    eprintln!("    done in {:.1}s", start.elapsed().as_secs_f64());
    Ok(())
}

async fn max_id(db: &Client) -> Result<u64> {
    let id: i64 = db
        .query_one("SELECT coalesce(max(id), 0)::bigint FROM users", &[])
        .await?
        .get(0);
    Ok(id as u64)
}

fn migrate(bin: &Path, url: &str) -> Result<()> {
    let out = std::process::Command::new(bin)
        .arg("migrate")
        .env("DATABASE_URL", url)
        .env("RUST_LOG", "warn")
        .output()?;
    ensure!(
        out.status.success(),
        "userstack migrate failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// `cargo build --release --locked -p PACKAGE --bin BINARY` in the workspace; the binary's path.
fn build(root: &Path, package: &str, binary: &str) -> Result<PathBuf> {
    let args = [
        "build",
        "--release",
        "--locked",
        "-p",
        package,
        "--bin",
        binary,
    ];
    eprintln!("==> cargo {}", args.join(" "));
    let status =
        std::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args(args)
            .current_dir(root)
            .status()
            .context("run cargo (or pass --bin PATH)")?;
    ensure!(status.success(), "cargo build failed");
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
    Ok(target.join("release").join(binary))
}

fn which(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}

/// One inline Redis command; fails unless Redis answers `+OK`.
async fn redis_command(port: u16, command: &str) -> Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    s.write_all(format!("{command}\r\n").as_bytes()).await?;
    let mut buf = [0; 256];
    let n = s.read(&mut buf).await?;
    let answer = String::from_utf8_lossy(&buf[..n]);
    ensure!(answer.starts_with("+OK"), "redis {command}: {answer}");
    Ok(())
}

fn plan_summary(p: &Plan) -> String {
    format!(
        "{}: wrk -t{} -c{}, {} x {}s per path after a {}s warm-up, medians of the runs; {} users while \
         the paths are measured; PostgreSQL path at {:?} rows; sweep {:?} connections; soak {} requests",
        if p.quick { "quick run" } else { "full run" },
        p.threads,
        p.connections,
        p.repeats,
        p.duration,
        p.warmup,
        p.rows,
        p.sizes,
        p.sweep,
        p.soak_requests,
    )
}
