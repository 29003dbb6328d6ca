//! End-to-end `Store::write` of one batch against the shared PostgreSQL (a fresh database), at
//! 10, 100, 1000 and 10 000 points per batch. Every iteration writes a new session, so rows are
//! really inserted rather than absorbed as duplicates.
//!
//! Without a PostgreSQL at `SIMCORP_TEST_POSTGRES_ADDR` (default 127.0.0.1:5432) it says so and
//! exits successfully, so `cargo bench` works on any machine.
//!
//! `SIMCORP_BENCH_PG_SOCKET_DIR=/var/run/postgresql` connects the store through that server's Unix
//! socket instead of TCP: sqlx 0.9.0 leaves Nagle's algorithm on for TCP (launchbadge/sqlx#4335),
//! and comparing the two shows what that costs.

use std::net::{TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use criterion::{BatchSize, BenchmarkId, Criterion, Throughput};
use store::{PgStore, PostgresConfig, Store};
use testkit::{Server, TestDatabase};

fn reachable(addr: &str) -> bool {
    addr.to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .is_some_and(|a| TcpStream::connect_timeout(&a, Duration::from_secs(2)).is_ok())
}

fn main() {
    let addr = Server::Postgres.addr();
    if !reachable(&addr) {
        eprintln!(
            "pg_write: PostgreSQL is not reachable at {addr}; nothing measured. Start it (or set \
             SIMCORP_TEST_POSTGRES_ADDR) to run this benchmark."
        );
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let db = rt.block_on(TestDatabase::create());
    let url = match std::env::var("SIMCORP_BENCH_PG_SOCKET_DIR") {
        Ok(dir) => format!("postgres://postgres@localhost/{}?host={dir}", db.name),
        Err(_) => db.url.clone(),
    };
    let mut criterion = Criterion::default().configure_from_args();
    let mut group = criterion.benchmark_group("pg_write");
    let session = AtomicU64::new(0);
    let store = rt.block_on(async {
        let cfg = PostgresConfig {
            statement_timeout_ms: 60_000,
            ..PostgresConfig::default()
        };
        let pg = PgStore::connect(&url, &cfg).expect("valid URL");
        pg.migrate().await.expect("migrations");
        pg.ensure_partitions(model::now_ms(), 1, 1)
            .await
            .expect("partitions");
        Store::Postgres(pg)
    });
    for n in [10usize, 100, 1000, 10_000] {
        group.throughput(Throughput::Elements(n as u64));
        group.bench_function(BenchmarkId::new("unnest", n), |b| {
            b.to_async(&rt).iter_batched(
                || {
                    let s = format!("bench-{}", session.fetch_add(1, Ordering::Relaxed));
                    benches::telemetry_batch("roaster-bench", &s, 0, n, model::now_ms())
                },
                |batch| {
                    let store = store.clone();
                    async move {
                        let outcome = store.write(&batch).await.expect("write");
                        assert_eq!(outcome.points_inserted, n as u64);
                    }
                },
                BatchSize::PerIteration,
            )
        });
    }
    group.finish();
    criterion.final_summary();
}
