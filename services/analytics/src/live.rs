//! The roasts running now, as analytics watches them: each session's readings, its RoR, the
//! events event-inference said of it, and its latest predictions — kept from the live MQTT
//! stream, so the live view and the live variance never wait for the store.
//!
//! Defined behaviour for the sessions real roasters produce: a reading older than the newest is
//! put in its place (a redelivered one, same `ts`, is kept once); a reading without BT is kept
//! (ET may still be read) but drawn and analysed as a gap; a session that never ends is forgotten
//! after `idle_timeout_secs` of silence (an ended one after `ended_retention_secs`) and, until
//! then, stops growing at `max_live_readings` (`truncated` says so); a session first met
//! mid-roast (analytics restarted) is read from the store when asked for (`roasts::App::roast`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use model::{Point, RoastEvent, SessionEvent, SessionState};
use roast::{EventKind, Profile, Reading, Ror};
use serde::Serialize;
use tokio::sync::{broadcast, mpsc};

use crate::config::Settings;
use crate::corrections::Suggested;

/// A temperature a probe can really read (the roast crate's analyses use the same range): a
/// failed thermocouple reads 0 or 999 °C, which is drawn as a gap, not as a spike.
pub(crate) fn temperature(value: Option<f64>) -> Option<f64> {
    value.filter(|v| v.is_finite() && (-50.0..=500.0).contains(v))
}

/// `(device_id, session)`.
pub(crate) type Key = (String, String);

/// What the MQTT stream tells analytics.
#[derive(Debug)]
pub(crate) enum Input {
    Points(Vec<Point>),
    Session(SessionEvent),
    Event(RoastEvent),
}

/// An event as analytics keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub(crate) struct Mark {
    pub(crate) kind: EventKind,
    pub(crate) ts: i64,
    pub(crate) bt: Option<f64>,
    pub(crate) et: Option<f64>,
}

impl From<&RoastEvent> for Mark {
    fn from(e: &RoastEvent) -> Self {
        Mark {
            kind: e.kind,
            ts: e.ts_ms,
            bt: e.bt,
            et: e.et,
        }
    }
}

/// What a page is pushed (`GET /live`, Server-Sent Events; the `type` is the SSE event name).
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum Update {
    /// A session started, ended, or got its reference.
    Session {
        device_id: String,
        session: String,
        state: &'static str,
        started_ms: Option<i64>,
        ended_ms: Option<i64>,
        reference: Option<String>,
    },
    Point {
        device_id: String,
        session: String,
        ts: i64,
        bt: Option<f64>,
        et: Option<f64>,
        ror: Option<f64>,
    },
    Event {
        device_id: String,
        session: String,
        #[serde(flatten)]
        mark: Mark,
    },
    Prediction {
        device_id: String,
        session: String,
        #[serde(flatten)]
        prediction: roast::Prediction,
    },
}

impl Update {
    /// The session it is about.
    pub(crate) fn session(&self) -> &str {
        match self {
            Update::Session { session, .. }
            | Update::Point { session, .. }
            | Update::Event { session, .. }
            | Update::Prediction { session, .. } => session,
        }
    }

    /// Sent to every page, not only to those watching the session.
    pub(crate) fn is_fleet_wide(&self) -> bool {
        matches!(self, Update::Session { .. } | Update::Event { .. })
    }

    pub(crate) fn name(&self) -> &'static str {
        match self {
            Update::Session { .. } => "session",
            Update::Point { .. } => "point",
            Update::Event { .. } => "event",
            Update::Prediction { .. } => "prediction",
        }
    }
}

/// One live session.
#[derive(Debug, Clone)]
pub(crate) struct Live {
    pub(crate) device_id: String,
    pub(crate) session: String,
    pub(crate) started_ms: Option<i64>,
    pub(crate) ended_ms: Option<i64>,
    pub(crate) metadata: serde_json::Map<String, serde_json::Value>,
    /// In time order, one per `ts`.
    pub(crate) readings: Vec<Reading>,
    /// RoR at each reading (`None` until 30 s of BT), parallel to `readings` for readings
    /// appended in order; a reading put back in its place gets none.
    pub(crate) ror: Vec<Option<f64>>,
    ror_state: Ror,
    pub(crate) marks: Vec<Mark>,
    pub(crate) truncated: bool,
    /// The session's reference, once looked up: `Some(None)` when it has none.
    pub(crate) reference: Option<Option<Arc<Named>>>,
    pub(crate) prediction: Option<roast::Prediction>,
    predicted_at: Option<i64>,
    /// The burner's newest setting, as the device reports it.
    gas: Option<f64>,
    /// The newest reading's time when a correction was last suggested.
    corrected_at: Option<i64>,
    last_seen: Instant,
}

