//! The connection pool: bb8 over bb8-postgres, with this crate's statements prepared once per
//! connection.

use bb8::ManageConnection;
use bb8_postgres::PostgresConnectionManager;
use tokio_postgres::{Client, NoTls, Statement};

/// Every statement the repository runs. Prepared when a connection is first used and reused for
/// its lifetime, so a request costs one round trip (bind + execute), not two (parse, then run).
#[derive(Debug)]
pub(crate) struct Statements {
    pub(crate) insert: Statement,
    pub(crate) get: Statement,
    pub(crate) list: Statement,
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
const GET: &str = concat!("SELECT ", columns!(), " FROM users WHERE id = $1");
const LIST: &str = concat!(
    "SELECT ",
    columns!(),
    " FROM users WHERE id > $1 ORDER BY id LIMIT $2"
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
        let (insert, get, list, update, delete) = tokio::try_join!(
            client.prepare(INSERT),
            client.prepare(GET),
            client.prepare(LIST),
            client.prepare(UPDATE),
            client.prepare(DELETE),
        )?;
        Ok(Self {
            insert,
            get,
            list,
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
}

impl PgConnection {
    /// The prepared statements, preparing them on first use. Lazily, because a pool may open a
    /// connection before the migrations have created the tables.
    pub(crate) async fn prepared(
        &mut self,
    ) -> Result<(&Client, &Statements), tokio_postgres::Error> {
        if self.statements.is_none() {
            self.statements = Some(Statements::prepare(&self.client).await?);
        }
        let statements = self.statements.as_ref().expect("prepared above");
        Ok((&self.client, statements))
    }
}

/// bb8-postgres's manager plus statement preparation and a free validity check.
#[derive(Debug)]
pub(crate) struct Manager {
    inner: PostgresConnectionManager<NoTls>,
}

impl Manager {
    pub(crate) fn new(config: tokio_postgres::Config) -> Self {
        Self {
            inner: PostgresConnectionManager::new(config, NoTls),
        }
    }
}

impl ManageConnection for Manager {
    type Connection = PgConnection;
    type Error = tokio_postgres::Error;

    async fn connect(&self) -> Result<PgConnection, Self::Error> {
        Ok(PgConnection {
            client: self.inner.connect().await?,
            statements: None,
        })
    }

    /// Runs on every check-out (`test_on_check_out`), so it must not cost a round trip: it only
    /// asks whether the driver has seen the socket close, which after a database restart weeds
    /// out every dead connection before a request gets it.
    async fn is_valid(&self, conn: &mut PgConnection) -> Result<(), Self::Error> {
        if conn.client.is_closed() {
            // `simple_query` on a closed client fails at once with the driver's "closed" error.
            conn.client.simple_query("").await?;
        }
        Ok(())
    }

    fn has_broken(&self, conn: &mut PgConnection) -> bool {
        conn.client.is_closed()
    }
}
