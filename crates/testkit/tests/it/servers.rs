//! Private servers start, stop and restart as the drills need; databases are private per test.

use std::time::Duration;

use sqlx::Connection as _;
use testkit::{PrivateMosquitto, PrivatePostgres, Server, TestDatabase};

#[tokio::test(flavor = "multi_thread")]
async fn private_postgres_stops_and_starts_again() {
    let pg = PrivatePostgres::start().await;
    let db = TestDatabase::create_on(&pg.url()).await;
    let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
    let one: i32 = sqlx::query_scalar("SELECT 1")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(one, 1);
    pg.stop().await;
    assert!(sqlx::PgConnection::connect(&db.url).await.is_err());
    pg.start_server().await;
    let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
    sqlx::query("SELECT 1").execute(&mut conn).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn private_mosquitto_uses_the_project_config() {
    let mut broker = PrivateMosquitto::start().await;
    broker.restart().await;
    testkit::wait_for_port(broker.port, Duration::from_secs(5)).await;
    // The project config logs connections to the file we pointed it at.
    assert!(
        broker.log().contains("New connection from"),
        "{}",
        broker.log()
    );
}

#[tokio::test]
async fn shared_databases_are_private_per_test() {
    if !testkit::require(Server::Postgres, "shared_databases_are_private_per_test") {
        return;
    }
    let a = TestDatabase::create().await;
    let b = TestDatabase::create().await;
    assert_ne!(a.url, b.url);
}
