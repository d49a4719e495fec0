//! [`UserRepository`] on PostgreSQL.

use std::time::Duration;

use async_trait::async_trait;
use bb8::{Pool, PooledConnection, RunError};
use tokio_postgres::Row;
use userstack_core::{
    Error as CoreError, NewUser, PageRequest, Result, User, UserId, UserPatch, UserRepository,
};

use crate::error::{Error, classify, is_unique_violation};
use crate::migrations;
use crate::pool::Manager;

/// How the adapter connects. `Default` matches the original deployment: `db:5432`, database
/// `mydb`, user `postgres`, password `password`.
#[derive(Debug, Clone)]
pub struct PgSettings {
    pub config: tokio_postgres::Config,
    /// Most connections the pool opens.
    pub pool_size: u32,
    /// Longest wait for a connection (checking one out, or opening one); past it the operation
    /// fails with `StoreUnavailable`.
    pub connection_timeout: Duration,
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
        }
    }
}

/// Pool occupancy, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolState {
    pub connections: u32,
    pub idle_connections: u32,
}

/// Users in PostgreSQL, through a bb8 pool.
#[derive(Debug, Clone)]
pub struct PgUserRepository {
    pool: Pool<Manager>,
    settings: PgSettings,
}

impl PgUserRepository {
    /// Builds the pool without connecting: connections are opened on demand, so this succeeds
    /// while the database is still starting (see [`PgUserRepository::migrate`] to wait for it).
    pub fn new(settings: PgSettings) -> Self {
        let PgSettings {
            mut config,
            pool_size,
            connection_timeout,
        } = settings;
        config.connect_timeout(connection_timeout);
        let pool = Pool::builder()
            .max_size(pool_size)
            .min_idle(Some(pool_size.min(4)))
            .connection_timeout(connection_timeout)
            // Our is_valid is a local check, not a round trip; see Manager::is_valid.
            .test_on_check_out(true)
            .build_unchecked(Manager::new(config.clone()));
        Self {
            pool,
            settings: PgSettings {
                config,
                pool_size,
                connection_timeout,
            },
        }
    }

    /// Applies pending schema migrations on a dedicated connection; safe to run from several
    /// replicas at once. Returns the versions applied now.
    pub async fn migrate(&self) -> std::result::Result<Vec<i32>, Error> {
        let (mut client, connection) = self
            .settings
            .config
            .connect(tokio_postgres::NoTls)
            .await
            .map_err(Error::Connect)?;
        let driver = tokio::spawn(connection);
        let result = migrations::migrate(&mut client).await;
        drop(client);
        let _ = driver.await;
        result
    }

    pub fn pool_state(&self) -> PoolState {
        let state = self.pool.state();
        PoolState {
            connections: state.connections,
            idle_connections: state.idle_connections,
        }
    }

    async fn conn(&self) -> Result<PooledConnection<'_, Manager>> {
        self.pool.get().await.map_err(|e| match e {
            RunError::User(e) => classify(e),
            RunError::TimedOut => {
                CoreError::store_unavailable("timed out waiting for a database connection")
            }
        })
    }
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
    async fn create(&self, user: &NewUser) -> Result<User> {
        let (name, email) = (user.name.as_str(), user.email.as_str());
        let mut conn = self.conn().await?;
        let (client, s) = conn.prepared().await.map_err(classify)?;
        match client.query_one(&s.insert, &[&name, &email]).await {
            Ok(row) => Ok(user_from(&row)),
            Err(e) if is_unique_violation(&e) => Err(CoreError::DuplicateEmail(email.into())),
            Err(e) => Err(classify(e)),
        }
    }

    async fn get(&self, id: UserId) -> Result<Option<User>> {
        let mut conn = self.conn().await?;
        let (client, s) = conn.prepared().await.map_err(classify)?;
        let row = client.query_opt(&s.get, &[&id.0]).await.map_err(classify)?;
        Ok(row.as_ref().map(user_from))
    }

    async fn list(&self, page: PageRequest) -> Result<Vec<User>> {
        let after = page.after().map_or(i64::MIN, |a| a.0);
        let limit = i64::from(page.limit());
        let mut conn = self.conn().await?;
        let (client, s) = conn.prepared().await.map_err(classify)?;
        let rows = client
            .query(&s.list, &[&after, &limit])
            .await
            .map_err(classify)?;
        Ok(rows.iter().map(user_from).collect())
    }

    async fn update(&self, id: UserId, patch: &UserPatch) -> Result<Option<User>> {
        let name = patch.name.as_ref().map(|n| n.as_str());
        let email = patch.email.as_ref().map(|e| e.as_str());
        let mut conn = self.conn().await?;
        let (client, s) = conn.prepared().await.map_err(classify)?;
        match client.query_opt(&s.update, &[&id.0, &name, &email]).await {
            Ok(row) => Ok(row.as_ref().map(user_from)),
            Err(e) if is_unique_violation(&e) => {
                Err(CoreError::DuplicateEmail(email.unwrap_or_default().into()))
            }
            Err(e) => Err(classify(e)),
        }
    }

    async fn delete(&self, id: UserId) -> Result<bool> {
        let mut conn = self.conn().await?;
        let (client, s) = conn.prepared().await.map_err(classify)?;
        let n = client
            .execute(&s.delete, &[&id.0])
            .await
            .map_err(classify)?;
        Ok(n == 1)
    }

    async fn ping(&self) -> Result<()> {
        let mut conn = self.conn().await?;
        let (client, _) = conn.prepared().await.map_err(classify)?;
        client.simple_query("").await.map_err(classify)?;
        Ok(())
    }
}
