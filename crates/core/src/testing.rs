//! Contract tests every adapter must pass (feature `testing`).
//!
//! Each adapter crate calls these from its own integration tests against a real server, and
//! `core` calls them against the in-memory adapters, so "the same contract" is one piece of code.
//! They panic with a message on the first broken promise.

use std::time::Duration;

use crate::cache::Cache;
use crate::error::Error;
use crate::page::PageRequest;
use crate::repository::UserRepository;
use crate::user::{NewUser, UserId, UserPatch};

fn new_user(name: &str, email: &str) -> NewUser {
    NewUser::parse(name, email).expect("test input is valid")
}

/// Checks every promise of [`UserRepository`]. `repo` must start empty.
pub async fn user_repository_contract(repo: &dyn UserRepository) {
    repo.ping().await.expect("ping answers");
    assert!(
        repo.list(PageRequest::default()).await.unwrap().is_empty(),
        "the contract needs an empty repository"
    );

    // create
    let ada = repo
        .create(&new_user("Ada", "Ada@Example.com"))
        .await
        .unwrap();
    assert_eq!(
        (ada.name.as_str(), ada.email.as_str()),
        ("Ada", "Ada@Example.com")
    );
    assert_eq!(ada.created_at, ada.updated_at);
    let dup = repo.create(&new_user("Other", "ada@example.COM")).await;
    assert!(
        matches!(dup, Err(Error::DuplicateEmail(_))),
        "duplicate email, any case, must be DuplicateEmail: {dup:?}"
    );
    // Case means ASCII case, whatever the store's locale: É and é are different letters.
    let emile = repo.create(&new_user("Émile", "émile@example.com")).await;
    let upper = repo.create(&new_user("Émile", "ÉMILE@example.com")).await;
    assert!(
        emile.is_ok() && upper.is_ok(),
        "only ASCII letters compare case-insensitively: {emile:?} {upper:?}"
    );
    for user in [emile, upper] {
        assert!(repo.delete(user.unwrap().id).await.unwrap());
    }

    // get
    assert_eq!(repo.get(ada.id).await.unwrap().as_ref(), Some(&ada));
    assert_eq!(repo.get(UserId(ada.id.0 + 1_000_000)).await.unwrap(), None);

    // list: ascending ids, limit, keyset cursor
    let bob = repo
        .create(&new_user("Bob", "bob@example.com"))
        .await
        .unwrap();
    let cy = repo
        .create(&new_user("Cy", "cy@example.com"))
        .await
        .unwrap();
    assert!(ada.id < bob.id && bob.id < cy.id, "ids must increase");
    let ids = |users: Vec<crate::User>| users.into_iter().map(|u| u.id).collect::<Vec<_>>();
    let all = repo.list(PageRequest::default()).await.unwrap();
    assert_eq!(ids(all), vec![ada.id, bob.id, cy.id]);
    let first_two = repo.list(PageRequest::new(Some(2), None).unwrap()).await;
    assert_eq!(ids(first_two.unwrap()), vec![ada.id, bob.id]);
    let after_ada = repo
        .list(PageRequest::new(Some(5), Some(ada.id.0)).unwrap())
        .await;
    assert_eq!(ids(after_ada.unwrap()), vec![bob.id, cy.id]);
    let past_end = repo
        .list(PageRequest::new(Some(5), Some(cy.id.0)).unwrap())
        .await;
    assert!(past_end.unwrap().is_empty());

    // list_json: the page as the API sends it (the same bytes as serde_json of the users), and
    // the next page's cursor only when more users follow
    let users = [&ada, &bob, &cy];
    for (limit, after, expected, next) in [
        (2, None, &users[..2], Some(bob.id)),
        (3, None, &users[..], None),
        (1, Some(ada.id), &users[1..2], Some(bob.id)),
        (5, Some(cy.id), &users[..0], None),
    ] {
        let request = PageRequest::new(Some(limit), after.map(|a| a.0)).unwrap();
        let page = repo.list_json(request).await.unwrap();
        assert_eq!(
            String::from_utf8(page.body.to_vec()).unwrap(),
            serde_json::to_string(expected).unwrap(),
            "list_json({limit}, {after:?})"
        );
        assert_eq!(page.next_after, next, "list_json({limit}, {after:?})");
    }

    // update
    tokio::time::sleep(Duration::from_millis(5)).await;
    let patch = UserPatch::parse(Some("Robert"), None).unwrap();
    let robert = repo.update(bob.id, &patch).await.unwrap().unwrap();
    assert_eq!(
        (robert.name.as_str(), robert.email.as_str()),
        ("Robert", "bob@example.com")
    );
    assert_eq!(robert.created_at, bob.created_at);
    assert!(
        robert.updated_at > bob.updated_at,
        "update must bump updated_at"
    );
    let taken = UserPatch::parse(None, Some("CY@example.com")).unwrap();
    let clash = repo.update(bob.id, &taken).await;
    assert!(
        matches!(clash, Err(Error::DuplicateEmail(_))),
        "taking another user's email must be DuplicateEmail: {clash:?}"
    );
    let own_case = UserPatch::parse(None, Some("BOB@example.com")).unwrap();
    let recased = repo.update(bob.id, &own_case).await.unwrap().unwrap();
    assert_eq!(recased.email, "BOB@example.com");
    assert_eq!(repo.update(UserId(0), &patch).await.unwrap(), None);

    // delete
    assert!(repo.delete(ada.id).await.unwrap());
    assert!(!repo.delete(ada.id).await.unwrap());
    assert_eq!(repo.get(ada.id).await.unwrap(), None);
    // Freed emails can be taken again.
    let again = repo.create(&new_user("Ada II", "ADA@example.com")).await;
    assert!(again.unwrap().id > cy.id, "ids are never reused");
}

