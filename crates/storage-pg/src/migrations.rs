//! Schema migrations, embedded in the binary and applied in order, once.
//!
//! Several replicas may start at the same moment; a session-level advisory lock makes them take
//! turns, and each migration runs in its own transaction together with its bookkeeping row, so a
//! failure leaves the schema at the previous version.

use std::time::Duration;

use tokio_postgres::Client;

use crate::error::Error;

/// `(version, name, sql)`, in order. Append only: never edit a released migration.
pub const MIGRATIONS: &[(i32, &str, &str)] = &[
    (
        1,
        "create_users",
        include_str!("../migrations/0001_create_users.sql"),
    ),
    (
        2,
        "email_ascii_case",
        include_str!("../migrations/0002_email_ascii_case.sql"),
    ),
];

/// An arbitrary constant naming this application's advisory lock ("userstck" in ASCII).
const LOCK_KEY: i64 = 0x7573_6572_7374_636b;

/// Applies the migrations `client`'s database lacks; returns the versions applied now.
///
/// Waiting for another replica's migrations is unbounded (they finish, or their session dies and
/// releases the lock), and so are the migrations' statements (a schema change may take long on
/// a big table); waiting for a table lock is bounded by `lock_timeout`, because a schema change
/// queued behind a long transaction blocks every query on that table while it waits.
pub async fn migrate(client: &mut Client, lock_timeout: Duration) -> Result<Vec<i32>, Error> {
    client
        .batch_execute("SET statement_timeout = 0; SET lock_timeout = 0")
        .await
        .map_err(Error::Query)?;
    client
        .execute("SELECT pg_advisory_lock($1)", &[&LOCK_KEY])
        .await
        .map_err(Error::Query)?;
    client
        .batch_execute(&format!(
            "SET lock_timeout = {}",
            lock_timeout.as_millis().max(1)
        ))
        .await
        .map_err(Error::Query)?;
    let result = apply_pending(client).await;
    // Unlock even after a failure; if this fails too the lock dies with the session anyway.
    let _ = client
        .execute("SELECT pg_advisory_unlock($1)", &[&LOCK_KEY])
        .await;
    result
}

async fn apply_pending(client: &mut Client) -> Result<Vec<i32>, Error> {
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS userstack_migrations (
                 version    INTEGER PRIMARY KEY,
                 name       TEXT NOT NULL,
                 applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
             )",
        )
        .await
        .map_err(Error::Query)?;
    let applied: Vec<i32> = client
        .query(
            "SELECT version FROM userstack_migrations ORDER BY version",
            &[],
        )
        .await
        .map_err(Error::Query)?
        .iter()
        .map(|row| row.get(0))
        .collect();
    if let Some(&unknown) = applied
        .iter()
        .find(|v| !MIGRATIONS.iter().any(|(known, _, _)| known == *v))
    {
        return Err(Error::UnknownMigration(unknown));
    }

    let mut done = Vec::new();
    for &(version, name, sql) in MIGRATIONS {
        if applied.contains(&version) {
            continue;
        }
        let failed = |source| Error::Migration {
            version,
            name,
            source,
        };
        let tx = client.transaction().await.map_err(failed)?;
        tx.batch_execute(sql).await.map_err(failed)?;
        tx.execute(
            "INSERT INTO userstack_migrations (version, name) VALUES ($1, $2)",
            &[&version, &name],
        )
        .await
        .map_err(failed)?;
        tx.commit().await.map_err(failed)?;
        tracing::info!(version, name, "applied migration");
        done.push(version);
    }
    Ok(done)
}
