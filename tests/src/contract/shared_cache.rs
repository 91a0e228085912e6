//! The shared cache contract.

use chrono::{DateTime, Utc};
use relay_domain::ports::{Expect, SharedCache, StoreError};

/// Generates one `#[tokio::test]` per case; `$make` is an async fn returning a fresh cache.
#[macro_export]
macro_rules! shared_cache_contract {
    ($make:path) => {
        mod shared_cache_contract {
            use super::*;
            $crate::shared_cache_contract!(@cases $make;
                absent_put_then_versioned_updates,
                a_stale_writer_loses,
                expired_entries_read_as_absent_and_can_be_replaced,
                remove_only_removes_the_version_it_names,
                racing_first_writers_have_one_winner,
            );
        }
    };
    (@cases $make:path; $($case:ident),+ $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                $crate::contract::shared_cache::$case($make().await).await;
            }
        )+
    };
}

fn t(secs: i64) -> DateTime<Utc> {
    DateTime::<Utc>::from_timestamp(1_770_000_000 + secs, 0).unwrap()
}

pub async fn absent_put_then_versioned_updates<C: SharedCache>(cache: C) {
    assert_eq!(cache.get("token/5265877635", t(0)).await.unwrap(), None);
    let first = cache
        .put("token/5265877635", "a".into(), t(900), Expect::Absent, t(0))
        .await
        .unwrap();
    assert_eq!((first.value.as_str(), first.version, first.expires_at), ("a", 1, t(900)));
    let second = cache
        .put("token/5265877635", "b".into(), t(1800), Expect::Version(1), t(10))
        .await
        .unwrap();
    assert_eq!(second.version, 2);
    assert_eq!(cache.get("token/5265877635", t(20)).await.unwrap(), Some(second));
    assert_eq!(cache.get("token/other", t(20)).await.unwrap(), None);
}

pub async fn a_stale_writer_loses<C: SharedCache>(cache: C) {
    cache.put("session/1", "s1".into(), t(900), Expect::Absent, t(0)).await.unwrap();
    cache.put("session/1", "s2".into(), t(900), Expect::Version(1), t(1)).await.unwrap();
    let err = cache
        .put("session/1", "s3".into(), t(900), Expect::Version(1), t(2))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::VersionConflict { .. }), "{err:?}");
    let err = cache.put("session/1", "s4".into(), t(900), Expect::Absent, t(3)).await.unwrap_err();
    assert!(
        matches!(err, StoreError::VersionConflict { .. }),
        "a live entry is not absent: {err:?}"
    );
    assert_eq!(cache.get("session/1", t(4)).await.unwrap().unwrap().value, "s2");
    let err = cache.put("never", "x".into(), t(900), Expect::Version(1), t(0)).await.unwrap_err();
    assert!(matches!(err, StoreError::VersionConflict { .. }), "{err:?}");
}

pub async fn expired_entries_read_as_absent_and_can_be_replaced<C: SharedCache>(cache: C) {
    cache.put("token/x", "old".into(), t(100), Expect::Absent, t(0)).await.unwrap();
    assert!(cache.get("token/x", t(99)).await.unwrap().is_some());
    assert_eq!(cache.get("token/x", t(100)).await.unwrap(), None, "expired at its expiry instant");
    let fresh = cache.put("token/x", "new".into(), t(1000), Expect::Absent, t(101)).await.unwrap();
    assert_eq!(fresh.value, "new");
    assert!(fresh.version > 1, "versions keep growing across expiry");
}

pub async fn remove_only_removes_the_version_it_names<C: SharedCache>(cache: C) {
    let e = cache.put("session/2", "s".into(), t(900), Expect::Absent, t(0)).await.unwrap();
    let e2 = cache
        .put("session/2", "s'".into(), t(900), Expect::Version(e.version), t(1))
        .await
        .unwrap();
    cache.remove("session/2", e.version).await.unwrap();
    assert_eq!(
        cache.get("session/2", t(2)).await.unwrap(),
        Some(e2.clone()),
        "a newer entry survives"
    );
    cache.remove("session/2", e2.version).await.unwrap();
    assert_eq!(cache.get("session/2", t(2)).await.unwrap(), None);
    cache.remove("session/2", 99).await.unwrap();
}

pub async fn racing_first_writers_have_one_winner<C: SharedCache>(cache: C) {
    let writes = (0..6).map(|i| {
        let cache = &cache;
        async move { cache.put("token/race", format!("w{i}"), t(900), Expect::Absent, t(0)).await }
    });
    let results = futures::future::join_all(writes).await;
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 1, "{results:?}");
}
