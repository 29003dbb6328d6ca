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
//! Fetches run one at a time and are paced (`catch_up_points_per_sec`), so that catching up
//! never competes with ingestion for more than a share of the database.

use history::HistoryError;
use roast::{Detected, Method};

use crate::tracker::{History, Key};

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
