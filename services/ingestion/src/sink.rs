//! The pipeline's two ends: the sink (the durable store, then — best effort, off the critical
//! path — the cache) and the acker (PUBACKs to the broker).

use tokio::sync::mpsc;

use pipeline::{Committed, SinkError};
use store::{Destination, DurableStore};

pub(crate) struct StoreSink {
    pub(crate) store: DurableStore,
    /// Committed batches' cache updates. Bounded: when the cache falls behind (Redis slow or
    /// down) updates are dropped — the cache is never the source of truth, the next batch
    /// refreshes it, and ingestion must not wait for it.
    pub(crate) cache_updates: mpsc::Sender<cache::Update>,
}

impl pipeline::Sink for StoreSink {
    async fn write(&self, batch: &model::Batch) -> Result<Committed, SinkError> {
        let written = self.store.write(batch).await?;
        let update = cache::Update::from_batch(batch);
        if !update.is_empty() && self.cache_updates.try_send(update).is_err() {
            crate::metrics::cache_update_dropped();
        }
        Ok(Committed {
            fallback: written.destination == Destination::Fallback,
            points_inserted: written.outcome.points_inserted,
            points_duplicate: written.outcome.points_duplicate,
        })
    }
}

/// Applies cache updates until every sender is gone.
pub(crate) async fn run_cache_updates(cache: cache::Cache, mut rx: mpsc::Receiver<cache::Update>) {
    while let Some(update) = rx.recv().await {
        // Failures are counted and logged (on change) by the cache itself.
        let _ = cache.apply(&update).await;
    }
}

/// The pipeline hands committed messages' tokens here, in receive order; MQTT sends their
/// PUBACKs. (The mqtt crate knows nothing of the pipeline, nor the pipeline of MQTT.)
pub(crate) struct BrokerAcks(pub(crate) mqtt::MqttAcker);

impl pipeline::Acker<mqtt::AckToken> for BrokerAcks {
    async fn ack(&mut self, tokens: Vec<mqtt::AckToken>) {
        self.0.ack(tokens).await;
    }
}
