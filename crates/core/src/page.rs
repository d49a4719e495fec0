//! Keyset pagination: a page is "up to `limit` users with an id greater than `after`", so the cost
//! of a page depends on its size, never on how far into the table it is.

use crate::error::Error;
use crate::user::{User, UserId};

pub const DEFAULT_PAGE_LIMIT: u32 = 100;
pub const MAX_PAGE_LIMIT: u32 = 1000;

/// A validated page request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PageRequest {
    limit: u32,
    after: Option<UserId>,
}

impl PageRequest {
    /// Validates the raw parameters. Out-of-range values are rejected, not clamped: a client that
    /// asks for 5000 and silently gets 1000 would think it has seen everything.
    pub fn new(limit: Option<i64>, after: Option<i64>) -> Result<Self, Error> {
        let limit = match limit {
            None => DEFAULT_PAGE_LIMIT,
            Some(l) if (1..=i64::from(MAX_PAGE_LIMIT)).contains(&l) => l as u32,
            Some(_) => {
                return Err(Error::invalid(
                    "limit",
                    format!("must be between 1 and {MAX_PAGE_LIMIT}"),
                ));
            }
        };
        let after = match after {
            None => None,
            Some(a) if a >= 0 => Some(UserId(a)),
            Some(_) => return Err(Error::invalid("after", "must not be negative")),
        };
        Ok(Self { limit, after })
    }

    pub fn limit(&self) -> u32 {
        self.limit
    }

    pub fn after(&self) -> Option<UserId> {
        self.after
    }

    /// The same cursor with one more row, which is how the service learns whether a next page
    /// exists without a second query. Not validated: only adapters see it (and build the page
    /// from its rows with [`crate::json::PageWriter`]).
    pub fn probe(&self) -> Self {
        Self {
            limit: self.limit + 1,
            after: self.after,
        }
    }
}

impl Default for PageRequest {
    fn default() -> Self {
        Self {
            limit: DEFAULT_PAGE_LIMIT,
            after: None,
        }
    }
}

/// One page of users in ascending id order, and the cursor of the next page if there is one.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Page {
    pub users: Vec<User>,
    pub next_after: Option<UserId>,
}

/// A page already serialised: the JSON array of users the API sends, and the next page's cursor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageJson {
    /// Shared with the cache's copy in memory, when there is one.
    pub body: bytes::Bytes,
    pub next_after: Option<UserId>,
}

impl Page {
    /// Builds a page from up to `limit + 1` rows fetched for `request.probe()`.
    pub(crate) fn from_probe(mut users: Vec<User>, request: PageRequest) -> Self {
        let limit = request.limit as usize;
        let next_after = if users.len() > limit {
            users.truncate(limit);
            users.last().map(|u| u.id)
        } else {
            None
        };
        Self { users, next_after }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_bounds() {
        let page = PageRequest::new(None, None).unwrap();
        assert_eq!((page.limit(), page.after()), (100, None));
        assert_eq!(PageRequest::new(Some(1000), Some(5)).unwrap().limit(), 1000);
        for bad in [0, -1, 1001, i64::MAX] {
            assert!(PageRequest::new(Some(bad), None).is_err(), "{bad}");
        }
        assert!(PageRequest::new(None, Some(-1)).is_err());
    }
}
