//! The bounded, lock-free hand-off from producers to the batcher.
//!
//! `crossbeam::queue::ArrayQueue` carries the envelopes; two `tokio::sync::Notify`s carry the
//! wake-ups ("data is there", "space is there"). Notify stores a permit when nobody waits, so a
//! wake-up sent between a failed pop/push and the wait is never lost.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crossbeam::queue::ArrayQueue;
use tokio::sync::Notify;

use crate::{Envelope, Shared};

pub(crate) struct Queue<A> {
    items: ArrayQueue<Envelope<A>>,
    pub(crate) data_ready: Notify,
    space_ready: Notify,
    closed: AtomicBool,
}

impl<A> Queue<A> {
    pub(crate) fn new(capacity: usize) -> Self {
        Queue {
            items: ArrayQueue::new(capacity.max(1)),
            data_ready: Notify::new(),
            space_ready: Notify::new(),
            closed: AtomicBool::new(false),
        }
    }

    pub(crate) fn pop(&self) -> Option<Envelope<A>> {
        self.items.pop()
    }

    /// Called by the batcher after it took items out.
    pub(crate) fn made_space(&self) {
        self.space_ready.notify_one();
    }

    pub(crate) fn len(&self) -> usize {
        self.items.len()
    }

    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.data_ready.notify_one();
        // Wake producers stuck on a full queue so they see the closure.
        self.space_ready.notify_waiters();
        self.space_ready.notify_one();
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }
}

/// The pipeline has stopped taking new messages (it is draining).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the pipeline is closed")]
pub struct Closed;

/// The producer side of a pipeline. Cheap to clone.
pub struct Intake<A> {
    pub(crate) shared: Arc<Shared<A>>,
}

impl<A> Clone for Intake<A> {
    fn clone(&self) -> Self {
        Intake {
            shared: self.shared.clone(),
        }
    }
}

impl<A> std::fmt::Debug for Intake<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Intake")
            .field("depth", &self.depth())
            .finish()
    }
}

impl<A: Send + 'static> Intake<A> {
    /// Queues `envelope`, waiting while the queue is full. This wait is the backpressure: the
    /// caller (the MQTT polling task) stops reading from the broker until there is room.
    pub async fn send(&self, envelope: Envelope<A>) -> Result<(), Closed> {
        let queue = &self.shared.queue;
        self.shared.stats.message_in(envelope.records.points.len());
        let mut envelope = envelope;
        let mut waited = false;
        loop {
            if queue.is_closed() {
                return Err(Closed);
            }
            match queue.items.push(envelope) {
                Ok(()) => {
                    queue.data_ready.notify_one();
                    if waited {
                        crate::metrics::backpressure_released();
                    }
                    return Ok(());
                }
                Err(back) => envelope = back,
            }
            if !waited {
                waited = true;
                crate::metrics::backpressure_engaged();
            }
            queue.space_ready.notified().await;
        }
    }
}

impl<A> Intake<A> {
    /// Messages waiting in the queue.
    pub fn depth(&self) -> usize {
        self.shared.queue.len()
    }
}
