use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use futures::stream::FuturesOrdered;
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;

use crate::queue::Queue;
use crate::{Acker, Config, Envelope, Intake, Shared, Sink, Stats, StatsSnapshot};

/// A running pipeline: the batcher and the acker tasks.
pub struct Pipeline<A> {
    shared: Arc<Shared<A>>,
    task: JoinHandle<Result<(), PipelineFailed>>,
}

impl<A> std::fmt::Debug for Pipeline<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline").finish_non_exhaustive()
    }
}

/// A write task panicked: a bug. The pipeline stops rather than acknowledge around a hole; the
/// unacknowledged messages are redelivered by the broker when the service restarts.
#[derive(Debug, thiserror::Error)]
#[error("pipeline stopped: a write task failed: {0}")]
pub struct PipelineFailed(String);

/// Starts a pipeline writing to `sink` and acknowledging through `acker`.
pub fn start<A, S, K>(config: Config, sink: Arc<S>, acker: K) -> (Intake<A>, Pipeline<A>)
where
    A: Send + 'static,
    S: Sink,
    K: Acker<A>,
{
    let shared = Arc::new(Shared {
        queue: Queue::new(config.queue_capacity),
        stats: Arc::new(Stats::default()),
        failed: AtomicBool::new(false),
        failure: Notify::new(),
    });
    let (ack_tx, ack_rx) = mpsc::unbounded_channel();
    let acker_task = tokio::spawn(run_acker(acker, ack_rx));
    let batcher = Batcher {
        shared: shared.clone(),
        config,
        sink,
        ack_tx,
    };
    let failed = shared.clone();
    let task = tokio::spawn(async move {
        let result = batcher.run().await;
        if result.is_err() {
            failed.failed.store(true, Ordering::Release);
            failed.failure.notify_waiters();
        }
        // The batcher dropped its sender: the acker finishes the acks it has, then stops.
        let _ = acker_task.await;
        result
    });
    (
        Intake {
            shared: shared.clone(),
        },
        Pipeline { shared, task },
    )
}

impl<A: Send + 'static> Pipeline<A> {
    pub fn stats(&self) -> StatsSnapshot {
        self.shared.stats.snapshot(self.shared.queue.len())
    }

    pub fn stats_handle(&self) -> Arc<Stats> {
        self.shared.stats.clone()
    }

    /// Stops taking messages, writes everything already queued, and returns once every written
    /// message has been handed to the acker.
    pub async fn drain(self) -> Result<(), PipelineFailed> {
        self.shared.queue.close();
        match self.task.await {
            Ok(result) => result,
            Err(e) => Err(PipelineFailed(e.to_string())),
        }
    }

    /// Resolves if the pipeline stops on its own, which only a failure does; a service runs it
    /// as a task beside its others. Owns what it needs: it outlives the borrow of `self`.
    pub fn failed(&self) -> impl Future<Output = ()> + Send + 'static {
        let shared = self.shared.clone();
        async move {
            loop {
                let notified = shared.failure.notified();
                tokio::pin!(notified);
                // Registered before the check, so a failure between the two is not missed.
                notified.as_mut().enable();
                if shared.failed.load(Ordering::Acquire) {
                    return;
                }
                notified.await;
            }
        }
    }
}

async fn run_acker<A, K: Acker<A>>(mut acker: K, mut rx: mpsc::UnboundedReceiver<Vec<A>>) {
    while let Some(tokens) = rx.recv().await {
        acker.ack(tokens).await;
    }
}

/// The records and tokens of the batch being gathered.
struct Pending<A> {
    batch: model::Batch,
    acks: Vec<A>,
    received: Vec<Instant>,
    first_at: Option<Instant>,
}

impl<A> Pending<A> {
    fn new() -> Self {
        Pending {
            batch: model::Batch::default(),
            acks: Vec::new(),
            received: Vec::new(),
            first_at: None,
        }
    }

