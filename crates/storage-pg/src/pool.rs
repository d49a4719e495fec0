//! The connection pool: bb8 over bb8-postgres, with this crate's statements prepared once per
//! connection.

use std::time::Duration;

use bb8::ManageConnection;
use bb8_postgres::PostgresConnectionManager;
use tokio_postgres::{Client, NoTls, Statement};
use userstack_core::Error as CoreError;

use crate::error::classify;

/// Every statement the repository runs. Prepared when a connection is first used and reused for
/// its lifetime, so a request costs one round trip (bind + execute), not two (parse, then run).
#[derive(Debug)]
pub(crate) struct Statements {
    pub(crate) insert: Statement,
    pub(crate) insert_many: Statement,
    pub(crate) get: Statement,
    pub(crate) get_many: Statement,
    pub(crate) list: Statement,
    pub(crate) list_many: Statement,
    pub(crate) update: Statement,
    pub(crate) delete: Statement,
}

macro_rules! columns {
    () => {
        "id, name, email, created_at, updated_at"
    };
}
const INSERT: &str = concat!(
    "INSERT INTO users (name, email) VALUES ($1, $2) RETURNING ",
    columns!()
);
// Several creates' rows in one statement (see `batch`). A row whose email is taken (by an earlier
// row of the batch too) is skipped, not an error: the others must still be inserted, and the
// skipped one is known by its email's absence from what is returned. Rows go in the order of the
// unique index's key, then the order queued: a row waits for an uncommitted row with its key, so
// two batches in flight taking keys in different orders could each wait for the other (a
// deadlock, broken by PostgreSQL after `deadlock_timeout` by failing one of them).
const INSERT_MANY: &str = concat!(
    "INSERT INTO users (name, email) ",
    "SELECT name, email FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS r(name, email, n) ",
    "ORDER BY lower(email COLLATE \"C\"), n ON CONFLICT DO NOTHING RETURNING ",
    columns!()
);
pub(crate) const GET: &str = concat!("SELECT ", columns!(), " FROM users WHERE id = $1");
// Several requests' users in one statement (see `batch`), matched back by id.
pub(crate) const GET_MANY: &str = concat!(
    "SELECT ",
    columns!(),
    " FROM users WHERE id = ANY($1::int8[])"
);
pub(crate) const LIST: &str = concat!(
    "SELECT ",
    columns!(),
    " FROM users WHERE id > $1 ORDER BY id LIMIT $2"
);
// Several requests' pages in one statement (see `batch`): each page is `LIST` for one (after,
// limit) pair, its rows tagged with the pair's place `n`. The nested loop over the pairs emits
// each page's rows as its index scan returns them, in id order; an `ORDER BY n, id` would add a
// sort of every row of the batch for an order the plan already gives.
pub(crate) const LIST_MANY: &str = concat!(
    "SELECT u.id, u.name, u.email, u.created_at, u.updated_at, r.n ",
    "FROM unnest($1::int8[], $2::int8[]) WITH ORDINALITY AS r(after, lim, n) ",
    "CROSS JOIN LATERAL (SELECT ",
    columns!(),
    " FROM users WHERE id > r.after ORDER BY id LIMIT r.lim) u"
);
// clock_timestamp(), not now(): now() is the transaction's start, which two quick updates share.
const UPDATE: &str = concat!(
    "UPDATE users SET name = COALESCE($2, name), email = COALESCE($3, email), ",
    "updated_at = clock_timestamp() WHERE id = $1 RETURNING ",
    columns!()
);
const DELETE: &str = "DELETE FROM users WHERE id = $1";

impl Statements {
    async fn prepare(client: &Client) -> Result<Self, tokio_postgres::Error> {
        // Issued together: tokio-postgres pipelines them over the one connection.
        let (insert, insert_many, get, get_many, list, list_many, update, delete) = tokio::try_join!(
            client.prepare(INSERT),
            client.prepare(INSERT_MANY),
            client.prepare(GET),
            client.prepare(GET_MANY),
            client.prepare(LIST),
            client.prepare(LIST_MANY),
            client.prepare(UPDATE),
            client.prepare(DELETE),
        )?;
        Ok(Self {
            insert,
            insert_many,
            get,
            get_many,
            list,
            list_many,
            update,
            delete,
        })
    }
}

/// A pooled connection and its prepared statements.
#[derive(Debug)]
pub(crate) struct PgConnection {
    client: Client,
    statements: Option<Statements>,
    /// Set while a statement is in flight. Still set when the connection comes back to the pool
    /// means its operation was abandoned mid-statement (its deadline passed): the server may never
    /// answer, or answer late, so the connection is discarded rather than handed out again.
    in_statement: bool,
}

impl PgConnection {
    /// The prepared statements, preparing them on first use (lazily, because a pool may open a
    /// connection before the migrations have created the tables). Marks a statement in flight
    /// until [`PgConnection::settled`].
    pub(crate) async fn prepared(
        &mut self,
    ) -> Result<(&Client, &Statements), tokio_postgres::Error> {
        self.in_statement = true;
        if self.statements.is_none() {
            self.statements = Some(Statements::prepare(&self.client).await?);
        }
        let statements = self.statements.as_ref().expect("prepared above");
        Ok((&self.client, statements))
    }

    /// The statement's answer has arrived (success or error): the connection may be reused.
    pub(crate) fn settled(&mut self) {
        self.in_statement = false;
    }
}

/// bb8-postgres's manager plus statement preparation, a deadline on connecting, and a free
/// validity check.
#[derive(Debug)]
pub(crate) struct Manager {
    inner: PostgresConnectionManager<NoTls>,
    connect_timeout: Duration,
}

impl Manager {
    /// `connect_timeout` bounds the whole connection set-up, handshake included: the driver's own
    /// `connect_timeout` covers only the TCP connect, and a frozen server accepts TCP connections
    /// (the kernel does) but never finishes the handshake.
    pub(crate) fn new(config: tokio_postgres::Config, connect_timeout: Duration) -> Self {
        Self {
            inner: PostgresConnectionManager::new(config, NoTls),
            connect_timeout,
        }
    }
}

impl ManageConnection for Manager {
    type Connection = PgConnection;
    type Error = CoreError;

    async fn connect(&self) -> Result<PgConnection, Self::Error> {
        let client = tokio::time::timeout(self.connect_timeout, self.inner.connect())
            .await
            .map_err(|_| {
                CoreError::store_unavailable(format!(
                    "connecting to PostgreSQL took longer than {:?}",
                    self.connect_timeout
                ))
            })?
            .map_err(classify)?;
        Ok(PgConnection {
            client,
            statements: None,
            in_statement: false,
        })
    }

    /// Runs on every check-out (`test_on_check_out`), so it must not cost a round trip: it only
    /// asks whether the driver has seen the socket close, which after a database restart weeds
    /// out every dead connection before a request gets it.
    async fn is_valid(&self, conn: &mut PgConnection) -> Result<(), Self::Error> {
        if conn.client.is_closed() {
            return Err(CoreError::store_unavailable("the connection is closed"));
        }
        Ok(())
    }

    fn has_broken(&self, conn: &mut PgConnection) -> bool {
        conn.client.is_closed() || conn.in_statement
    }
}
