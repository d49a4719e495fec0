//! A PostgreSQL that hangs instead of failing: frozen (SIGSTOP), or stuck behind a lock. Every
//! operation must end within its deadline, the pool must not stay pinned by hung connections,
//! and service must resume by itself when the server does.

use std::time::{Duration, Instant};

use userstack_core::{Error, NewUser, UserId, UserRepository};
use userstack_storage_pg::PgUserRepository;
use userstack_storage_pg::testing::TestPostgres;

/// How much longer than its deadline an operation may take here: scheduling on a loaded
/// 2-core machine, not a tolerance of the protection.
const SLACK: Duration = Duration::from_millis(1500);

/// Runs `operation`, failing the test if it hangs well past `deadline` (which, without the
/// protection under test, it does).
async fn bounded<T>(deadline: Duration, operation: impl Future<Output = T>) -> (T, Duration) {
    let started = Instant::now();
    let result = tokio::time::timeout(deadline + SLACK, operation)
        .await
        .unwrap_or_else(|_| panic!("the operation hung past its {deadline:?} deadline"));
    (result, started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_server_fails_every_operation_within_the_deadline_and_service_resumes() {
    let server = TestPostgres::start_private();
    let mut settings = server.fresh_database().await;
    let deadline = Duration::from_secs(1);
    settings.connection_timeout = deadline;
    settings.pool_size = 4;
    let repo = PgUserRepository::new(settings);
    repo.migrate().await.unwrap();
    let ada = repo
        .create(&NewUser::parse("Ada", "ada@example.com").unwrap())
        .await
        .unwrap();
    // Every pooled connection open and idle, as under steady load.
    let warm: Vec<_> = (0..4)
        .map(|_| {
            let repo = repo.clone();
            tokio::spawn(async move { repo.get(ada.id).await })
        })
        .collect();
    for result in warm {
        result.await.unwrap().unwrap();
    }

    server.freeze(true);
    let frozen_at = Instant::now();
    // More concurrent operations than connections, then more rounds: none may wait for the
    // freeze to end, whether it got a pooled connection, waited for one, or opened a new one.
    for round in 0..3 {
        let operations: Vec<_> = (0..8)
            .map(|i| {
                let repo = repo.clone();
                tokio::spawn(async move {
                    bounded(deadline, async {
                        if i % 2 == 0 {
                            repo.get(ada.id).await.map(drop)
                        } else {
                            let email = format!("frozen{round}-{i}@example.com");
                            repo.create(&NewUser::parse("F", &email).unwrap())
                                .await
                                .map(drop)
                        }
                    })
                    .await
                })
            })
            .collect();
        for operation in operations {
            let (result, _took) = operation.await.unwrap();
            assert!(
                matches!(result, Err(Error::StoreUnavailable(_))),
                "{result:?}"
            );
        }
    }
    let frozen_for = frozen_at.elapsed();
    server.freeze(false);

    // Back by itself: the same pool, no restart of anything.
    let thawed = Instant::now();
    loop {
        match repo.get(ada.id).await {
            Ok(found) => {
                assert_eq!(found.as_ref(), Some(&ada));
                break;
            }
            Err(e) => assert!(
                thawed.elapsed() < Duration::from_secs(10),
                "no recovery 10 s after the thaw: {e}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let recovered_in = thawed.elapsed();
    repo.create(&NewUser::parse("Bea", "bea@example.com").unwrap())
        .await
        .unwrap();
    let state = repo.pool_state();
    assert!(state.connections <= 4, "{state:?}");
    eprintln!("frozen for {frozen_for:?}; recovered {recovered_in:?} after the thaw");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_server_cancels_a_statement_stuck_behind_a_lock_and_the_connection_is_kept() {
    let server = TestPostgres::start();
    let mut settings = server.fresh_database().await;
    settings.connection_timeout = Duration::from_secs(5);
    settings.statement_timeout = Duration::from_millis(300);
    settings.pool_size = 1;
    let repo = PgUserRepository::new(settings.clone());
    repo.migrate().await.unwrap();
    repo.get(UserId(1)).await.unwrap();

    let locker = TestPostgres::client(&settings).await;
    locker
        .batch_execute("BEGIN; LOCK TABLE users IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let (blocked, took) = bounded(Duration::from_millis(300), repo.get(UserId(1))).await;
    assert!(
        matches!(blocked, Err(Error::StoreUnavailable(_))),
        "{blocked:?}"
    );
    assert!(
        took < Duration::from_secs(5),
        "cancelled by the server, not by the client's deadline: {took:?}"
    );
    locker.batch_execute("ROLLBACK").await.unwrap();
    assert_eq!(repo.get(UserId(1)).await.unwrap(), None);
    assert_eq!(
        repo.pool_state().connections,
        1,
        "a cancelled statement's connection is reused"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_migration_gives_up_waiting_for_a_table_lock() {
    let server = TestPostgres::start();
    let mut settings = server.fresh_database().await;
    settings.migration_lock_timeout = Duration::from_millis(300);
    let locker = TestPostgres::client(&settings).await;
    // The bookkeeping table exists and a long transaction holds it.
    locker
        .batch_execute(
            "CREATE TABLE userstack_migrations (
                 version INTEGER PRIMARY KEY, name TEXT NOT NULL,
                 applied_at TIMESTAMPTZ NOT NULL DEFAULT now());
             BEGIN; LOCK TABLE userstack_migrations IN ACCESS EXCLUSIVE MODE",
        )
        .await
        .unwrap();
    let repo = PgUserRepository::new(settings);
    let (result, _) = bounded(Duration::from_millis(300), repo.migrate()).await;
    let error = result.expect_err("the migration must not wait for the lock");
    assert!(error.to_string().contains("lock timeout"), "{error}");
    locker.batch_execute("ROLLBACK").await.unwrap();
    assert_eq!(repo.migrate().await.unwrap(), vec![1, 2]);
}
