//! [`UserRepository`] on PostgreSQL.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bb8::{Pool, PooledConnection, RunError};
use futures_util::TryStreamExt;
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;
use userstack_core::json::{PageWriter, UserRef};
use userstack_core::{
    Error as CoreError, NewUser, PageJson, PageRequest, Result, User, UserId, UserPatch,
    UserRepository,
};

use crate::batch::{self, BatchCounts, Job, Pending};
use crate::error::{Error, classify, is_unique_violation};
use crate::migrations;
use crate::pool::{Manager, Statements};
use crate::timestamp::Timestamp;

/// How the adapter connects. `Default` matches the original deployment: `db:5432`, database
/// `mydb`, user `postgres`, password `password`.
///
/// A PostgreSQL that hangs (frozen, or behind a cut network) must not hold requests for as long as
/// it hangs, nor pin every pooled connection: every operation has a client-side deadline
/// (`connection_timeout`), a connection whose statement outlived it is discarded rather than
/// reused, opening a connection has the same deadline, the server cancels statements itself after
/// `statement_timeout`, and TCP keepalives find a peer that vanished.
#[derive(Debug, Clone)]
pub struct PgSettings {
    pub config: tokio_postgres::Config,
    /// Most connections the pool opens.
    pub pool_size: u32,
    /// Longest one operation may take on the client's clock: checking a connection out (or
    /// opening one) plus its statement. Past it the operation fails with `StoreUnavailable`.
    pub connection_timeout: Duration,
    /// The server's `statement_timeout` for pooled connections: below `connection_timeout`, so
    /// that on a live but slow server the server cancels the statement and the connection is kept.
    pub statement_timeout: Duration,
    /// The `lock_timeout` of migrations: a schema change queued behind a long transaction's lock
    /// blocks every query on that table, so it gives up instead (and start-up fails, loudly).
    pub migration_lock_timeout: Duration,
}

impl Default for PgSettings {
    fn default() -> Self {
        let mut config = tokio_postgres::Config::new();
        config
            .host("db")
            .port(5432)
            .dbname("mydb")
            .user("postgres")
            .password("password")
            .application_name("userstack");
        Self {
            config,
            pool_size: 16,
            connection_timeout: Duration::from_secs(2),
            statement_timeout: Duration::from_millis(1500),
            migration_lock_timeout: Duration::from_secs(10),
        }
    }
}

/// TCP keepalive probes after this much silence, every `KEEPALIVE_INTERVAL`, `KEEPALIVE_RETRIES`
/// times: a server that vanished without a FIN or RST (a cut network, a dead host) is noticed in
/// about 30 s instead of the kernel's default two hours.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(15);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);
const KEEPALIVE_RETRIES: u32 = 3;
/// Data sent but not acknowledged for this long closes the connection (Linux `TCP_USER_TIMEOUT`).
const TCP_USER_TIMEOUT: Duration = Duration::from_secs(30);

/// `config` with this adapter's socket protections, unless the URL chose its own.
fn protected(mut config: tokio_postgres::Config, settings: &PgSettings) -> tokio_postgres::Config {
    config.connect_timeout(settings.connection_timeout);
    config.keepalives(true);
    if config.get_keepalives_idle() == tokio_postgres::Config::new().get_keepalives_idle() {
        config.keepalives_idle(KEEPALIVE_IDLE);
    }
    if config.get_keepalives_interval().is_none() {
        config.keepalives_interval(KEEPALIVE_INTERVAL);
    }
    if config.get_keepalives_retries().is_none() {
        config.keepalives_retries(KEEPALIVE_RETRIES);
    }
    if config.get_tcp_user_timeout().is_none() {
        config.tcp_user_timeout(TCP_USER_TIMEOUT);
    }
    config
}

/// Pool occupancy, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolState {
    pub connections: u32,
    pub idle_connections: u32,
}

/// The batches run so far for each kind of queued request, for metrics (see
/// [`PgUserRepository::batch_counts`]). A batch is one statement, except a batch of creates that
/// PostgreSQL refused, which is then retried row by row.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchStats {
    pub creates: BatchCounts,
    pub users: BatchCounts,
    pub pages: BatchCounts,
}

/// Users in PostgreSQL, through a bb8 pool.
#[derive(Debug, Clone)]
pub struct PgUserRepository {
    pool: Pool<Manager>,
    settings: PgSettings,
    /// Creates waiting to be inserted together, and users and pages waiting to be read together
    /// (see `batch`).
    creates: Arc<batch::Queue<NewUser>>,
    users: Arc<batch::Queue<UserId>>,
    pages: Arc<batch::Queue<PageRequest>>,
}

