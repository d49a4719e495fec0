//! The JSON the API sends for users and pages, written straight into one buffer.
//!
//! `serde_json` over [`User`] escapes every key and every timestamp as a string, and formats each
//! timestamp into a `String` of its own: on the PostgreSQL path that was a third of the server's
//! instructions per page (docs/performance.md). Here the keys are literals, a timestamp is
//! written digit by digit from a [`UnixTime`] (no calendar type in between), and only names and
//! emails go through `serde_json`'s escaping. The bytes are exactly what `serde_json` makes of a
//! `User` in UTC, which is how every adapter stores its instants (the tests hold the two equal;
//! an instant at another offset is written as the same instant in UTC), so a client, the cache
//! and the OpenAPI document see no difference.

use time::OffsetDateTime;

use crate::error::{Error, Result};
use crate::page::{PageJson, PageRequest};
use crate::user::{User, UserId};

/// A user's fields borrowed from where they are stored (a driver's row buffer, a [`User`]), so
/// that writing a page needs no `String` per field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UserRef<'a> {
    pub id: UserId,
    pub name: &'a str,
    pub email: &'a str,
    pub created_at: UnixTime,
    pub updated_at: UnixTime,
}

/// An instant as the JSON writes it: seconds and nanoseconds since 1970-01-01 UTC. An adapter
/// makes one from its store's own count with no calendar (PostgreSQL sends microseconds since
/// 2000), so that a page's 200 timestamps are turned into dates once, while writing, instead of
/// once by the driver into an [`OffsetDateTime`] and again into text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnixTime {
    secs: i64,
    /// Below one second.
    nanos: u32,
}

impl UnixTime {
    /// `micros` microseconds after 1970-01-01 UTC (negative: before).
    pub const fn from_micros(micros: i64) -> Self {
        Self {
            secs: micros.div_euclid(1_000_000),
            nanos: micros.rem_euclid(1_000_000) as u32 * 1_000,
        }
    }
}

impl From<OffsetDateTime> for UnixTime {
    fn from(at: OffsetDateTime) -> Self {
        Self {
            secs: at.unix_timestamp(),
            nanos: at.nanosecond(),
        }
    }
}

impl<'a> From<&'a User> for UserRef<'a> {
    fn from(user: &'a User) -> Self {
        Self {
            id: user.id,
            name: &user.name,
            email: &user.email,
            created_at: user.created_at.into(),
            updated_at: user.updated_at.into(),
        }
    }
}

/// About the size of one user object: the starting capacity per user, not a limit.
const USER_BYTES: usize = 160;

/// One user as the JSON object the API sends.
pub fn user(user: UserRef<'_>) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(USER_BYTES);
    write_user(&mut out, user)?;
    Ok(out)
}

/// Users as the JSON array the API sends.
pub fn users<'a>(users: impl IntoIterator<Item = UserRef<'a>>) -> Result<Vec<u8>> {
    let users = users.into_iter();
    let mut out = Vec::with_capacity(2 + users.size_hint().0 * USER_BYTES);
    out.push(b'[');
    for (i, user) in users.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_user(&mut out, user)?;
    }
    out.push(b']');
    Ok(out)
}

/// Builds a page's JSON from the rows an adapter fetched for [`PageRequest::probe`], in id order:
/// the first `limit` users go into the array; a further row only says that a next page exists.
#[derive(Debug)]
pub struct PageWriter {
    out: Vec<u8>,
    limit: u32,
    written: u32,
    last: Option<UserId>,
    more: bool,
}

impl PageWriter {
    pub fn new(request: PageRequest) -> Self {
        let mut out = Vec::with_capacity(2 + request.limit() as usize * USER_BYTES);
        out.push(b'[');
        Self {
            out,
            limit: request.limit(),
            written: 0,
            last: None,
            more: false,
        }
    }

    pub fn push(&mut self, user: UserRef<'_>) -> Result<()> {
        if self.written == self.limit {
            self.more = true;
            return Ok(());
        }
        if self.written > 0 {
            self.out.push(b',');
        }
        write_user(&mut self.out, user)?;
        self.written += 1;
        self.last = Some(user.id);
        Ok(())
    }

    pub fn finish(mut self) -> PageJson {
        self.out.push(b']');
        PageJson {
            body: self.out.into(),
            next_after: if self.more { self.last } else { None },
        }
    }
}

