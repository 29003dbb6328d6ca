//! company-kernel (3000): the platform's mission queue, first of the operations layer. Work
//! that must get done — a roast report, an evaluation — is a mission: submitted once per
//! idempotency key, claimed by a worker under a lease, kept alive by heartbeats, finished by
//! that worker only; a failed attempt, or a worker that went silent (`kill -9`) and let its
//! lease run out, sends the mission back to the queue after a backoff, until its last attempt
//! leaves it dead with every attempt's reason kept.
//!
//! ```text
//! submitter ─POST /missions─▶ api ─▶ store::MissionsStore (PostgreSQL, or missions.db)
//! worker ─POST /missions/claim─▶      (claims FOR UPDATE SKIP LOCKED, by priority then age)
//!        ─POST …/{id}/heartbeat|complete|fail (with the claim's lease token)─▶
//! sweeper (every sweep_interval_ms) ─▶ expired leases requeued or dead; passed deadlines dead
//! ```
//!
//! State lives in the store only: any number of replicas can serve the same queue, and a
//! restart loses nothing. Handlers must be idempotent by mission id — a worker that lost its
//! lease may have done part of the work before another worker does it again. Not here yet
//! (issue 12): governance policies, decision traces, the dispatcher that submits missions.

mod api;
mod config;
mod metrics;

use std::sync::Arc;
use std::time::Duration;

use kit::service::{Error, Lifecycle, Service, Spec};
use secrecy::ExposeSecret as _;

pub use config::{Config, Settings};

/// The mission queue: `simcorp serve company-kernel`.
pub struct CompanyKernel;

impl Service for CompanyKernel {
    const SPEC: Spec = kit::spec!("company-kernel", "company_kernel", 3000);
    type Config = Config;

    async fn run(config: Config, service: Lifecycle) -> Result<(), Error> {
        queue(config, service).await
    }
}

async fn queue(config: Config, mut service: Lifecycle) -> Result<(), Error> {
    let settings = Arc::new(config.company_kernel.clone());
    let store = match &config.postgres.url {
        Some(url) => store::MissionsStore::postgres(url.expose_secret(), &config.postgres).await,
        None => store::MissionsStore::sqlite(&config.data_dir, &config.sqlite).await,
    }
    .map_err(|e| Error::start("opening the mission store", e))?;
    {
        let (store, settings) = (store.clone(), settings.clone());
        let every = Duration::from_millis(settings.sweep_interval_ms);
        service.spawn("sweeper", move |stop| async move {
            loop {
                sweep(&store, &settings).await;
                tokio::select! {
                    () = stop.cancelled() => return Ok::<(), Error>(()),
                    () = tokio::time::sleep(every) => {}
                }
            }
        });
    }
    service.serve(api::router(api::Api {
        store: store.clone(),
        settings: settings.clone(),
    }));
    tracing::info!(
        store = if config.postgres.url.is_some() {
            "postgres"
        } else {
            "sqlite"
        },
        "company-kernel started"
    );
    let outcome = service.wait().await;
    store.close().await;
    service.stop(outcome).await
}

/// Missions whose worker went silent go back to the queue (or die on their last attempt);
/// missions past their deadline die.
async fn sweep(store: &store::MissionsStore, settings: &Settings) {
    let now = model::now_ms();
    match store
        .expire_leases(now, |attempts| settings.backoff_ms(attempts))
        .await
    {
        Ok(0) => {}
        Ok(n) => {
            metrics::ended("lease_expired", n as u64);
            tracing::warn!(
                missions = n,
                "leases expired: their workers went silent; retried"
            );
        }
        Err(error) => tracing::warn!(%error, "could not expire leases; trying again"),
    }
    match store.expire_deadlines(now).await {
        Ok(0) => {}
        Ok(n) => {
            metrics::ended("dead", n);
            tracing::warn!(
                missions = n,
                "missions passed their deadline unclaimed: dead"
            );
        }
        Err(error) => tracing::warn!(%error, "could not expire deadlines; trying again"),
    }
}