impl PgUserRepository {
    /// Builds the pool without connecting: connections are opened on demand, so this succeeds
    /// while the database is still starting (see [`PgUserRepository::migrate`] to wait for it).
    pub fn new(mut settings: PgSettings) -> Self {
        settings.config = protected(std::mem::take(&mut settings.config), &settings);
        let config = &settings.config;
        let mut pooled = config.clone();
        // plan_cache_mode (PostgreSQL 12+): every statement here has one good plan whatever its
        // parameters, but PostgreSQL judges the page statement's generic plan (`LIMIT $2`
        // unknown) costlier than a custom one for `LIMIT 101` and so plans it anew on every
        // execution: PostgreSQL's CPU per page was 175 µs re-planned, 124 µs planned once
        // (bench/run.sh, figures in docs/performance.md).
        // jit: the generic plan of the batched page statement is costed for a third of the
        // table per page; past about 10^7 users that estimate passes `jit_above_cost` and
        // PostgreSQL compiled the statement on every execution (`JIT: … Emission 5.3 ms` in its
        // EXPLAIN ANALYZE, for a statement that runs in 0.1 ms): the PostgreSQL path fell from
        // 11 365 to 2 941 pages/s at 10^7 rows (bench/run.sh). No statement here is long enough
        // for JIT to pay.
        let options = format!(
            "{} -c statement_timeout={} -c plan_cache_mode=force_generic_plan -c jit=off",
            pooled.get_options().unwrap_or_default(),
            settings.statement_timeout.as_millis()
        );
        pooled.options(options.trim_start());
        let pool = Pool::builder()
            .max_size(settings.pool_size)
            .min_idle(Some(settings.pool_size.min(4)))
            .connection_timeout(settings.connection_timeout)
            // Our is_valid is a local check, not a round trip; see Manager::is_valid.
            .test_on_check_out(true)
            .build_unchecked(Manager::new(pooled, settings.connection_timeout));
        Self {
            pool,
            settings,
            creates: Arc::default(),
            users: Arc::default(),
            pages: Arc::default(),
        }
    }

    /// Applies pending schema migrations on a dedicated connection; safe to run from several
    /// replicas at once. Returns the versions applied now.
    pub async fn migrate(&self) -> std::result::Result<Vec<i32>, Error> {
        let connect = self.settings.config.connect(tokio_postgres::NoTls);
        let (mut client, connection) =
            tokio::time::timeout(self.settings.connection_timeout, connect)
                .await
                .map_err(|_| Error::ConnectTimeout(self.settings.connection_timeout))?
                .map_err(Error::Connect)?;
        let driver = tokio::spawn(connection);
        let result = migrations::migrate(&mut client, self.settings.migration_lock_timeout).await;
        drop(client);
        let _ = driver.await;
        result
    }

    /// The batches run so far, by kind: how many requests each statement served on average.
    pub fn batch_counts(&self) -> BatchStats {
        BatchStats {
            creates: self.creates.taken(),
            users: self.users.taken(),
            pages: self.pages.taken(),
        }
    }

    pub fn pool_state(&self) -> PoolState {
        let state = self.pool.state();
        PoolState {
            connections: state.connections,
            idle_connections: state.idle_connections,
        }
    }

    async fn conn(&self) -> Result<PooledConnection<'_, Manager>> {
        checkout(&self.pool).await
    }

    /// The rows of one page, in id order (`list` and `list_json` decode them differently), read
    /// together with the pages asked for meanwhile (see `batch`).
    async fn list_rows(&self, page: PageRequest) -> Result<Vec<Row>> {
        self.queued(&self.pages, page).await
    }

    /// Queues `job` with the others of its kind, starts a runner if too few run, and waits for
    /// the answer under the client-side deadline.
    async fn queued<J: Job>(&self, queue: &Arc<batch::Queue<J>>, job: J) -> Result<J::Answer> {
        let (answer, runner) = queue.push(job);
        if let Some(runner) = runner {
            let limit = self.settings.connection_timeout;
            tokio::spawn(runner.run(self.pool.clone(), limit));
        }
        self.deadline(async {
            answer
                .await
                .unwrap_or_else(|_| Err(CoreError::internal("the statement was abandoned")))
        })
        .await
    }

    /// Runs one operation under the client-side deadline (see [`within`]).
    async fn deadline<T>(&self, operation: impl Future<Output = Result<T>>) -> Result<T> {
        within(self.settings.connection_timeout, operation).await
    }
}

pub(crate) async fn checkout(pool: &Pool<Manager>) -> Result<PooledConnection<'_, Manager>> {
    pool.get().await.map_err(|e| match e {
        RunError::User(e) => e,
        RunError::TimedOut => {
            CoreError::store_unavailable("timed out waiting for a database connection")
        }
    })
}

/// Runs one operation under the client-side deadline `limit`. If the deadline passes while a
/// statement is in flight, the connection is dropped with the future, and the pool discards it
/// (see `PgConnection::prepared`), so a hung server pins no pooled connection.
pub(crate) async fn within<T>(
    limit: Duration,
    operation: impl Future<Output = Result<T>>,
) -> Result<T> {
    tokio::time::timeout(limit, operation)
        .await
        .unwrap_or_else(|_| {
            Err(CoreError::store_unavailable(format!(
                "PostgreSQL did not answer within {limit:?}"
            )))
        })
}