fn write_user(out: &mut Vec<u8>, user: UserRef<'_>) -> Result<()> {
    out.extend_from_slice(b"{\"id\":");
    serde_json::to_writer(&mut *out, &user.id.0).map_err(Error::internal)?;
    out.extend_from_slice(b",\"name\":");
    serde_json::to_writer(&mut *out, user.name).map_err(Error::internal)?;
    out.extend_from_slice(b",\"email\":");
    serde_json::to_writer(&mut *out, user.email).map_err(Error::internal)?;
    out.extend_from_slice(b",\"created_at\":\"");
    let created_at = out.len();
    write_rfc3339(out, user.created_at)?;
    let created_at = created_at..out.len();
    out.extend_from_slice(b"\",\"updated_at\":\"");
    // A user never updated (most of a table) has the same instant twice: written once, copied.
    if user.updated_at == user.created_at {
        out.extend_from_within(created_at);
    } else {
        write_rfc3339(out, user.updated_at)?;
    }
    out.extend_from_slice(b"\"}");
    Ok(())
}

/// `time`'s RFC 3339 (what `time::serde::rfc3339` writes for UTC): `YYYY-MM-DDTHH:MM:SS`, the
/// fraction without trailing zeros if there is one, then `Z`. A year of other than four digits
/// is an error, as it is for `time`: RFC 3339 cannot express it.
fn write_rfc3339(out: &mut Vec<u8>, at: UnixTime) -> Result<()> {
    const SECS_PER_DAY: i64 = 86_400;
    let (year, month, day) = civil_from_days(at.secs.div_euclid(SECS_PER_DAY));
    if !(0..=9999).contains(&year) {
        return Err(Error::internal(format!(
            "year {year} cannot be written in RFC 3339: {at:?}"
        )));
    }
    let second = at.secs.rem_euclid(SECS_PER_DAY) as u32;
    let year = year as u32;
    let mut text = *b"0000-00-00T00:00:00.000000000Z";
    two_digits(&mut text[0..2], year / 100);
    two_digits(&mut text[2..4], year % 100);
    two_digits(&mut text[5..7], month);
    two_digits(&mut text[8..10], day);
    two_digits(&mut text[11..13], second / 3600);
    two_digits(&mut text[14..16], second / 60 % 60);
    two_digits(&mut text[17..19], second % 60);
    let mut len = 19;
    let mut nanos = at.nanos;
    if nanos != 0 {
        let mut digits = 9;
        while nanos.is_multiple_of(10) {
            nanos /= 10;
            digits -= 1;
        }
        for digit in text[20..20 + digits].iter_mut().rev() {
            *digit = b'0' + (nanos % 10) as u8;
            nanos /= 10;
        }
        len = 20 + digits;
    }
    text[len] = b'Z';
    // The whole array and then back to its length: a copy of a known size compiles to a few
    // moves, one of a varying size to a call to memcpy, and a page has 200 timestamps.
    let start = out.len();
    out.extend_from_slice(&text);
    out.truncate(start + len + 1);
    Ok(())
}

/// The proleptic Gregorian (year, month, day) of a day counted from 1970-01-01: Howard Hinnant's
/// `civil_from_days` (<https://howardhinnant.github.io/date_algorithms.html>), which works in
/// 400-year eras starting on 1 March so that the leap day ends a year.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * month_from_march + 2) / 5 + 1) as u32;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    } as u32;
    (year_of_era + era * 400 + i64::from(month <= 2), month, day)
}