/// Checks every promise of [`Cache`]. Keys used: `contract:*`.
pub async fn cache_contract(cache: &dyn Cache) {
    cache.ping().await.expect("ping answers");
    let (a, b, gone) = ("contract:a", "contract:b", "contract:absent");
    cache.delete(a).await.unwrap();
    cache.delete(b).await.unwrap();
    cache.delete(gone).await.unwrap();

    assert_eq!(cache.get_many(&[a, b]).await.unwrap(), vec![None, None]);
    cache
        .set(a, b"\x00bytes\n\xff", Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(
        cache.get_many(&[gone, a]).await.unwrap(),
        vec![None, Some(b"\x00bytes\n\xff".to_vec())],
        "values are bytes, returned in key order"
    );
    cache
        .set(a, b"second", Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(
        cache.get_many(&[a]).await.unwrap(),
        vec![Some(b"second".to_vec())]
    );

    // expiry
    cache
        .set(b, b"short", Duration::from_millis(1100))
        .await
        .unwrap();
    assert!(cache.get_many(&[b]).await.unwrap()[0].is_some());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        cache.get_many(&[b]).await.unwrap(),
        vec![None],
        "a value must expire after its ttl"
    );

    // counters, and their announcements
    let counter = "contract:counter";
    cache.delete(counter).await.unwrap();
    let mut watch = cache.watch(counter).await.expect("watch");
    let mut other = cache.watch("contract:other").await.expect("watch");
    assert_eq!(cache.incr(counter).await.unwrap(), 1);
    assert_eq!(cache.incr(counter).await.unwrap(), 2);
    for expected in [1, 2] {
        let announced = tokio::time::timeout(Duration::from_secs(5), watch.recv()).await;
        assert_eq!(
            announced,
            Ok(Some(expected)),
            "incr announces each new value, in order"
        );
    }
    assert!(other.try_recv().is_err(), "a watch hears only its own key");
    assert_eq!(
        cache.get_many(&[counter]).await.unwrap(),
        vec![Some(b"2".to_vec())],
        "a counter reads back as its decimal text"
    );

    cache.delete(a).await.unwrap();
    assert_eq!(cache.get_many(&[a]).await.unwrap(), vec![None]);
    cache.delete(counter).await.unwrap();
}