/// A reference profile and how it is known.
#[derive(Debug)]
pub(crate) struct Named {
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) profile: Profile,
}

impl Live {
    fn new(key: &Key) -> Self {
        Live {
            device_id: key.0.clone(),
            session: key.1.clone(),
            started_ms: None,
            ended_ms: None,
            metadata: serde_json::Map::new(),
            readings: Vec::new(),
            ror: Vec::new(),
            ror_state: Ror::new(),
            marks: Vec::new(),
            truncated: false,
            reference: None,
            prediction: None,
            predicted_at: None,
            gas: None,
            corrected_at: None,
            last_seen: Instant::now(),
        }
    }

    pub(crate) fn state(&self) -> &'static str {
        match (self.started_ms, self.ended_ms) {
            (_, Some(_)) => "ended",
            (Some(_), None) => "active",
            (None, None) => "unknown",
        }
    }

    pub(crate) fn events(&self) -> Vec<(EventKind, i64)> {
        self.marks.iter().map(|m| (m.kind, m.ts)).collect()
    }

    pub(crate) fn reference(&self) -> Option<&Arc<Named>> {
        self.reference.as_ref().and_then(Option::as_ref)
    }

    pub(crate) fn session_update(&self) -> Update {
        Update::Session {
            device_id: self.device_id.clone(),
            session: self.session.clone(),
            state: self.state(),
            started_ms: self.started_ms,
            ended_ms: self.ended_ms,
            reference: self.reference().map(|r| r.name.clone()),
        }
    }

    /// Adds a reading; `Some(ror)` when it was the newest (appended), `None` when it was put
    /// back in its place or was a repeat.
    fn push(&mut self, r: Reading, max: usize) -> Option<Option<f64>> {
        if self.readings.len() >= max {
            self.truncated = true;
            return None;
        }
        match self.readings.last() {
            Some(last) if r.ts_ms <= last.ts_ms => {
                let i = self.readings.partition_point(|x| x.ts_ms < r.ts_ms);
                if self.readings.get(i).is_some_and(|x| x.ts_ms == r.ts_ms) {
                    return None;
                }
                self.readings.insert(i, r);
                self.ror.insert(i, None);
                None
            }
            _ => {
                let bt = temperature(r.bt);
                if let Some(bt) = bt {
                    self.ror_state.push(r.ts_ms, bt);
                }
                let ror = bt.and(self.ror_state.value());
                self.readings.push(r);
                self.ror.push(ror);
                Some(ror)
            }
        }
    }
}

/// Every live session, and the channel pages are pushed from.
pub(crate) struct Sessions {
    settings: Arc<Settings>,
    sessions: HashMap<Key, Live>,
    updates: broadcast::Sender<Update>,
    corrections: Option<Corrector>,
}

/// Where drifting roasts' corrections go (`crate::corrections`), and when.
struct Corrector {
    rule: roast::CorrectionRule,
    interval_ms: i64,
    tx: mpsc::Sender<Suggested>,
}

/// What handling an input asks of the caller (outside the lock).
#[derive(Debug, Default)]
pub(crate) struct Todo {
    /// Sessions whose reference must be looked up.
    pub(crate) resolve: Vec<Key>,
}

impl Sessions {
    pub(crate) fn new(settings: Arc<Settings>, updates: broadcast::Sender<Update>) -> Self {
        Sessions {
            settings,
            sessions: HashMap::new(),
            updates,
            corrections: None,
        }
    }

    /// Judges running roasts for corrections as their predictions are made, and hands what it
    /// finds to `tx`.
    pub(crate) fn with_corrections(mut self, tx: mpsc::Sender<Suggested>) -> Self {
        let c = &self.settings.corrections;
        self.corrections = Some(Corrector {
            rule: c.rule(),
            interval_ms: i64::from(c.min_interval_secs) * 1000,
            tx,
        });
        self
    }

    fn send(&self, update: Update) {
        // No page open: nobody to tell.
        let _ = self.updates.send(update);
    }

    fn entry(&mut self, key: &Key) -> Option<&mut Live> {
        if !self.sessions.contains_key(key) {
            if self.sessions.len() >= self.settings.max_live_sessions {
                crate::metrics::session_refused();
                return None;
            }
            self.sessions.insert(key.clone(), Live::new(key));
        }
        let live = self.sessions.get_mut(key)?;
        live.last_seen = Instant::now();
        Some(live)
    }