fn two_digits(out: &mut [u8], value: u32) {
    out[0] = b'0' + (value / 10) as u8;
    out[1] = b'0' + (value % 10) as u8;
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::{Just, Strategy};
    use time::format_description::well_known::Rfc3339;
    use time::macros::datetime;

    fn user_at(id: i64, name: &str, created_at: OffsetDateTime) -> User {
        User {
            id: UserId(id),
            name: name.into(),
            email: format!("u{id}@example.com"),
            created_at,
            updated_at: created_at + time::Duration::nanoseconds(id),
        }
    }

    #[test]
    fn the_same_bytes_as_serde_json() {
        let cases = [
            user_at(1, "Ada", datetime!(2026-11-25 10:00:00 UTC)),
            user_at(
                7,
                "Zoë \"Z\" \\ \u{7f} é 😀",
                datetime!(1999-01-02 03:04:05.5 UTC),
            ),
            user_at(i64::MAX, "x", datetime!(0001-12-31 23:59:59.999999999 UTC)),
            user_at(-3, "", datetime!(9999-06-30 00:00:00.000001 UTC)),
            user_at(10, "tab\there", datetime!(2026-02-28 12:30:00.12 UTC)),
            User {
                updated_at: datetime!(2026-02-28 12:30:00.123456 UTC),
                ..user_at(
                    2,
                    "never updated",
                    datetime!(2026-02-28 12:30:00.123456 UTC),
                )
            },
        ];
        for u in &cases {
            assert_eq!(user(u.into()).ok(), serde_json::to_vec(u).ok(), "{u:?}");
        }
        assert_eq!(
            users(cases.iter().map(UserRef::from)).unwrap(),
            serde_json::to_vec(&cases).unwrap()
        );
        assert_eq!(users([]).unwrap(), b"[]");
    }

    #[test]
    fn an_instant_at_another_offset_is_written_in_utc() {
        let at = datetime!(2026-02-28 12:30:00.12 +02:30);
        let u = user_at(100, "offset", at);
        let in_utc = User {
            created_at: at.to_offset(time::UtcOffset::UTC),
            updated_at: u.updated_at.to_offset(time::UtcOffset::UTC),
            ..u.clone()
        };
        assert_eq!(
            user((&u).into()).unwrap(),
            serde_json::to_vec(&in_utc).unwrap()
        );
        assert!(
            String::from_utf8(user((&u).into()).unwrap())
                .unwrap()
                .contains("T10:00:00.12Z")
        );
    }

    proptest::proptest! {
        /// Any instant from year 0 to 9999, against `time`'s own calendar and RFC 3339.
        #[test]
        fn every_instant_as_time_writes_it(
            secs in -62_167_219_200i64..253_402_300_800,
            nanos in proptest::prop_oneof![Just(0u32), 0..1_000_000_000u32, (0..1_000_000u32).prop_map(|m| m * 1000)],
        ) {
            let at = OffsetDateTime::from_unix_timestamp(secs).unwrap().replace_nanosecond(nanos).unwrap();
            let mut ours = Vec::new();
            write_rfc3339(&mut ours, at.into()).unwrap();
            proptest::prop_assert_eq!(String::from_utf8(ours).unwrap(), at.format(&Rfc3339).unwrap());
        }
    }

    #[test]
    fn microseconds_before_and_after_1970_and_the_years_rfc_3339_cannot_write() {
        let written = |at: UnixTime| {
            let mut out = Vec::new();
            write_rfc3339(&mut out, at).map(|()| String::from_utf8(out).unwrap())
        };
        assert_eq!(
            written(UnixTime::from_micros(0)).unwrap(),
            "1970-01-01T00:00:00Z"
        );
        assert_eq!(
            written(UnixTime::from_micros(-1)).unwrap(),
            "1969-12-31T23:59:59.999999Z"
        );
        assert_eq!(
            written(UnixTime::from_micros(951_782_400_000_001)).unwrap(),
            "2000-02-29T00:00:00.000001Z"
        );
        // 0000-01-01 and 9999-12-31 are the ends; a second beyond either is refused, not garbled.
        assert_eq!(
            written(UnixTime::from_micros(-62_167_219_200_000_000)).unwrap(),
            "0000-01-01T00:00:00Z"
        );
        assert!(written(UnixTime::from_micros(-62_167_219_201_000_000)).is_err());
        assert_eq!(
            written(UnixTime::from_micros(253_402_300_799_999_999)).unwrap(),
            "9999-12-31T23:59:59.999999Z"
        );
        assert!(written(UnixTime::from_micros(253_402_300_800_000_000)).is_err());
        assert!(written(UnixTime::from_micros(i64::MAX)).is_err());
        assert!(written(UnixTime::from_micros(i64::MIN)).is_err());
    }

    #[test]
    fn every_fraction_length() {
        let base = datetime!(2026-11-25 10:00:00 UTC);
        let mut nanos = 1;
        for _ in 0..10 {
            let u = user_at(1, "n", base + time::Duration::nanoseconds(nanos));
            assert_eq!(user((&u).into()).unwrap(), serde_json::to_vec(&u).unwrap());
            nanos *= 10;
        }
    }

    #[test]
    fn a_page_stops_at_its_limit_and_names_the_next() {
        let at = datetime!(2026-11-25 10:00:00 UTC);
        let rows: Vec<User> = (1..=4).map(|i| user_at(i, "n", at)).collect();
        let request = PageRequest::new(Some(3), None).unwrap();

        let mut full = PageWriter::new(request);
        for row in &rows {
            full.push(row.into()).unwrap();
        }
        let page = full.finish();
        assert_eq!(page.body, serde_json::to_vec(&rows[..3]).unwrap());
        assert_eq!(page.next_after, Some(UserId(3)));

        let mut last = PageWriter::new(request);
        for row in &rows[..3] {
            last.push(row.into()).unwrap();
        }
        assert_eq!(last.finish().next_after, None);
        assert_eq!(PageWriter::new(request).finish().body, &b"[]"[..]);
    }
}