/// A create: its row, inserted with the others queued meanwhile.
impl Job for NewUser {
    type Answer = User;
    const MAX_BATCH: usize = 64;
    /// On two cores, 32 connections posting, 1 inserter took 14 267–16 129 creates/s, 2 took
    /// 12 891–15 770, 4 took 11 326–12 154 and 8 took 9 057–9 464 (`bench/cpu-per-request.sh BIN
    /// post 4`, in turns).
    const MAX_RUNNERS: usize = 2;

    /// A batch the database refuses for another reason than being unavailable (a row breaking a
    /// constraint the validation does not know) is retried row by row, so only the offending row
    /// fails.
    async fn run(
        client: &tokio_postgres::Client,
        s: &Statements,
        rows: &[Pending<Self>],
    ) -> Result<Vec<Result<User>>> {
        if rows.len() > 1 {
            let names: Vec<&str> = rows.iter().map(|r| r.job.name.as_str()).collect();
            let emails: Vec<&str> = rows.iter().map(|r| r.job.email.as_str()).collect();
            match client.query(&s.insert_many, &[&names, &emails]).await {
                Ok(inserted) => return Ok(match_inserted(rows, &inserted)),
                Err(e) => match classify(e) {
                    e @ CoreError::StoreUnavailable(_) => return Err(e),
                    e => tracing::warn!(error = %e, source = ?std::error::Error::source(&e),
                        rows = rows.len(), "a batch of creates was refused; inserting row by row"),
                },
            }
        }
        let mut results = Vec::with_capacity(rows.len());
        for row in rows {
            results.push(insert_one(client, s, &row.job).await);
        }
        Ok(results)
    }
}

/// A user by id: its row if there is one, read with the other users asked for meanwhile.
impl Job for UserId {
    type Answer = Option<User>;
    /// On two cores, 64 connections reading distinct users (`bench/cpu-per-request.sh BIN id 4
    /// 64 2`, in turns): one user per statement 19 356–19 513 reads/s; batches of at most 64 with
    /// 2 runners 47 132–48 366, with 4 runners 41 771–43 208; 16 and 4 runners 42 985–43 068.
    const MAX_BATCH: usize = 64;
    const MAX_RUNNERS: usize = 2;

    async fn run(
        client: &tokio_postgres::Client,
        s: &Statements,
        ids: &[Pending<Self>],
    ) -> Result<Vec<Result<Option<User>>>> {
        if let [id] = ids {
            let row = client.query_opt(&s.get, &[&id.job.0]).await;
            return Ok(vec![Ok(row.map_err(classify)?.as_ref().map(user_from))]);
        }
        let wanted: Vec<i64> = ids.iter().map(|id| id.job.0).collect();
        let rows = client
            .query(&s.get_many, &[&wanted])
            .await
            .map_err(classify)?;
        // Each row's id decoded once, not once per request looking for it. Two requests for one
        // id each get the user.
        let found: Vec<(i64, &Row)> = rows.iter().map(|row| (row.get(0), row)).collect();
        let user = |id: i64| {
            found
                .iter()
                .find(|(found, _)| *found == id)
                .map(|(_, row)| user_from(row))
        };
        Ok(wanted.iter().map(|&id| Ok(user(id))).collect())
    }
}

/// A page: its rows, read with the other pages asked for meanwhile.
impl Job for PageRequest {
    type Answer = Vec<Row>;
    /// On two cores, 64 connections reading distinct pages of 100 (`bench/cpu-per-request.sh
    /// BIN pg 4 64 2`, in turns): one page per statement 9 414–10 762 pages/s; batches of at
    /// most 16 pages with 2 runners 11 752–12 136, with 4 runners 13 778–14 591 (14 645–14 720
    /// against 6 runners 13 914–14 301, 24 pages and 4 runners 14 158–14 491). Earlier, with the
    /// same wrk options before the script took them as arguments: 32 pages and 4 runners
    /// 14 030–14 220 against 14 260–14 276 for 16 and 4; 8 pages and 8 runners 13 259–13 414.
    const MAX_BATCH: usize = 16;
    const MAX_RUNNERS: usize = 4;

