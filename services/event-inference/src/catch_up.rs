//! Catching up from the store: this service keeps no state of its own, so after a restart it
//! reads what it missed through the `history` crate — from PostgreSQL directly when
//! `[postgres] url` is set, else through ingestion's HTTP API (`event_inference.catch_up_url`;
//! the embedded deployment).
//!
//! - A session met mid-roast: its roaster model and state, the events already stored, and its
//!   readings from a minute before the last of them (all of them if none): the detector resumes
//!   after the stored events (`roast::Detector::resume`) instead of reading the whole roast
//!   again. Measured at 10,000 points/s, reading a thousand whole sessions back through
//!   ingestion's API after a 5-minute outage took ingestion's publish→commit p95 from 2 ms to
//!   268 ms for half a minute.
//! - At start, the *sweep*: the sessions updated within `catch_up_window_secs` that have no
//!   DROP stored yet — those that ran, or ended, while this service was away. Their events are
//!   published like any other; ingestion stores an event once, so one said twice costs nothing.
//!
//! The tracker alone decides what is read back (a session met both live and by the sweep is
//! read once). Fetches run one at a time and are paced by what the live stream leaves of
//! `catch_up_points_per_sec` (readings a second, live and read back together; at least a tenth
//! of it): catching up takes a share of the store beside ingestion under full load, and speeds
//! up as soon as the stream quiets.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use history::HistoryError;
use roast::{Detected, Method};
use tokio::sync::{Semaphore, mpsc};

use crate::tracker::{History, Input, Key};

/// Readings kept before the last stored event, to fill the detector's windows.
const WARM_MS: i64 = 60_000;

fn detected(e: &model::RoastEvent) -> Detected {
    Detected {
        kind: e.kind,
        ts_ms: e.ts_ms,
        // Only a fallback for the lowest reading after CHARGE: anything read beats it.
        bt: e.bt.unwrap_or(f64::INFINITY),
        et: e.et,
        ror: e.ror,
        method: Method::parse(&e.method).unwrap_or(Method::BtPrior),
    }
}

/// A session's past: what is known of it, and its readings from a minute before its last
/// stored event.
pub(crate) async fn history(source: &history::Source, key: &Key) -> Result<History, HistoryError> {
    let (device, session) = key;
    let record = source.record(device, session).await?;
    let said: Vec<Detected> = source
        .events(session)
        .await?
        .iter()
        .filter(|e| &e.device_id == device)
        .map(detected)
        .collect();
    let from = said.iter().map(|e| e.ts_ms).max().map(|t| t - WARM_MS);
    let dropped = said.iter().any(|e| e.kind == roast::EventKind::Drop);
    let readings = if dropped {
        // Nothing more to say of a roast that was dropped: its readings are not needed.
        Vec::new()
    } else {
        source.readings(device, session, from).await?
    };
    Ok(History {
        key: key.clone(),
        model: record
            .as_ref()
            .and_then(|r| crate::config::roaster_model(&r.metadata)),
        ended: record.is_some_and(|r| r.ended_ms.is_some()),
        readings,
        said,
    })
}

/// The sessions updated since `since_ms` that have no DROP stored.
pub(crate) async fn unfinished(
    source: &history::Source,
    since_ms: i64,
) -> Result<Vec<Key>, HistoryError> {
    let mut out = Vec::new();
    for record in source.sessions(None, history::MAX_SESSIONS).await? {
        if record.updated_ms < since_ms {
            continue;
        }
        let dropped = source
            .events(&record.session)
            .await?
            .iter()
            .any(|e| e.device_id == record.device_id && e.kind == roast::EventKind::Drop);
        if !dropped {
            out.push((record.device_id, record.session));
        }
    }
    Ok(out)
}

/// Fetches sessions' past readings in the background, one at a time and paced, and hands them
/// to the detection task. A restart under load meets a thousand sessions mid-roast at once;
/// fetched together they would take the store from ingestion.
#[derive(Clone)]
pub(crate) struct Fetcher {
    source: Option<history::Source>,
    tx: mpsc::Sender<Input>,
    permit: Arc<Semaphore>,
    pace: Arc<Pace>,
}

/// Readings a second read back: what the live stream leaves of the budget, at least a tenth.
struct Pace {
    budget: f64,
    /// Live readings in the last second, set by the detection task.
    live: AtomicU64,
}

impl Pace {
    fn points_per_sec(&self) -> f64 {
        let live = self.live.load(Ordering::Relaxed) as f64;
        (self.budget - live).max(self.budget / 10.0)
    }
}

impl Fetcher {
    /// `budget`: readings a second, live and read back together.
    pub(crate) fn new(
        source: Option<history::Source>,
        tx: mpsc::Sender<Input>,
        budget: f64,
    ) -> Self {
        Fetcher {
            source,
            tx,
            permit: Arc::new(Semaphore::new(1)),
            pace: Arc::new(Pace {
                budget,
                live: AtomicU64::new(0),
            }),
        }
    }

    /// The live stream's readings in the last second.
    pub(crate) fn live_rate(&self, readings: u64) {
        self.pace.live.store(readings, Ordering::Relaxed);
    }

    pub(crate) fn fetch(&self, key: Key) {
        let Some(source) = self.source.clone() else {
            return;
        };
        let (tx, permit, pace) = (self.tx.clone(), self.permit.clone(), self.pace.clone());
        tokio::spawn(async move {
            // The semaphore is fair: sessions are read back in the order they were met.
            let Ok(_permit) = permit.acquire_owned().await else {
                return;
            };
            let input = match history(&source, &key).await {
                Ok(history) => {
                    crate::metrics::catch_up(true);
                    // Hold the turn for as long as these readings are worth at the pace.
                    let secs = history.readings.len() as f64 / pace.points_per_sec();
                    tokio::time::sleep(Duration::from_secs_f64(secs.min(10.0))).await;
                    Input::History(history)
                }
                Err(error) => {
                    crate::metrics::catch_up(false);
                    tracing::warn!(%error, device_id = %key.0, session_id = %key.1, "could not read a session's past; going on from now");
                    Input::HistoryFailed { key }
                }
            };
            let _ = tx.send(input).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catching_up_takes_what_the_live_stream_leaves_and_never_stops() {
        let pace = Pace {
            budget: 15_000.0,
            live: AtomicU64::new(0),
        };
        assert_eq!(pace.points_per_sec(), 15_000.0);
        pace.live.store(10_000, Ordering::Relaxed);
        assert_eq!(pace.points_per_sec(), 5_000.0);
        pace.live.store(40_000, Ordering::Relaxed);
        assert_eq!(pace.points_per_sec(), 1_500.0);
    }
}
