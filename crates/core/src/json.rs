//! The JSON the API sends for users and pages, written straight into one buffer.
//!
//! `serde_json` over [`User`] escapes every key and every timestamp as a string, and formats each
//! timestamp into a `String` of its own: on the PostgreSQL path that was a third of the server's
//! instructions per page (docs/performance.md). Here the keys are literals, a timestamp is
//! written digit by digit, and only names and emails go through `serde_json`'s escaping. The bytes
//! are exactly what `serde_json` makes of a `User` (the tests hold the two equal), so a client,
//! the cache and the OpenAPI document see no difference.

use time::format_description::well_known::Rfc3339;
use time::{OffsetDateTime, UtcOffset};

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
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

impl<'a> From<&'a User> for UserRef<'a> {
    fn from(user: &'a User) -> Self {
        Self {
            id: user.id,
            name: &user.name,
            email: &user.email,
            created_at: user.created_at,
            updated_at: user.updated_at,
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
    write_rfc3339(out, user.created_at)?;
    out.extend_from_slice(b"\",\"updated_at\":\"");
    write_rfc3339(out, user.updated_at)?;
    out.extend_from_slice(b"\"}");
    Ok(())
}

/// `time`'s RFC 3339 (what `time::serde::rfc3339` writes): `YYYY-MM-DDTHH:MM:SS`, the fraction
/// without trailing zeros if there is one, `Z` for UTC. Stored timestamps are UTC with a year of
/// four digits; anything else is left to `time` itself, which also refuses what RFC 3339 cannot
/// express.
fn write_rfc3339(out: &mut Vec<u8>, at: OffsetDateTime) -> Result<()> {
    let year = at.year();
    if at.offset() != UtcOffset::UTC || !(0..=9999).contains(&year) {
        return at
            .format_into(out, &Rfc3339)
            .map(drop)
            .map_err(Error::internal);
    }
    let year = year as u32;
    let mut text = *b"0000-00-00T00:00:00";
    two_digits(&mut text[0..2], year / 100);
    two_digits(&mut text[2..4], year % 100);
    two_digits(&mut text[5..7], u32::from(u8::from(at.month())));
    two_digits(&mut text[8..10], u32::from(at.day()));
    two_digits(&mut text[11..13], u32::from(at.hour()));
    two_digits(&mut text[14..16], u32::from(at.minute()));
    two_digits(&mut text[17..19], u32::from(at.second()));
    out.extend_from_slice(&text);
    let mut nanos = at.nanosecond();
    if nanos != 0 {
        let mut digits = 9;
        while nanos.is_multiple_of(10) {
            nanos /= 10;
            digits -= 1;
        }
        let mut fraction = *b".000000000";
        for digit in fraction[1..=digits].iter_mut().rev() {
            *digit = b'0' + (nanos % 10) as u8;
            nanos /= 10;
        }
        out.extend_from_slice(&fraction[..=digits]);
    }
    out.push(b'Z');
    Ok(())
}

fn two_digits(out: &mut [u8], value: u32) {
    out[0] = b'0' + (value / 10) as u8;
    out[1] = b'0' + (value % 10) as u8;
}

#[cfg(test)]
mod tests {
    use super::*;
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
            user_at(100, "offset", datetime!(2026-02-28 12:30:00.12 +02:30)),
        ];
        for u in &cases {
            assert_eq!(user(u.into()).ok(), serde_json::to_vec(u).ok(), "{u:?}");
        }
        assert_eq!(
            users(cases[..5].iter().map(UserRef::from)).unwrap(),
            serde_json::to_vec(&cases[..5]).unwrap()
        );
        assert_eq!(users([]).unwrap(), b"[]");
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