    async fn run(
        client: &tokio_postgres::Client,
        s: &Statements,
        pages: &[Pending<Self>],
    ) -> Result<Vec<Result<Vec<Row>>>> {
        let after = |page: &PageRequest| page.after().map_or(i64::MIN, |a| a.0);
        let limit = |page: &PageRequest| i64::from(page.limit());
        if let [page] = pages {
            let (after, limit) = (after(&page.job), limit(&page.job));
            let rows = client.query(&s.list, &[&after, &limit]).await;
            return Ok(vec![Ok(rows.map_err(classify)?)]);
        }
        let afters: Vec<i64> = pages.iter().map(|p| after(&p.job)).collect();
        let limits: Vec<i64> = pages.iter().map(|p| limit(&p.job)).collect();
        let params: [&(dyn ToSql + Sync); 2] = [&afters, &limits];
        let rows = client
            .query_raw(&s.list_many, params)
            .await
            .map_err(classify)?;
        // Each row goes straight into its page, sized for a full one: no Vec of the whole batch
        // (1 600 rows, moved again at every doubling) and no second move into the pages. A row
        // carries its page's place in the batch, 1-based; a page's rows come in its own order
        // (see `LIST_MANY`).
        let mut split: Vec<Vec<Row>> = pages
            .iter()
            .map(|p| Vec::with_capacity(p.job.limit() as usize))
            .collect();
        let mut rows = std::pin::pin!(rows);
        while let Some(row) = rows.try_next().await.map_err(classify)? {
            let n: i64 = row.get(5);
            let page = usize::try_from(n - 1).ok().and_then(|i| split.get_mut(i));
            page.ok_or_else(|| CoreError::internal(format!("no page {n} in the batch")))?
                .push(row);
        }
        Ok(split.into_iter().map(Ok).collect())
    }
}

/// Gives each returned row to the queued create with its email (the first, if two sent the same
/// one); a create whose email came back with no row was skipped as a duplicate.
fn match_inserted(rows: &[Pending<NewUser>], inserted: &[Row]) -> Vec<Result<User>> {
    let mut results: Vec<Option<Result<User>>> = rows.iter().map(|_| None).collect();
    for row in inserted {
        let email: &str = row.get(2);
        let mine = rows
            .iter()
            .zip(&results)
            .position(|(r, result)| result.is_none() && r.job.email.as_str() == email);
        if let Some(i) = mine {
            results[i] = Some(Ok(user_from(row)));
        }
    }
    rows.iter()
        .zip(results)
        .map(|(r, result)| {
            result.unwrap_or_else(|| Err(CoreError::DuplicateEmail(r.job.email.as_str().into())))
        })
        .collect()
}

async fn insert_one(
    client: &tokio_postgres::Client,
    s: &Statements,
    user: &NewUser,
) -> Result<User> {
    let (name, email) = (user.name.as_str(), user.email.as_str());
    match client.query_one(&s.insert, &[&name, &email]).await {
        Ok(row) => Ok(user_from(&row)),
        Err(e) if is_unique_violation(&e) => Err(CoreError::DuplicateEmail(email.into())),
        Err(e) => Err(classify(e)),
    }
}

/// A row of `id, name, email, created_at, updated_at` (every statement returns these columns),
/// borrowed from the driver's buffer, its timestamps read by `timestamp` without a calendar. One
/// that the JSON cannot hold (`infinity`, which the schema lets through) fails the page.
fn user_ref(row: &Row) -> Result<UserRef<'_>> {
    let at = |i| row.try_get::<_, Timestamp>(i).map_err(CoreError::internal);
    Ok(UserRef {
        id: UserId(row.get(0)),
        name: row.get(1),
        email: row.get(2),
        created_at: at(3)?.0,
        updated_at: at(4)?.0,
    })
}

fn user_from(row: &Row) -> User {
    User {
        id: UserId(row.get(0)),
        name: row.get(1),
        email: row.get(2),
        created_at: row.get(3),
        updated_at: row.get(4),
    }
}

#[async_trait]
impl UserRepository for PgUserRepository {
    /// Queued and inserted together with the creates that arrive meanwhile (see `batch`).
    async fn create(&self, user: &NewUser) -> Result<User> {
        self.queued(&self.creates, user.clone()).await
    }

    /// Read together with the users asked for meanwhile (see `batch`).
    async fn get(&self, id: UserId) -> Result<Option<User>> {
        self.queued(&self.users, id).await
    }

    async fn list(&self, page: PageRequest) -> Result<Vec<User>> {
        Ok(self.list_rows(page).await?.iter().map(user_from).collect())
    }

    /// Written from the rows' own buffers: no `String` per name and email, no `User` per row.
    async fn list_json(&self, page: PageRequest) -> Result<PageJson> {
        let mut writer = PageWriter::new(page);
        for row in &self.list_rows(page.probe()).await? {
            writer.push(user_ref(row)?)?;
        }
        Ok(writer.finish())
    }

    async fn update(&self, id: UserId, patch: &UserPatch) -> Result<Option<User>> {
        let name = patch.name.as_ref().map(|n| n.as_str());
        let email = patch.email.as_ref().map(|e| e.as_str());
        self.deadline(async {
            let mut conn = self.conn().await?;
            let (client, s) = conn.prepared().await.map_err(classify)?;
            let result = client.query_opt(&s.update, &[&id.0, &name, &email]).await;
            conn.settled();
            match result {
                Ok(row) => Ok(row.as_ref().map(user_from)),
                Err(e) if is_unique_violation(&e) => {
                    Err(CoreError::DuplicateEmail(email.unwrap_or_default().into()))
                }
                Err(e) => Err(classify(e)),
            }
        })
        .await
    }

