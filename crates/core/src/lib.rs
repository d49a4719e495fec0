//! The core of userstack: users, their validation, the ports to a user store and a cache, and the
//! service that reads through the cache and writes through the store.
//!
//! This crate knows no database, cache server or HTTP: adapters (`userstack-storage-pg`,
//! `userstack-cache-redis`) implement its ports, and the server maps its errors to HTTP. The
//! in-memory adapters in [`memory`] make it usable on its own, e.g. embedded in another program
//! or in tests:
//!
//! ```
//! use std::sync::Arc;
//! use userstack_core::memory::{InMemoryCache, InMemoryUserRepository};
//! use userstack_core::{Error, NewUser, PageRequest, ServiceConfig, UserService};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Error> {
//! let service = UserService::new(
//!     Arc::new(InMemoryUserRepository::new()),
//!     Arc::new(InMemoryCache::new()),
//!     ServiceConfig::default(),
//! );
//! let ada = service.create_user(NewUser::parse("Ada", "ada@example.com")?).await?;
//! assert_eq!(service.get_user(ada.id).await?.name, "Ada");
//!
//! let page = service.list_users(PageRequest::new(Some(10), None)?).await?;
//! assert_eq!(page.users, vec![ada]);
//!
//! // Emails are unique, case-insensitively.
//! let again = service.create_user(NewUser::parse("Eve", "ADA@example.com")?).await;
//! assert!(matches!(again, Err(Error::DuplicateEmail(_))));
//! # Ok(())
//! # }
//! ```

pub mod cache;
mod cache_aside;
mod config;
pub mod demo;
pub mod error;
mod flight;
mod increments;
pub mod json;
mod local_cache;
pub mod memory;
pub mod page;
mod readiness;
pub mod repository;
pub mod service;
mod stats;
#[cfg(feature = "testing")]
pub mod testing;
pub mod user;
pub mod validation;

pub use cache::Cache;
pub use config::ServiceConfig;
pub use demo::CacheDemo;
pub use error::{BoxError, Error, Result};
pub use page::{DEFAULT_PAGE_LIMIT, MAX_PAGE_LIMIT, Page, PageJson, PageRequest};
pub use readiness::Readiness;
pub use repository::UserRepository;
pub use service::UserService;
pub use stats::CacheStatsSnapshot;
pub use user::{Email, NewUser, User, UserId, UserName, UserPatch};
pub use validation::{FieldError, Invalid};
