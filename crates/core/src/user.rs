//! The user and the validated inputs that create or change one.
//!
//! Inputs are parsed once, at the edge, into types that cannot hold invalid values
//! ([`UserName`], [`Email`]); everything past the edge relies on that.

use std::fmt;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::validation::{FieldError, Invalid};

/// Longest accepted name, in characters.
pub const NAME_MAX_CHARS: usize = 100;
/// Longest accepted email address, in bytes (RFC 5321's path limit).
pub const EMAIL_MAX_BYTES: usize = 254;

/// A user's identifier, assigned by the repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct UserId(pub i64);

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A stored user, as every adapter returns it and as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub id: UserId,
    pub name: String,
    pub email: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

/// A non-empty display name of at most [`NAME_MAX_CHARS`] characters, trimmed, without control
/// characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserName(String);

impl UserName {
    /// Validates and trims `raw`.
    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        let name = raw.trim();
        if name.is_empty() {
            return Err(FieldError::new("name", "must not be empty"));
        }
        if name.chars().count() > NAME_MAX_CHARS {
            return Err(FieldError::new(
                "name",
                format!("must be at most {NAME_MAX_CHARS} characters"),
            ));
        }
        if name.chars().any(char::is_control) {
            return Err(FieldError::new(
                "name",
                "must not contain control characters",
            ));
        }
        Ok(Self(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A syntactically plausible email address: one `@`, a non-empty local part of at most 64 bytes,
/// a dotted domain, no whitespace, at most [`EMAIL_MAX_BYTES`] bytes. Case is kept as given;
/// uniqueness is ASCII-case-insensitive (`A`–`Z` equal `a`–`z`; `É` and `é` differ), and every
/// repository must enforce exactly that, whatever its locale.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email(String);

impl Email {
    /// Validates and trims `raw`.
    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        let email = raw.trim();
        let invalid = |why: &str| Err(FieldError::new("email", why));
        if email.is_empty() {
            return invalid("must not be empty");
        }
        if email.len() > EMAIL_MAX_BYTES {
            return invalid("must be at most 254 bytes");
        }
        if email.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return invalid("must not contain whitespace");
        }
        let Some((local, domain)) = email.split_once('@') else {
            return invalid("must contain '@'");
        };
        if local.is_empty() || local.len() > 64 {
            return invalid("must have 1 to 64 bytes before '@'");
        }
        if domain.contains('@') {
            return invalid("must contain exactly one '@'");
        }
        let labels_ok = domain
            .split('.')
            .all(|l| !l.is_empty() && !l.starts_with('-') && !l.ends_with('-'));
        if !domain.contains('.') || !labels_ok {
            return invalid("must have a domain such as example.com after '@'");
        }
        Ok(Self(email.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Everything needed to create (or fully replace) a user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewUser {
    pub name: UserName,
    pub email: Email,
}

impl NewUser {
    /// Validates both fields, reporting every invalid one at once.
    pub fn parse(name: &str, email: &str) -> Result<Self, Invalid> {
        match (UserName::parse(name), Email::parse(email)) {
            (Ok(name), Ok(email)) => Ok(Self { name, email }),
            (name, email) => Err(Invalid(
                [name.err(), email.err()].into_iter().flatten().collect(),
            )),
        }
    }
}

/// A partial update: absent fields are left as they are.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserPatch {
    pub name: Option<UserName>,
    pub email: Option<Email>,
}

impl UserPatch {
    /// Validates the fields that are present, reporting every invalid one at once. A patch that
    /// changes nothing is invalid: it is almost always a client bug (a misspelt field).
    pub fn parse(name: Option<&str>, email: Option<&str>) -> Result<Self, Invalid> {
        if name.is_none() && email.is_none() {
            return Err(
                FieldError::new("body", "must contain at least one of: name, email").into(),
            );
        }
        let name = name.map(UserName::parse).transpose();
        let email = email.map(Email::parse).transpose();
        match (name, email) {
            (Ok(name), Ok(email)) => Ok(Self { name, email }),
            (name, email) => Err(Invalid(
                [name.err(), email.err()].into_iter().flatten().collect(),
            )),
        }
    }
}

impl From<NewUser> for UserPatch {
    fn from(user: NewUser) -> Self {
        Self {
            name: Some(user.name),
            email: Some(user.email),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_trimmed_and_bounded() {
        assert_eq!(UserName::parse("  Ada ").unwrap().as_str(), "Ada");
        assert!(UserName::parse("   ").is_err());
        assert!(UserName::parse(&"x".repeat(NAME_MAX_CHARS)).is_ok());
        assert!(UserName::parse(&"é".repeat(NAME_MAX_CHARS + 1)).is_err());
        assert!(UserName::parse("a\u{0}b").is_err());
    }

    #[test]
    fn emails_need_one_at_and_a_dotted_domain() {
        for ok in ["a@b.co", "Ada.Lovelace+x@Example.ORG", " x@y.z "] {
            assert!(Email::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "", "plain", "@b.co", "a@", "a@b", "a@@b.co", "a@b@c.co", "a b@c.co", "a@.co",
            "a@b..co", "a@-b.co",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad:?} should be rejected");
        }
        assert!(Email::parse(&format!("{}@b.co", "a".repeat(65))).is_err());
        assert!(Email::parse(&format!("a@{}.co", "b".repeat(250))).is_err());
    }

    #[test]
    fn new_user_reports_every_invalid_field() {
        let Err(Invalid(fields)) = NewUser::parse("", "nope") else {
            panic!("expected a validation error");
        };
        let names: Vec<_> = fields.iter().map(|f| f.field.as_str()).collect();
        assert_eq!(names, ["name", "email"]);
    }

    #[test]
    fn empty_patch_is_rejected() {
        assert!(UserPatch::parse(None, None).is_err());
        let patch = UserPatch::parse(Some("Bob"), None).unwrap();
        assert_eq!(patch.name.unwrap().as_str(), "Bob");
        assert!(patch.email.is_none());
    }

    #[test]
    fn user_serializes_with_named_fields_and_rfc3339_times() {
        let at = time::macros::datetime!(2026-11-25 10:00:00 UTC);
        let user = User {
            id: UserId(7),
            name: "Ada".into(),
            email: "ada@example.com".into(),
            created_at: at,
            updated_at: at,
        };
        let json = serde_json::to_string(&user).unwrap();
        assert_eq!(
            json,
            r#"{"id":7,"name":"Ada","email":"ada@example.com","created_at":"2026-11-25T10:00:00Z","updated_at":"2026-11-25T10:00:00Z"}"#
        );
        assert_eq!(serde_json::from_str::<User>(&json).unwrap(), user);
    }
}