    pub(crate) fn handle(&mut self, input: Input) -> Todo {
        let mut todo = Todo::default();
        match input {
            Input::Points(points) => {
                let max = self.settings.max_live_readings;
                let every_ms = i64::from(self.settings.predict_every_secs) * 1000;
                let correct = self.corrections.as_ref().map(|c| (c.rule, c.interval_ms));
                let mut out = Vec::new();
                let mut suggested = Vec::new();
                for p in points {
                    crate::metrics::reading();
                    let key = (p.device_id, p.session);
                    let Some(live) = self.entry(&key) else {
                        continue;
                    };
                    if live.reference.is_none() && live.started_ms.is_none() {
                        // Met mid-roast, or its start was lost: its reference may still be set.
                        live.reference = Some(None);
                        todo.resolve.push(key.clone());
                    }
                    let reading = Reading {
                        ts_ms: p.ts_ms,
                        bt: temperature(p.channels.bt),
                        et: temperature(p.channels.et),
                    };
                    if let Some(ror) = live.push(reading, max) {
                        if let Some(gas) = p.channels.gas.filter(|g| g.is_finite()) {
                            live.gas = Some(gas);
                        }
                        out.push(Update::Point {
                            device_id: key.0.clone(),
                            session: key.1.clone(),
                            ts: reading.ts_ms,
                            bt: reading.bt,
                            et: reading.et,
                            ror,
                        });
                        if let Some(u) = predict(live, reading.ts_ms, every_ms, false) {
                            out.push(u);
                            // Judged as often as predicted: the same roast time, the same data.
                            if let Some((rule, interval_ms)) = &correct {
                                suggested.extend(correction(live, rule, *interval_ms));
                            }
                        }
                    }
                }
                for u in out {
                    self.send(u);
                }
                if let Some(c) = &self.corrections {
                    for s in suggested {
                        if c.tx.try_send(s).is_err() {
                            crate::metrics::correction("dropped");
                        }
                    }
                }
            }
            Input::Session(e) => {
                let key = (e.device_id.clone(), e.session.clone());
                let Some(live) = self.entry(&key) else {
                    return todo;
                };
                match e.state {
                    SessionState::Start => {
                        live.started_ms.get_or_insert(e.ts_ms);
                    }
                    SessionState::End => {
                        live.ended_ms.get_or_insert(e.ts_ms);
                    }
                }
                for (k, v) in e.metadata {
                    live.metadata.entry(k).or_insert(v);
                }
                if e.state == SessionState::Start {
                    live.reference = None;
                    todo.resolve.push(key);
                }
                let u = live.session_update();
                self.send(u);
            }
            Input::Event(e) => {
                let key = (e.device_id.clone(), e.session.clone());
                let Some(live) = self.entry(&key) else {
                    return todo;
                };
                // Stored once per kind by ingestion; the first said is the one kept.
                if live.marks.iter().any(|m| m.kind == e.kind) {
                    return todo;
                }
                let mark = Mark::from(&e);
                let i = live
                    .marks
                    .partition_point(|m| (m.ts, m.kind) <= (mark.ts, mark.kind));
                live.marks.insert(i, mark);
                let now = live.readings.last().map_or(mark.ts, |r| r.ts_ms);
                let prediction = predict(live, now, 0, true);
                self.send(Update::Event {
                    device_id: key.0.clone(),
                    session: key.1.clone(),
                    mark,
                });
                if let Some(u) = prediction {
                    self.send(u);
                }
            }
        }
        crate::metrics::sessions(self.sessions.len());
        todo
    }

    /// Gives a session its reference (or none), as looked up.
    pub(crate) fn set_reference(&mut self, key: &Key, reference: Option<Arc<Named>>) {
        let Some(live) = self.sessions.get_mut(key) else {
            return;
        };
        live.reference = Some(reference);
        live.predicted_at = None;
        let now = live.readings.last().map_or(0, |r| r.ts_ms);
        let prediction = predict(live, now, 0, true);
        let u = live.session_update();
        self.send(u);
        if let Some(u) = prediction {
            self.send(u);
        }
    }

    /// The sessions whose reference is `session` (any device).
    pub(crate) fn keys_of(&self, session: &str) -> Vec<Key> {
        self.sessions
            .keys()
            .filter(|k| k.1 == session)
            .cloned()
            .collect()
    }

    pub(crate) fn get(&self, key: &Key) -> Option<&Live> {
        self.sessions.get(key)
    }

    /// A live session by id: the given device's, else the most recently seen device's.
    pub(crate) fn find(&self, session: &str, device_id: Option<&str>) -> Option<&Live> {
        self.sessions
            .values()
            .filter(|l| l.session == session && device_id.is_none_or(|d| d == l.device_id))
            .max_by_key(|l| l.last_seen)
    }

