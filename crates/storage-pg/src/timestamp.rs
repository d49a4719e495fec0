//! `timestamptz` read as PostgreSQL sends it: microseconds since 2000-01-01 UTC, moved to the Unix
//! epoch with no calendar. The driver's own decoding (into `time`'s types) works out a date per
//! timestamp, and writing the JSON works it out again; a page has 200 of them.

use std::error::Error;

use tokio_postgres::types::{FromSql, Type};
use userstack_core::json::UnixTime;

/// Microseconds from 1970-01-01 to 2000-01-01, PostgreSQL's epoch.
const POSTGRES_EPOCH_MICROS: i64 = 946_684_800_000_000;

/// A `timestamptz` column, for [`userstack_core::json::UserRef`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Timestamp(pub(crate) UnixTime);

impl<'a> FromSql<'a> for Timestamp {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn Error + Sync + Send>> {
        let micros = i64::from_be_bytes(raw.try_into()?);
        // `infinity` (i64::MAX) overflows here; `-infinity` (i64::MIN) fits, as every finite value
        // does, and is refused when written (RFC 3339 has no year before 0).
        let unix = micros
            .checked_add(POSTGRES_EPOCH_MICROS)
            .ok_or("timestamp out of range")?;
        Ok(Self(UnixTime::from_micros(unix)))
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::TIMESTAMPTZ
    }
}

#[cfg(test)]
mod tests {
    use time::OffsetDateTime;
    use userstack_core::json::{self, UserRef};
    use userstack_core::user::UserId;

    use super::*;
    use crate::testing::TestPostgres;

    fn user_at(at: UnixTime) -> UserRef<'static> {
        UserRef {
            id: UserId(1),
            name: "n",
            email: "e",
            created_at: at,
            updated_at: at,
        }
    }

    /// The page's bytes from our decoding and from the driver's: equal at the ends of what
    /// PostgreSQL and RFC 3339 can hold, around both epochs and on leap days.
    #[tokio::test]
    async fn reads_what_the_drivers_own_decoding_reads() {
        let server = TestPostgres::start();
        let client = TestPostgres::client(&server.fresh_database().await).await;
        let rows = client
            .query(
                "SELECT t::timestamptz FROM unnest(ARRAY['0001-01-01 00:00:00+00', \
                 '1969-12-31 23:59:59.999999+00', '1970-01-01 00:00:00+00', \
                 '1999-12-31 23:59:59.999999+00', '2000-01-01 00:00:00+00', \
                 '2000-02-29 12:00:00.5+00', '2026-12-04 16:20:00.123456+00', \
                 '2026-12-04 18:20:00.1+02', '9999-12-31 23:59:59.999999+00']) t",
                &[],
            )
            .await
            .unwrap();
        assert_eq!(rows.len(), 9);
        let page = |at: fn(&tokio_postgres::Row) -> UnixTime| {
            json::users(rows.iter().map(|row| user_at(at(row)))).unwrap()
        };
        let ours = page(|row| row.get::<_, Timestamp>(0).0);
        let drivers = page(|row| row.get::<_, OffsetDateTime>(0).into());
        assert_eq!(
            String::from_utf8(ours).unwrap(),
            String::from_utf8(drivers).unwrap()
        );
    }

    #[tokio::test]
    async fn infinity_is_an_error_not_a_date() {
        let server = TestPostgres::start();
        let client = TestPostgres::client(&server.fresh_database().await).await;
        for value in ["infinity", "-infinity"] {
            let row = client
                .query_one(&format!("SELECT '{value}'::timestamptz"), &[])
                .await
                .unwrap();
            let written = row
                .try_get::<_, Timestamp>(0)
                .map_err(drop)
                .and_then(|at| json::users([user_at(at.0)]).map_err(drop));
            assert!(written.is_err(), "{value}");
        }
    }
}
