//! The adapter contracts, run against the in-memory adapters (the real adapters run the same
//! functions in their own crates).

use userstack_core::memory::{InMemoryCache, InMemoryUserRepository};
use userstack_core::testing;

#[tokio::test]
async fn in_memory_repository_honours_the_contract() {
    testing::user_repository_contract(&InMemoryUserRepository::new()).await;
}

#[tokio::test]
async fn in_memory_cache_honours_the_contract() {
    testing::cache_contract(&InMemoryCache::new()).await;
}