    pub(crate) fn all(&self) -> impl Iterator<Item = &Live> {
        self.sessions.values()
    }

    /// Forgets sessions silent for `idle_timeout_secs`, and ended ones after
    /// `ended_retention_secs`; how many.
    pub(crate) fn evict_idle(&mut self, now: Instant) -> usize {
        let idle = Duration::from_secs(self.settings.idle_timeout_secs);
        let ended = Duration::from_secs(self.settings.ended_retention_secs);
        let before = self.sessions.len();
        self.sessions.retain(|_, l| {
            let quiet = now.duration_since(l.last_seen);
            quiet < idle && (l.ended_ms.is_none() || quiet < ended)
        });
        crate::metrics::sessions(self.sessions.len());
        before - self.sessions.len()
    }
}

/// The correction a running roast needs, unless one was suggested less than `interval_ms` of
/// roast time ago: the roast must have had time to answer it.
fn correction(
    live: &mut Live,
    rule: &roast::CorrectionRule,
    interval_ms: i64,
) -> Option<Suggested> {
    let newest = live.readings.last()?.ts_ms;
    if live.corrected_at.is_some_and(|t| newest - t < interval_ms) {
        return None;
    }
    let reference = live.reference()?;
    let correction = roast::suggest(
        &live.readings,
        &live.events(),
        &reference.profile,
        live.gas?,
        rule,
    )?;
    live.corrected_at = Some(newest);
    Some(Suggested {
        device_id: live.device_id.clone(),
        session: live.session.clone(),
        correction,
    })
}

/// Recomputes a session's predictions when `every_ms` of roast time has passed since the last
/// (or at once when `force`), while it runs and has a reference.
fn predict(live: &mut Live, now_ts: i64, every_ms: i64, force: bool) -> Option<Update> {
    if live.ended_ms.is_some() || live.marks.iter().any(|m| m.kind == EventKind::Drop) {
        return None;
    }
    let reference = live.reference()?.clone();
    if !force && live.predicted_at.is_some_and(|t| now_ts - t < every_ms) {
        return None;
    }
    live.predicted_at = Some(now_ts);
    let prediction = roast::predict(&live.readings, &live.events(), &reference.profile);
    live.prediction = Some(prediction);
    crate::metrics::prediction();
    Some(Update::Prediction {
        device_id: live.device_id.clone(),
        session: live.session.clone(),
        prediction,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(session: &str, seq: u64, ts_ms: i64, bt: Option<f64>) -> Point {
        Point {
            device_id: "d".into(),
            session: session.into(),
            seq,
            ts_ms,
            channels: model::Channels {
                bt,
                et: Some(200.0),
                ..Default::default()
            },
            received_ms: ts_ms,
        }
    }

    fn session_event(session: &str, state: SessionState, ts_ms: i64) -> Input {
        Input::Session(SessionEvent {
            device_id: "d".into(),
            session: session.into(),
            state,
            ts_ms,
            metadata: serde_json::Map::new(),
            received_ms: ts_ms,
        })
    }

    fn sessions() -> Sessions {
        Sessions::new(Arc::new(Settings::default()), broadcast::channel(16).0)
    }

    #[test]
    fn readings_are_kept_in_time_order_once_each_and_failed_probes_are_gaps() {
        let mut s = sessions();
        let points = vec![
            point("a", 0, 1000, Some(150.0)),
            point("a", 2, 3000, Some(152.0)),
            point("a", 1, 2000, Some(151.0)),
            point("a", 1, 2000, Some(151.0)),
            point("a", 3, 4000, Some(999.0)),
        ];
        s.handle(Input::Points(points));
        let live = s.find("a", None).unwrap();
        let ts: Vec<i64> = live.readings.iter().map(|r| r.ts_ms).collect();
        assert_eq!(ts, [1000, 2000, 3000, 4000]);
        assert_eq!(live.readings[3].bt, None, "999 °C is a failed probe");
        assert_eq!(live.readings.len(), live.ror.len());
    }

    #[test]
    fn ended_sessions_leave_memory_before_idle_ones() {
        let mut s = sessions();
        s.handle(session_event("done", SessionState::Start, 0));
        s.handle(session_event("done", SessionState::End, 1000));
        s.handle(session_event("running", SessionState::Start, 0));
        let later = Instant::now() + Duration::from_secs(601);
        assert_eq!(s.evict_idle(later), 1);
        assert!(s.find("done", None).is_none());
        assert!(
            s.find("running", None).is_some(),
            "an hour before it is idle"
        );
        assert_eq!(s.evict_idle(Instant::now() + Duration::from_secs(3601)), 1);
    }
}
