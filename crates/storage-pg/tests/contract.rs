//! The repository contract and the migrations, against a real PostgreSQL.

use userstack_core::{Error, NewUser, PageRequest, UserRepository};
use userstack_storage_pg::PgUserRepository;
use userstack_storage_pg::testing::TestPostgres;

#[tokio::test(flavor = "multi_thread")]
async fn postgres_repository_honours_the_contract() {
    let server = TestPostgres::start();
    let repo = PgUserRepository::new(server.fresh_database().await);
    assert_eq!(repo.migrate().await.unwrap(), vec![1, 2]);
    userstack_core::testing::user_repository_contract(&repo).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn migrations_are_applied_once_even_by_concurrent_replicas() {
    let server = TestPostgres::start();
    let settings = server.fresh_database().await;
    let mut replicas = tokio::task::JoinSet::new();
    for _ in 0..4 {
        let repo = PgUserRepository::new(settings.clone());
        replicas.spawn(async move { repo.migrate().await });
    }
    let mut applied = Vec::new();
    while let Some(result) = replicas.join_next().await {
        applied.extend(result.unwrap().unwrap());
    }
    assert_eq!(
        applied,
        vec![1, 2],
        "exactly one replica applies the migrations"
    );
    let late = PgUserRepository::new(settings);
    assert_eq!(late.migrate().await.unwrap(), Vec::<i32>::new());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stopped_database_is_unavailable_then_recovers_without_a_new_pool() {
    let server = TestPostgres::start_private();
    let mut settings = server.fresh_database().await;
    settings.connection_timeout = std::time::Duration::from_millis(500);
    let repo = PgUserRepository::new(settings);
    repo.migrate().await.unwrap();
    let ada = repo
        .create(&NewUser::parse("Ada", "ada@example.com").unwrap())
        .await
        .unwrap();

    server.stop();
    let down = repo.get(ada.id).await;
    assert!(matches!(down, Err(Error::StoreUnavailable(_))), "{down:?}");
    assert!(matches!(repo.ping().await, Err(Error::StoreUnavailable(_))));

    server.restart();
    // The very first request after the restart must succeed: dead pooled connections are
    // weeded out at check-out, not handed to a request.
    assert_eq!(repo.get(ada.id).await.unwrap(), Some(ada));
    assert_eq!(repo.list(PageRequest::default()).await.unwrap().len(), 1);
}