    fn add(&mut self, env: Envelope<A>) {
        let Envelope {
            records,
            ack,
            received,
        } = env;
        self.first_at.get_or_insert(received);
        self.batch.points.extend(records.points);
        self.batch.sessions.extend(records.sessions);
        self.batch.events.extend(records.events);
        self.batch.dead_letters.extend(records.dead_letters);
        self.acks.extend(ack);
        self.received.push(received);
    }

    fn is_empty(&self) -> bool {
        self.received.is_empty()
    }

    fn take(&mut self) -> Pending<A> {
        std::mem::replace(self, Pending::new())
    }
}

struct Batcher<A, S> {
    shared: Arc<Shared<A>>,
    config: Config,
    sink: Arc<S>,
    ack_tx: mpsc::UnboundedSender<Vec<A>>,
}

impl<A: Send + 'static, S: Sink> Batcher<A, S> {
    async fn run(self) -> Result<(), PipelineFailed> {
        let queue = &self.shared.queue;
        let max = self.config.batch_max_records;
        let linger = self.config.flush_interval();
        let mut pending = Pending::new();
        let mut inflight: FuturesOrdered<JoinHandle<Vec<A>>> = FuturesOrdered::new();

        loop {
            let mut took = false;
            while pending.batch.len() < max {
                match queue.pop() {
                    Some(env) => {
                        pending.add(env);
                        took = true;
                    }
                    None => break,
                }
            }
            if took {
                queue.made_space();
                crate::metrics::queue_depth(queue.len());
            }

            let closed = queue.is_closed();
            let writer_free = inflight.len() < self.config.writers;
            if writer_free && !pending.is_empty() {
                let full = pending.batch.len() >= max;
                let lingered = pending.first_at.is_some_and(|t| t.elapsed() >= linger);
                // Nobody is writing and nothing more is queued: waiting would only add latency.
                let idle = inflight.is_empty() && queue.len() == 0;
                if full || lingered || idle || closed {
                    inflight.push_back(self.spawn_write(pending.take()));
                    continue;
                }
            }
            if closed && pending.is_empty() && queue.len() == 0 && inflight.is_empty() {
                return Ok(());
            }

            let deadline = pending
                .first_at
                .map(|t| tokio::time::Instant::from_std(t + linger));
            tokio::select! {
                biased;
                Some(done) = inflight.next(), if !inflight.is_empty() => {
                    let acks = done.map_err(|e| PipelineFailed(e.to_string()))?;
                    if !acks.is_empty() {
                        self.shared.stats.acks_released.fetch_add(acks.len() as u64, Ordering::Relaxed);
                        // The acker only goes away when the runtime does.
                        let _ = self.ack_tx.send(acks);
                    }
                }
                () = queue.data_ready.notified(), if pending.batch.len() < max && !closed => {}
                () = sleep_until(deadline), if writer_free && deadline.is_some() => {}
            }
        }
    }

    fn spawn_write(&self, pending: Pending<A>) -> JoinHandle<Vec<A>> {
        let sink = self.sink.clone();
        let stats = self.shared.stats.clone();
        let (min, max) = (
            Duration::from_millis(self.config.retry_min_ms),
            Duration::from_millis(self.config.retry_max_ms),
        );
        tokio::spawn(async move {
            let Pending {
                batch,
                acks,
                received,
                ..
            } = pending;
            if batch.is_empty() {
                return acks;
            }
            let mut delay = min;
            loop {
                let started = Instant::now();
                match sink.write(&batch).await {
                    Ok(committed) => {
                        stats.committed(&batch, &received, &committed, started.elapsed());
                        return acks;
                    }
                    Err(error) => {
                        stats.write_failures.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(
                            %error,
                            records = batch.len(),
                            retry_in_ms = delay.as_millis() as u64,
                            "batch write failed; retrying (its messages stay unacknowledged)"
                        );
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(max);
                    }
                }
            }
        })
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
