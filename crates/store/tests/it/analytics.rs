//! Analytics' store, the same on both backends: reference profiles are created once by id and
//! by name, listed without their curves, found by id or name, and deleted with the sessions
//! they were set for.

use store::{AnalyticsStore, ErrorKind, ProfileInfo, StoredProfile};

fn profile(id: &str, name: &str, created_ms: i64) -> StoredProfile {
    StoredProfile {
        info: ProfileInfo {
            id: id.into(),
            name: name.into(),
            source: "json".into(),
            origin: "test".into(),
            created_ms,
            points: 2,
        },
        profile: r#"{"points":[{"t_ms":0,"bt":200.0},{"t_ms":1000,"bt":150.5}],"events":[]}"#
            .into(),
    }
}

async fn profiles_round_trip(store: &AnalyticsStore) {
    store.ping().await.unwrap();
    store
        .create_profile(&profile("p1", "house", 1))
        .await
        .unwrap();
    store
        .create_profile(&profile("p2", "light", 2))
        .await
        .unwrap();

    let again = store.create_profile(&profile("p1", "other", 3)).await;
    assert_eq!(again.unwrap_err().kind(), ErrorKind::Conflict, "same id");
    let again = store.create_profile(&profile("p3", "house", 3)).await;
    assert_eq!(again.unwrap_err().kind(), ErrorKind::Conflict, "same name");

    let listed: Vec<String> = store
        .profiles()
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.id)
        .collect();
    assert_eq!(listed, ["p2", "p1"], "newest first");

    let by_id = store.profile("p1").await.unwrap().unwrap();
    assert_eq!(by_id.info, profile("p1", "house", 1).info);
    let json: serde_json::Value = serde_json::from_str(&by_id.profile).unwrap();
    assert_eq!(json["points"][1]["bt"], 150.5);
    assert_eq!(store.profile("light").await.unwrap().unwrap().info.id, "p2");
    assert!(store.profile("nope").await.unwrap().is_none());
}

async fn references_follow_their_profile(store: &AnalyticsStore) {
    store
        .create_profile(&profile("p1", "house", 1))
        .await
        .unwrap();
    store
        .create_profile(&profile("p2", "light", 2))
        .await
        .unwrap();
    assert_eq!(store.reference("s1").await.unwrap(), None);
    store.set_reference("s1", "p1", 10).await.unwrap();
    store.set_reference("s2", "p1", 10).await.unwrap();
    store.set_reference("s1", "p2", 11).await.unwrap();
    assert_eq!(store.reference("s1").await.unwrap().as_deref(), Some("p2"));

    assert!(store.delete_profile("p1").await.unwrap());
    assert!(!store.delete_profile("p1").await.unwrap(), "already gone");
    assert_eq!(
        store.reference("s2").await.unwrap(),
        None,
        "forgotten with it"
    );
    assert_eq!(store.reference("s1").await.unwrap().as_deref(), Some("p2"));
}

macro_rules! analytics_suite {
    ($($test:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $test() {
                    let dir = tempfile::tempdir().unwrap();
                    let store = store::AnalyticsStore::sqlite(dir.path(), &store::SqliteConfig::default())
                        .await
                        .unwrap();
                    super::$test(&store).await;
                    store.close().await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $test() {
                    let name = concat!("analytics::postgres::", stringify!($test));
                    if !testkit::require(testkit::Server::Postgres, name) {
                        return;
                    }
                    let db = testkit::TestDatabase::create().await;
                    let store = store::AnalyticsStore::postgres(&db.url, &store::PostgresConfig::default())
                        .await
                        .unwrap();
                    super::$test(&store).await;
                    store.close().await;
                }
            )*
        }
    };
}

analytics_suite!(profiles_round_trip, references_follow_their_profile);
