//! Properties over any input: validation either yields a valid value or names the offending
//! fields, and keyset paging visits every row exactly once, in order.

use std::sync::Arc;

use proptest::prelude::*;
use userstack_core::memory::{InMemoryCache, InMemoryUserRepository};
use userstack_core::{
    Error, MAX_PAGE_LIMIT, NewUser, PageRequest, ServiceConfig, User, UserId, UserPatch,
    UserService, json,
};

/// Strings that reach every branch of the validators: empty, blank, control characters, `@`s,
/// dots and dashes in odd places, non-ASCII, and long ones.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[ \t]{0,3}[a-z]{0,5}[@.\\-]{0,2}[a-zé]{0,5}[.\\-]{0,2}[a-z]{0,4}[ \t]{0,3}",
        "[a-zA-Z0-9._%+-]{1,70}@[a-z0-9-]{1,20}(\\.[a-z0-9-]{1,10}){0,3}",
        "\\PC{90,110}",
        "[\\x00-\\x1f\\x7f-\\x9f a]{0,4}",
    ]
}

fn assert_named(error: &Error, allowed: &[&str]) {
    let Error::Validation(fields) = error else {
        panic!("not a validation error: {error:?}");
    };
    assert!(!fields.is_empty());
    for field in fields {
        assert!(allowed.contains(&field.field.as_str()), "{field:?}");
        assert!(!field.message.is_empty());
    }
}

proptest! {
    // Failures print their minimal input; no regression files are written into the tree.
    #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::with_cases(2000) })]

    #[test]
    fn a_new_user_is_valid_or_each_bad_field_is_named(name in text(), email in text()) {
        match NewUser::parse(&name, &email) {
            Ok(user) => {
                let n = user.name.as_str();
                prop_assert_eq!(n, name.trim());
                prop_assert!(!n.is_empty() && n.chars().count() <= 100);
                prop_assert!(!n.chars().any(char::is_control));
                let e = user.email.as_str();
                prop_assert_eq!(e, email.trim());
                prop_assert!(e.len() <= 254 && e.matches('@').count() == 1);
                prop_assert!(!e.chars().any(char::is_whitespace));
            }
            Err(invalid) => {
                let error = Error::from(invalid);
                assert_named(&error, &["name", "email"]);
                // Each field is named exactly when that field alone is invalid.
                let Error::Validation(fields) = &error else { unreachable!() };
                let named = |f: &str| fields.iter().any(|e| e.field == f);
                prop_assert_eq!(named("name"), NewUser::parse(&name, "a@example.com").is_err());
                prop_assert_eq!(named("email"), NewUser::parse("Ada", &email).is_err());
            }
        }
    }

    #[test]
    fn a_patch_is_valid_or_each_bad_field_is_named(
        name in proptest::option::of(text()),
        email in proptest::option::of(text()),
    ) {
        match UserPatch::parse(name.as_deref(), email.as_deref()) {
            Ok(patch) => {
                prop_assert_eq!(patch.name.is_some(), name.is_some());
                prop_assert_eq!(patch.email.is_some(), email.is_some());
            }
            Err(invalid) => assert_named(&Error::from(invalid), &["name", "email", "body"]),
        }
    }

    /// The hand-written JSON is byte for byte serde_json's of the same user in UTC, whatever the
    /// text and the instant (at any offset, written as the same instant in UTC; any year `time`
    /// can hold: both refuse the same ones).
    #[test]
    fn users_serialise_as_serde_json_does(
        id in any::<i64>(),
        name in any::<String>(),
        email in text(),
        created in -377_705_000_000i64..253_402_000_000,
        nanos in prop_oneof![Just(0u32), 0u32..1_000_000_000, (0u32..1000).prop_map(|m| m * 1_000_000)],
        offset in prop_oneof![Just(0i32), -86_399i32..86_400],
    ) {
        let offset = time::UtcOffset::from_whole_seconds(offset).unwrap();
        let at = time::OffsetDateTime::from_unix_timestamp(created).unwrap()
            .replace_nanosecond(nanos).unwrap()
            .to_offset(offset);
        let user = User { id: UserId(id), name, email, created_at: at, updated_at: at };
        let utc = at.to_offset(time::UtcOffset::UTC);
        let in_utc = User { created_at: utc, updated_at: utc, ..user.clone() };
        prop_assert_eq!(json::user((&user).into()).ok(), serde_json::to_vec(&in_utc).ok());
    }

    #[test]
    fn page_parameters_are_in_range_or_named(
        limit in proptest::option::of(prop_oneof![any::<i64>(), -2i64..1100]),
        after in proptest::option::of(prop_oneof![any::<i64>(), -2i64..10]),
    ) {
        match PageRequest::new(limit, after) {
            Ok(page) => {
                prop_assert!((1..=MAX_PAGE_LIMIT).contains(&page.limit()));
                prop_assert_eq!(i64::from(page.limit()), limit.unwrap_or(100));
                prop_assert_eq!(page.after().map(|a| a.0), after);
            }
            Err(error) => assert_named(&error, &["limit", "after"]),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::with_cases(200) })]

    /// Whatever rows exist (ids with gaps from deletions) and whatever page size, following the
    /// cursor from the start visits every row exactly once, in ascending id order, and the last
    /// page says there is no next one — also when the pages come from the cache.
    #[test]
    fn paging_visits_every_row_once_in_order(
        rows in 0usize..60,
        deleted in proptest::collection::vec(any::<bool>(), 60),
        limit in 1u32..12,
        twice in any::<bool>(),
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let service = UserService::new(
                Arc::new(InMemoryUserRepository::new()),
                Arc::new(InMemoryCache::new()),
                ServiceConfig::default(),
            );
            let mut kept = Vec::new();
            for (i, &delete) in deleted.iter().enumerate().take(rows) {
                let email = format!("u{i}@example.com");
                let user = service.create_user(NewUser::parse("U", &email).unwrap()).await.unwrap();
                if delete {
                    service.delete_user(user.id).await.unwrap();
                } else {
                    kept.push(user.id);
                }
            }
            // A second pass reads the pages the first one cached.
            for _ in 0..if twice { 2 } else { 1 } {
                let mut seen: Vec<UserId> = Vec::new();
                let mut after = None;
                loop {
                    let request = PageRequest::new(Some(i64::from(limit)), after).unwrap();
                    let page = service.list_users(request).await.unwrap();
                    assert!(page.users.len() <= limit as usize);
                    seen.extend(page.users.iter().map(|u| u.id));
                    match page.next_after {
                        Some(next) => {
                            assert_eq!(Some(next), page.users.last().map(|u| u.id));
                            after = Some(next.0);
                        }
                        None => break,
                    }
                    assert!(seen.len() <= kept.len(), "paging does not end");
                }
                assert_eq!(seen, kept);
            }
        });
    }
}
