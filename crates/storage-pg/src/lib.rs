//! PostgreSQL adapter of userstack: [`PgUserRepository`] implements
//! [`userstack_core::UserRepository`] on a bb8 pool of bb8-postgres connections.
//!
//! - Statements are prepared once per connection and reused.
//! - Creates that arrive together are inserted by one statement, and users and pages asked for
//!   together are read by one, each request still answered on its own.
//! - Checking a connection out costs no round trip; dead connections (after a database restart)
//!   are still weeded out on check-out.
//! - The schema is embedded ([`migrations::MIGRATIONS`]); [`PgUserRepository::migrate`] applies
//!   what is missing, safely from several replicas at once.
//!
//! ```no_run
//! use userstack_core::{NewUser, UserRepository};
//! use userstack_storage_pg::{PgSettings, PgUserRepository};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let mut settings = PgSettings::default(); // db:5432, mydb, postgres/password
//! settings.config.host("localhost");
//! let repo = PgUserRepository::new(settings);
//! repo.migrate().await?;
//! let ada = repo.create(&NewUser::parse("Ada", "ada@example.com")?).await?;
//! assert_eq!(repo.get(ada.id).await?, Some(ada));
//! # Ok(())
//! # }
//! ```

mod batch;
mod error;
pub mod migrations;
mod pool;
mod repository;
#[cfg(feature = "testing")]
pub mod testing;
mod timestamp;

pub use batch::BatchCounts;
pub use error::Error;
pub use repository::{BatchStats, PgSettings, PgUserRepository, PoolState};
