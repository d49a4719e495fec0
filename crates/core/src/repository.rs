//! The port to the system of record for users.

use async_trait::async_trait;

use crate::error::Result;
use crate::json::PageWriter;
use crate::page::{PageJson, PageRequest};
use crate::user::{NewUser, User, UserId, UserPatch};

/// Where users are stored. Implementations: `userstack_storage_pg::PgUserRepository` (PostgreSQL)
/// and [`crate::memory::InMemoryUserRepository`]; both pass the same contract tests
/// (`userstack_core::testing`, feature `testing`).
///
/// Every method returns [`Error::StoreUnavailable`](crate::Error::StoreUnavailable) when the store
/// cannot be reached or does not answer in time, and
/// [`Error::Internal`](crate::Error::Internal) for anything unexpected. Other variants are listed
/// per method; no method returns [`Error::Validation`](crate::Error::Validation) (inputs arrive
/// validated) or [`Error::CacheUnavailable`](crate::Error::CacheUnavailable).
#[async_trait]
pub trait UserRepository: Send + Sync + 'static {
    /// Stores a new user with a fresh id; `created_at == updated_at`.
    ///
    /// [`Error::DuplicateEmail`](crate::Error::DuplicateEmail) if another user has the same email,
    /// compared ASCII-case-insensitively (see [`Email`](crate::Email)).
    async fn create(&self, user: &NewUser) -> Result<User>;

    /// The user with this id, or `None`.
    async fn get(&self, id: UserId) -> Result<Option<User>>;

    /// Up to `page.limit()` users with an id greater than `page.after()`, in ascending id order.
    /// Must cost the same wherever the page starts (an index range scan, not an offset).
    async fn list(&self, page: PageRequest) -> Result<Vec<User>>;

    /// The page the API sends for `page`: up to `page.limit()` users after `page.after()` as a
    /// JSON array, and the next page's cursor when more users follow. What [`Self::list`] of
    /// `page.probe()` gives, written by [`PageWriter`]; an adapter overrides it to write straight
    /// from its own buffers, without a [`User`] per row.
    async fn list_json(&self, page: PageRequest) -> Result<PageJson> {
        let mut writer = PageWriter::new(page);
        for user in &self.list(page.probe()).await? {
            writer.push(user.into())?;
        }
        Ok(writer.finish())
    }

    /// Applies the fields present in `patch` and bumps `updated_at`; `None` if there is no such
    /// user.
    ///
    /// [`Error::DuplicateEmail`](crate::Error::DuplicateEmail) if the new email belongs to another
    /// user (ASCII-case-insensitively); changing only the case of one's own email is allowed.
    async fn update(&self, id: UserId, patch: &UserPatch) -> Result<Option<User>>;

    /// Removes the user; `false` if there was no such user.
    async fn delete(&self, id: UserId) -> Result<bool>;

    /// Succeeds when the store answers a trivial query (readiness).
    async fn ping(&self) -> Result<()>;
}