    async fn delete(&self, id: UserId) -> Result<bool> {
        self.deadline(async {
            let mut conn = self.conn().await?;
            let (client, s) = conn.prepared().await.map_err(classify)?;
            let n = client.execute(&s.delete, &[&id.0]).await;
            conn.settled();
            Ok(n.map_err(classify)? == 1)
        })
        .await
    }

    async fn ping(&self) -> Result<()> {
        self.deadline(async {
            let mut conn = self.conn().await?;
            let (client, _) = conn.prepared().await.map_err(classify)?;
            let result = client.simple_query("").await;
            conn.settled();
            result.map(drop).map_err(classify)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::TestPostgres;

    /// A repository with one pooled connection, held by the test while creates queue up behind
    /// it, and the connection itself for the test's own statements.
    async fn one_connection() -> (TestPostgres, PgUserRepository) {
        let server = TestPostgres::start();
        let mut settings = server.fresh_database().await;
        settings.pool_size = 1;
        settings.connection_timeout = Duration::from_secs(10);
        let repo = PgUserRepository::new(settings);
        repo.migrate().await.unwrap();
        (server, repo)
    }

    /// Starts each request, in order, each once the one before is queued on `queue`.
    async fn queue_each<J: Job, T: Send + 'static>(
        queue: &batch::Queue<J>,
        requests: impl IntoIterator<Item = impl Future<Output = T> + Send + 'static>,
    ) -> Vec<tokio::task::JoinHandle<T>> {
        let mut tasks = Vec::new();
        for request in requests {
            let before = queue.queued();
            tasks.push(tokio::spawn(request));
            while queue.queued() == before {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        tasks
    }

    /// A create of each (name, email), not started.
    fn creates(
        repo: &PgUserRepository,
        users: &[(&str, &str)],
    ) -> Vec<impl Future<Output = Result<User>> + Send + 'static> {
        let create = |(name, email): &(&str, &str)| {
            let (repo, user) = (repo.clone(), NewUser::parse(name, email).unwrap());
            async move { repo.create(&user).await }
        };
        users.iter().map(create).collect()
    }

    /// Starts a create for each (name, email), in order: each is queued before the next starts.
    async fn queue_creates(
        repo: &PgUserRepository,
        users: &[(&str, &str)],
    ) -> Vec<tokio::task::JoinHandle<Result<User>>> {
        queue_each(&repo.creates, creates(repo, users)).await
    }

    /// Queues every create while the test holds the one connection, then lets them go: they
    /// are taken together. Their results, in order.
    async fn create_together(repo: &PgUserRepository, users: &[(&str, &str)]) -> Vec<Result<User>> {
        together(repo, &repo.creates, creates(repo, users)).await
    }

    /// Queues every request on `queue` while the test holds the one connection, then lets them
    /// go: they are taken together. Their results, in order.
    async fn together<J: Job, T: Send + 'static>(
        repo: &PgUserRepository,
        queue: &batch::Queue<J>,
        requests: impl IntoIterator<Item = impl Future<Output = T> + Send + 'static>,
    ) -> Vec<T> {
        let held = repo.conn().await.unwrap();
        let tasks = queue_each(queue, requests).await;
        drop(held);
        let mut results = Vec::new();
        for task in tasks {
            results.push(task.await.unwrap());
        }
        results
    }

    async fn stored(repo: &PgUserRepository, sql: &str) -> Vec<Row> {
        let mut conn = repo.conn().await.unwrap();
        let (client, _) = conn.prepared().await.unwrap();
        let rows = client.query(sql, &[]).await.unwrap();
        conn.settled();
        rows
    }

    /// Creates queued while the connection is busy go in one statement (one transaction: one
    /// `now()`), and each gets its own answer: its row, or a duplicate when its email was taken
    /// before or by an earlier create of the same batch (compared as the unique index does).
    #[tokio::test(flavor = "multi_thread")]
    async fn creates_that_queue_together_are_inserted_by_one_statement_each_with_its_answer() {
        let (_server, repo) = one_connection().await;
        let taken = repo
            .create(&NewUser::parse("Taken", "taken@example.com").unwrap())
            .await
            .unwrap();
        let users = [
            ("A", "a@example.com"),
            ("B", "b@example.com"),
            ("Taken again", "TAKEN@example.com"),
            ("A again", "A@Example.com"),
            ("É", "é@example.com"),
            ("É upper", "É@example.com"),
            ("C", "c@example.com"),
        ];
        let results = create_together(&repo, &users).await;
        assert_eq!(
            repo.batch_counts(),
            BatchStats {
                creates: BatchCounts {
                    batches: 2,
                    jobs: 8
                },
                ..BatchStats::default()
            },
            "the lone create, then the seven together"
        );

        for (i, ((name, email), result)) in users.iter().zip(&results).enumerate() {
            let duplicate = [2, 3].contains(&i);
            match result {
                Ok(user) if !duplicate => {
                    assert_eq!((user.name.as_str(), user.email.as_str()), (*name, *email));
                }
                Err(CoreError::DuplicateEmail(e)) if duplicate => assert_eq!(e, email),
                other => panic!("{name} <{email}>: {other:?}"),
            }
        }
        let created: Vec<&User> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
        assert_eq!(created.len(), 5);
        assert!(
            created
                .iter()
                .all(|u| u.created_at == created[0].created_at),
            "one transaction: {created:?}"
        );
        assert!(created[0].created_at > taken.created_at);
        let rows = stored(&repo, "SELECT count(*) FROM users").await;
        assert_eq!(rows[0].get::<_, i64>(0), 6);
        for user in created {
            assert_eq!(repo.get(user.id).await.unwrap().as_ref(), Some(user));
        }
    }

    /// A row that breaks a rule of the database's the validation does not know fails alone: its
    /// batch is retried row by row and the others are inserted.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_row_the_database_refuses_fails_alone_and_the_rest_of_its_batch_is_inserted() {
        let (_server, repo) = one_connection().await;
        stored(
            &repo,
            "ALTER TABLE users ADD CONSTRAINT no_poison CHECK (name <> 'Poison')",
        )
        .await;
        let users = [
            ("A", "a@example.com"),
            ("Poison", "p@example.com"),
            ("B", "b@example.com"),
        ];
        let results = create_together(&repo, &users).await;
        assert!(results[0].is_ok(), "{:?}", results[0]);
        assert!(
            matches!(results[1], Err(CoreError::Internal(_))),
            "{:?}",
            results[1]
        );
        assert!(results[2].is_ok(), "{:?}", results[2]);
        let rows = stored(&repo, "SELECT name FROM users ORDER BY id").await;
        let names: Vec<&str> = rows.iter().map(|r| r.get(0)).collect();
        assert_eq!(names, ["A", "B"]);
    }

    /// Two batches in flight that share emails take them in one order (the unique index's), so
    /// neither waits for the other while holding what the other waits for. Here the first batch
    /// is held up by another transaction's uncommitted `m0`, the second arrives meanwhile with
    /// `m2` and `m1`; in queued order the first would hold `m1` and wait for `m2` while the second
    /// held `m2` and waited for `m1`, and PostgreSQL would fail one of them (after
    /// `deadlock_timeout`), its rows then coming back as duplicates of the other's.
    #[tokio::test(flavor = "multi_thread")]
    async fn batches_in_flight_take_their_emails_in_one_order_and_do_not_deadlock() {
        let server = TestPostgres::start();
        let mut settings = server.fresh_database().await;
        settings.pool_size = 2;
        settings.connection_timeout = Duration::from_secs(10);
        settings.statement_timeout = Duration::from_secs(8);
        let repo = PgUserRepository::new(settings.clone());
        repo.migrate().await.unwrap();
        let other = TestPostgres::client(&settings).await;
        other
            .batch_execute(
                "BEGIN; INSERT INTO users (name, email) VALUES ('Other', 'm0@example.com')",
            )
            .await
            .unwrap();

        let watcher = TestPostgres::client(&settings).await;
        let batches_waiting_for_a_lock = || async {
            let row = watcher
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity \
                     WHERE wait_event_type = 'Lock' AND query LIKE 'INSERT INTO users%unnest%'",
                    &[],
                )
                .await
                .unwrap();
            row.get::<_, i64>(0)
        };
        // Polls until `done`, for at most 10 s.
        async fn until<F: Future<Output = bool>>(what: &str, mut done: impl FnMut() -> F) {
            for _ in 0..1000 {
                if done().await {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            panic!("not within 10 s: {what}");
        }

        let (first_conn, second_conn) = (repo.conn().await.unwrap(), repo.conn().await.unwrap());
        let first = queue_creates(
            &repo,
            &[
                ("F1", "m1@example.com"),
                ("F0", "m0@example.com"),
                ("F2", "m2@example.com"),
            ],
        )
        .await;
        drop(first_conn);
        until("the first batch waits for m0", || async {
            batches_waiting_for_a_lock().await == 1
        })
        .await;
        let second =
            queue_creates(&repo, &[("S2", "m2@example.com"), ("S1", "m1@example.com")]).await;
        drop(second_conn);
        // Done, or (in queued order) waiting for the first batch's m1.
        until("the second batch is done or waits", || async {
            second.iter().all(|t| t.is_finished()) || batches_waiting_for_a_lock().await == 2
        })
        .await;
        other.batch_execute("ROLLBACK").await.unwrap();
        let mut answers = Vec::new();
        for task in second.into_iter().chain(first) {
            answers.push(task.await.unwrap());
        }

        let outcome: Vec<String> = answers
            .iter()
            .map(|a| match a {
                Ok(user) => user.name.as_str().to_owned(),
                Err(CoreError::DuplicateEmail(email)) => format!("duplicate {email}"),
                Err(e) => format!("error {e}"),
            })
            .collect();
        assert_eq!(
            outcome,
            [
                "S2",
                "S1",
                "duplicate m1@example.com",
                "F0",
                "duplicate m2@example.com"
            ]
        );
    }

    /// A create abandoned while queued (its request gave up: a deadline, a client gone) is not
    /// inserted later behind its caller's back.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_create_abandoned_while_queued_is_not_inserted() {
        let (_server, repo) = one_connection().await;
        let held = repo.conn().await.unwrap();
        let tasks = queue_creates(&repo, &[("Gone", "gone@example.com")]).await;
        tasks[0].abort();
        let kept = queue_creates(&repo, &[("Kept", "kept@example.com")]).await;
        drop(held);
        kept.into_iter().next().unwrap().await.unwrap().unwrap();
        let rows = stored(&repo, "SELECT name FROM users").await;
        let names: Vec<&str> = rows.iter().map(|r| r.get(0)).collect();
        assert_eq!(names, ["Kept"]);
    }

    /// Pages asked for while the connection is busy are read by one statement, and each gets
    /// its own rows: its `after`, its `limit`, in id order, none past the end of the table.
    #[tokio::test(flavor = "multi_thread")]
    async fn pages_asked_for_together_are_read_by_one_statement_each_with_its_rows() {
        let (_server, repo) = one_connection().await;
        stored(
            &repo,
            "INSERT INTO users (name, email) \
             SELECT 'u' || g, 'u' || g || '@example.com' FROM generate_series(1, 300) g",
        )
        .await;
        // (limit, after): the first page, pages that overlap, one that reaches past the end of
        // the table and one entirely past it.
        let asked = [
            (100, None),
            (3, Some(10)),
            (5, Some(8)),
            (50, Some(280)),
            (7, Some(300)),
        ];
        let pages = asked.map(|(limit, after)| {
            let repo = repo.clone();
            let page = PageRequest::new(Some(limit), after).unwrap();
            async move { repo.list(page).await }
        });
        let read: Vec<Vec<i64>> = together(&repo, &repo.pages, pages)
            .await
            .into_iter()
            .map(|page| page.unwrap().iter().map(|u| u.id.0).collect())
            .collect();

        let expected: Vec<Vec<i64>> = asked
            .iter()
            .map(|&(limit, after)| {
                let first = after.unwrap_or(0) + 1;
                (first..=300).take(limit as usize).collect()
            })
            .collect();
        assert_eq!(read, expected);
        assert_eq!(
            repo.batch_counts().pages,
            BatchCounts {
                batches: 1,
                jobs: 5
            }
        );
        assert_eq!(
            (
                executions(&repo, crate::pool::LIST).await,
                executions(&repo, crate::pool::LIST_MANY).await
            ),
            (0, 1),
            "(executions of the one-page statement, of the many-page statement)"
        );
    }

    /// Users asked for while the connection is busy are read by one statement, and each request
    /// gets its own: the user with its id, `None` for an id with no user, and the same user for
    /// two requests of one id.
    #[tokio::test(flavor = "multi_thread")]
    async fn users_asked_for_together_are_read_by_one_statement_each_with_its_own() {
        let (_server, repo) = one_connection().await;
        let ada = repo
            .create(&NewUser::parse("Ada", "ada@example.com").unwrap())
            .await
            .unwrap();
        let bob = repo
            .create(&NewUser::parse("Bob", "bob@example.com").unwrap())
            .await
            .unwrap();
        let asked = [bob.id, UserId(bob.id.0 + 100), ada.id, bob.id];
        let gets = asked.map(|id| {
            let repo = repo.clone();
            async move { repo.get(id).await }
        });
        let read: Vec<Option<User>> = together(&repo, &repo.users, gets)
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();

        assert_eq!(read, [Some(bob.clone()), None, Some(ada), Some(bob)]);
        assert_eq!(
            (
                executions(&repo, crate::pool::GET).await,
                executions(&repo, crate::pool::GET_MANY).await
            ),
            (0, 1),
            "(executions of the one-user statement, of the many-user statement)"
        );
    }

    /// How often this prepared statement ran with its generic plan and with a custom one, on
    /// the repository's one connection (every execution is one or the other).
    async fn plans(repo: &PgUserRepository, statement: &str) -> (i64, i64) {
        let mut conn = repo.conn().await.unwrap();
        let (client, _) = conn.prepared().await.unwrap();
        let row = client
            .query_one(
                "SELECT generic_plans, custom_plans FROM pg_prepared_statements \
                 WHERE statement = $1",
                &[&statement],
            )
            .await
            .unwrap();
        conn.settled();
        (row.get(0), row.get(1))
    }

    async fn executions(repo: &PgUserRepository, statement: &str) -> i64 {
        let (generic, custom) = plans(repo, statement).await;
        generic + custom
    }

    /// Without `plan_cache_mode`, PostgreSQL re-plans the page statement on every execution
    /// (`custom_plans` counts up); with it, the plan made once is reused. (The two counters exist
    /// from PostgreSQL 14; the test support runs the machine's, Debian's 15.)
    #[tokio::test]
    async fn the_page_statement_is_planned_once_not_per_request() {
        let server = TestPostgres::start();
        let mut settings = server.fresh_database().await;
        settings.pool_size = 1;
        let repo = PgUserRepository::new(settings);
        repo.migrate().await.unwrap();
        let mut conn = repo.conn().await.unwrap();
        let (client, _) = conn.prepared().await.unwrap();
        // Enough rows that a custom plan for `LIMIT 101` looks cheaper than the generic one.
        client
            .execute(
                "INSERT INTO users (name, email) \
                 SELECT 'u' || g, 'u' || g || '@example.com' FROM generate_series(1, 20000) g",
                &[],
            )
            .await
            .unwrap();
        conn.settled();
        drop(conn);
        for after in 0..10 {
            let page = PageRequest::new(Some(100), Some(after)).unwrap();
            repo.list_json(page).await.unwrap();
        }
        assert_eq!(
            plans(&repo, crate::pool::LIST).await,
            (10, 0),
            "(generic plans, custom plans)"
        );
    }

    /// PostgreSQL JIT-compiles a statement whose estimated cost passes `jit_above_cost`; the
    /// batched page statement's generic plan does from about 10^7 users on, and compiling took
    /// milliseconds per execution. `jit_above_cost = 0` on the database stands for such a table.
    #[tokio::test]
    async fn the_batched_page_statement_is_never_jit_compiled() {
        let server = TestPostgres::start();
        let settings = server.fresh_database().await;
        let (admin, connection) = settings
            .config
            .connect(tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        let jit: bool = admin
            .query_one("SELECT pg_jit_available()", &[])
            .await
            .unwrap()
            .get(0);
        assert!(
            jit,
            "this PostgreSQL has no JIT: the test would prove nothing"
        );
        admin
            .batch_execute(
                "DO $$ BEGIN EXECUTE format('ALTER DATABASE %I SET jit_above_cost = 0', \
                 current_database()); END $$",
            )
            .await
            .unwrap();
        let repo = PgUserRepository::new(settings);
        repo.migrate().await.unwrap();
        let mut conn = repo.conn().await.unwrap();
        let (client, _) = conn.prepared().await.unwrap();
        let plan: Vec<String> = client
            .query(
                &format!("EXPLAIN (ANALYZE) {}", crate::pool::LIST_MANY),
                &[&vec![0_i64, 10], &vec![101_i64, 101]],
            )
            .await
            .unwrap()
            .iter()
            .map(|row| row.get(0))
            .collect();
        conn.settled();
        assert!(
            !plan.iter().any(|line| line.starts_with("JIT:")),
            "{}",
            plan.join("\n")
        );
    }

    /// `bench/pg-plan.sh` explains a copy of the batched page statement (a shell script cannot
    /// take it from here): the copy must stay the statement the server runs.
    #[test]
    fn bench_pg_plan_explains_the_statement_the_server_runs() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../bench/pg-plan.sh");
        let script = std::fs::read_to_string(path).unwrap();
        let words = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
        let script = words(&script.replace("\\$", "$"));
        let statement = words(crate::pool::LIST_MANY);
        assert!(
            script.contains(&statement),
            "{path} no longer holds the statement:\n{statement}"
        );
    }

    /// A job whose statement fails with an I/O error, standing for a driver error: what a failed
    /// batch gives each of its requests.
    struct Failing;

    impl Job for Failing {
        type Answer = ();
        const MAX_BATCH: usize = 8;
        const MAX_RUNNERS: usize = 1;

        async fn run(
            _: &tokio_postgres::Client,
            _: &Statements,
            _: &[Pending<Self>],
        ) -> Result<Vec<Result<()>>> {
            Err(CoreError::store_unavailable(std::io::Error::other(
                "the statement failed",
            )))
        }
    }

    /// A job alone in a failed batch gets the error itself, its source included (what the logs
    /// and the error's chain show); jobs of a larger batch each get a copy of its message.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_failed_batch_gives_a_lone_job_its_error_and_each_of_many_a_copy() {
        let (_server, repo) = one_connection().await;
        let queue = Arc::new(batch::Queue::<Failing>::default());
        let from_io = |error: &CoreError| match error {
            CoreError::StoreUnavailable(source) => {
                source.downcast_ref::<std::io::Error>().is_some()
            }
            other => panic!("not StoreUnavailable: {other:?}"),
        };

        let alone = repo.queued(&queue, Failing).await.unwrap_err();
        assert!(from_io(&alone), "{alone:?}");

        let request = || {
            let (repo, queue) = (repo.clone(), queue.clone());
            async move { repo.queued(&queue, Failing).await }
        };
        let many = together(&repo, &queue, [request(), request()]).await;
        for error in many.iter().map(|r| r.as_ref().unwrap_err()) {
            assert!(!from_io(error), "{error:?}");
            assert_eq!(error.to_string(), alone.to_string());
        }
    }
}
