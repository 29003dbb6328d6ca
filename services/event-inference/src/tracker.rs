//! The sessions being watched, one [`roast::Detector`] each: what comes in (readings, session
//! starts and ends, past readings fetched after a restart) and what goes out (events to publish,
//! sessions whose past to fetch). No I/O here — the service's tasks do that — so the rules are
//! tested as they are.
//!
//! A session met for the first time mid-roast (this service restarted, or the start message
//! went to before it subscribed) is *caught up*: its live readings are held while its past
//! readings are fetched from the store, then both go through one detector, oldest first. A
//! session whose start is seen needs no past: it begins now.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use model::{Point, RoastEvent};
use roast::{Detected, Detector, EventKind, Reading};
use serde::Serialize;

use crate::config::Settings;

/// A session: `(device_id, session)`.
pub(crate) type Key = (String, String);

/// What the tracker is told.
#[derive(Debug)]
pub(crate) enum Input {
    Telemetry(Vec<Point>),
    Start {
        key: Key,
        model: Option<String>,
    },
    End {
        key: Key,
    },
    /// Sessions the store shows running or ended while this service was away (the sweep at
    /// start): caught up unless already known. The tracker alone decides what is fetched, so a
    /// session met both live and by the sweep is read back once.
    Unfinished(Vec<Key>),
    /// A session's past readings, fetched from the store.
    History(History),
    /// Fetching a session's past failed: go on with what arrives live.
    HistoryFailed {
        key: Key,
    },
}

#[derive(Debug)]
pub(crate) struct History {
    pub(crate) key: Key,
    pub(crate) model: Option<String>,
    /// The events already stored for it: detection resumes after the last.
    pub(crate) said: Vec<Detected>,
    /// Its readings from a minute before the last stored event (all of them if none).
    pub(crate) readings: Vec<Reading>,
    /// The session had ended in the store.
    pub(crate) ended: bool,
}

/// What the tracker asks the service to do.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Output {
    pub(crate) events: Vec<RoastEvent>,
    pub(crate) fetch: Vec<Key>,
}

/// Sessions ended recently: a reading of theirs that arrives late is not a new session.
const FINISHED_REMEMBERED: usize = 10_000;
/// RoR kept per session for the API: one value a second, two hours.
const ROR_KEPT: usize = 7_200;

#[derive(Debug)]
enum Stage {
    Live,
    /// Past readings are being fetched; live ones wait here.
    CatchingUp {
        held: Vec<Reading>,
        ended: bool,
    },
}

#[derive(Debug)]
struct Tracked {
    model: String,
    detector: Detector,
    stage: Stage,
    last_seen: Instant,
    last_ts: Option<i64>,
    ror: VecDeque<(i64, f64)>,
}

impl Tracked {
    fn new(settings: &Settings, model: Option<&str>, stage: Stage) -> Self {
        Tracked {
            model: model.unwrap_or(&settings.default_model).to_owned(),
            detector: Detector::new(settings.priors(model)),
            stage,
            last_seen: Instant::now(),
            last_ts: None,
            ror: VecDeque::new(),
        }
    }

    fn push(&mut self, reading: Reading) -> Vec<Detected> {
        let said = self.detector.push(reading);
        if self.last_ts.is_none_or(|t| reading.ts_ms > t) {
            self.last_ts = Some(reading.ts_ms);
        }
        if let Some(ror) = self.detector.ror()
            && self
                .ror
                .back()
                .is_none_or(|&(t, _)| reading.ts_ms >= t + 1000)
        {
            if self.ror.len() == ROR_KEPT {
                self.ror.pop_front();
            }
            self.ror
                .push_back((reading.ts_ms, (ror * 100.0).round() / 100.0));
        }
        said
    }
}

/// A watched session, as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct SessionView {
    pub(crate) device_id: String,
    pub(crate) session: String,
    pub(crate) model: String,
    pub(crate) catching_up: bool,
    pub(crate) last_ts: Option<i64>,
    /// °C/min at the newest reading.
    pub(crate) ror: Option<f64>,
    pub(crate) events: Vec<EventKind>,
}

/// Every watched session.
#[derive(Debug)]
pub(crate) struct Tracker {
    settings: Arc<Settings>,
    catch_up: bool,
    sessions: HashMap<Key, Tracked>,
    finished: HashSet<Key>,
    finished_order: VecDeque<Key>,
    /// How far behind the newest reading detection runs: now − the reading's ts, ms.
    lag_ms: Histogram<u64>,
    readings: u64,
    events: u64,
}

impl Tracker {
    /// `catch_up`: whether sessions met mid-roast can be caught up (a source to read them from).
    pub(crate) fn new(settings: Arc<Settings>, catch_up: bool) -> Self {
        Tracker {
            catch_up,
            settings,
            sessions: HashMap::new(),
            finished: HashSet::new(),
            finished_order: VecDeque::new(),
            lag_ms: Histogram::new_with_bounds(1, 3_600_000, 3).expect("constant, valid bounds"),
            readings: 0,
            events: 0,
        }
    }

    pub(crate) fn handle(&mut self, input: Input, now_ms: i64) -> Output {
        let mut out = Output::default();
        match input {
            Input::Telemetry(points) => {
                for point in points {
                    self.reading(point, now_ms, &mut out);
                }
            }
            Input::Start { key, model } => {
                if !self.sessions.contains_key(&key) {
                    self.forget_finished(&key);
                    let tracked = Tracked::new(&self.settings, model.as_deref(), Stage::Live);
                    crate::metrics::sessions(self.sessions.len() + 1);
                    self.sessions.insert(key, tracked);
                }
            }
            Input::End { key } => {
                let Some(tracked) = self.sessions.get_mut(&key) else {
                    return out;
                };
                tracked.last_seen = Instant::now();
                match &mut tracked.stage {
                    Stage::CatchingUp { ended, .. } => *ended = true,
                    Stage::Live => {
                        let said = tracked.detector.finish();
                        self.say(&key, said, now_ms, &mut out);
                        self.finish(key);
                    }
                }
            }
            Input::Unfinished(keys) => {
                for key in keys {
                    if !self.catch_up
                        || self.sessions.contains_key(&key)
                        || self.finished.contains(&key)
                    {
                        continue;
                    }
                    let stage = Stage::CatchingUp {
                        held: Vec::new(),
                        ended: false,
                    };
                    self.sessions
                        .insert(key.clone(), Tracked::new(&self.settings, None, stage));
                    out.fetch.push(key);
                }
                crate::metrics::sessions(self.sessions.len());
            }
            Input::History(history) => self.history(history, now_ms, &mut out),
            Input::HistoryFailed { key } => {
                if let Some(tracked) = self.sessions.get_mut(&key)
                    && let Stage::CatchingUp { held, ended } = &mut tracked.stage
                {
                    let (held, ended) = (std::mem::take(held), *ended);
                    tracked.stage = Stage::Live;
                    self.replay(&key, held, ended, now_ms, &mut out);
                }
            }
        }
        out
    }

    fn reading(&mut self, point: Point, now_ms: i64, out: &mut Output) {
        let key = (point.device_id, point.session);
        if self.finished.contains(&key) {
            return;
        }
        self.readings += 1;
        crate::metrics::reading();
        let reading = Reading {
            ts_ms: point.ts_ms,
            bt: point.channels.bt,
            et: point.channels.et,
        };
        let tracked = match self.sessions.get_mut(&key) {
            Some(t) => t,
            None => {
                let stage = if self.catch_up {
                    out.fetch.push(key.clone());
                    Stage::CatchingUp {
                        held: Vec::new(),
                        ended: false,
                    }
                } else {
                    Stage::Live
                };
                crate::metrics::sessions(self.sessions.len() + 1);
                self.sessions.entry(key.clone()).or_insert(Tracked::new(
                    &self.settings,
                    None,
                    stage,
                ))
            }
        };
        tracked.last_seen = Instant::now();
        match &mut tracked.stage {
            Stage::CatchingUp { held, .. } => held.push(reading),
            Stage::Live => {
                let lag = now_ms.saturating_sub(reading.ts_ms).max(1);
                let _ = self.lag_ms.record(u64::try_from(lag).unwrap_or(1));
                crate::metrics::lag_ms(lag);
                let said = tracked.push(reading);
                self.say(&key, said, now_ms, out);
            }
        }
    }

    fn history(&mut self, history: History, now_ms: i64, out: &mut Output) {
        let History {
            key,
            model,
            said,
            readings,
            ended,
        } = history;
        let (held, ended) = match self.sessions.get_mut(&key) {
            // Already live (its start came, or another fetch finished first): nothing to do.
            Some(t) if matches!(t.stage, Stage::Live) => return,
            Some(t) => {
                let Stage::CatchingUp { held, ended: e } = &mut t.stage else {
                    return;
                };
                let pending = (std::mem::take(held), *e || ended);
                *t = Tracked::new(&self.settings, model.as_deref(), Stage::Live);
                pending
            }
            // Forgot it meanwhile (it went idle) or finished it: nothing asked for this.
            None => return,
        };
        let mut all = readings;
        all.extend(held);
        all.sort_by_key(|r| r.ts_ms);
        let resume_after = said.iter().map(|e| e.ts_ms).max();
        if let (Some(last), Some(tracked)) = (resume_after, self.sessions.get_mut(&key)) {
            let priors = self.settings.priors(model.as_deref());
            tracked.detector = Detector::resume(priors, &said, &all);
            all.retain(|r| r.ts_ms > last);
        }
        self.replay(&key, all, ended, now_ms, out);
    }

    /// Feeds readings that waited (past, then held) to a live session, in device-time order.
    fn replay(
        &mut self,
        key: &Key,
        mut readings: Vec<Reading>,
        ended: bool,
        now_ms: i64,
        out: &mut Output,
    ) {
        readings.sort_by_key(|r| r.ts_ms);
        let Some(tracked) = self.sessions.get_mut(key) else {
            return;
        };
        let mut said = Vec::new();
        for r in readings {
            said.extend(tracked.push(r));
        }
        if ended {
            said.extend(tracked.detector.finish());
        }
        self.say(key, said, now_ms, out);
        if ended {
            self.finish(key.clone());
        }
    }

    fn say(&mut self, key: &Key, said: Vec<Detected>, now_ms: i64, out: &mut Output) {
        for e in said {
            self.events += 1;
            crate::metrics::event(e.kind);
            out.events.push(RoastEvent {
                device_id: key.0.clone(),
                session: key.1.clone(),
                kind: e.kind,
                ts_ms: e.ts_ms,
                detected_ms: now_ms,
                bt: Some(e.bt),
                et: e.et,
                ror: e.ror.map(|r| (r * 100.0).round() / 100.0),
                method: e.method.as_str().to_owned(),
                confidence: e.confidence(),
                received_ms: now_ms,
            });
        }
    }

    fn finish(&mut self, key: Key) {
        self.sessions.remove(&key);
        crate::metrics::sessions(self.sessions.len());
        if self.finished.insert(key.clone()) {
            self.finished_order.push_back(key);
            if self.finished_order.len() > FINISHED_REMEMBERED
                && let Some(old) = self.finished_order.pop_front()
            {
                self.finished.remove(&old);
            }
        }
    }

    fn forget_finished(&mut self, key: &Key) {
        // A session id used again by its device (a replay, a test) starts over.
        if self.finished.remove(key) {
            self.finished_order.retain(|k| k != key);
        }
    }

    /// Forgets sessions that sent nothing for the idle timeout; returns how many.
    pub(crate) fn evict_idle(&mut self, now: Instant) -> usize {
        let timeout = Duration::from_secs(self.settings.idle_timeout_secs);
        let before = self.sessions.len();
        self.sessions
            .retain(|_, t| now.saturating_duration_since(t.last_seen) < timeout);
        crate::metrics::sessions(self.sessions.len());
        before - self.sessions.len()
    }

    pub(crate) fn sessions(&self) -> Vec<SessionView> {
        let mut views: Vec<SessionView> = self
            .sessions
            .iter()
            .map(|((device, session), t)| SessionView {
                device_id: device.clone(),
                session: session.clone(),
                model: t.model.clone(),
                catching_up: matches!(t.stage, Stage::CatchingUp { .. }),
                last_ts: t.last_ts,
                ror: t.detector.ror().map(|r| (r * 100.0).round() / 100.0),
                events: t.detector.events().iter().map(|e| e.kind).collect(),
            })
            .collect();
        views.sort_by(|a, b| (&a.device_id, &a.session).cmp(&(&b.device_id, &b.session)));
        views
    }

    /// The RoR series of a session (every device that uses the id): `(device, [(ts, ror)])`.
    pub(crate) fn ror(&self, session: &str) -> Vec<(String, Vec<(i64, f64)>)> {
        let mut out: Vec<(String, Vec<(i64, f64)>)> = self
            .sessions
            .iter()
            .filter(|((_, s), _)| s == session)
            .map(|((d, _), t)| (d.clone(), t.ror.iter().copied().collect()))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    pub(crate) fn stats(&self) -> Stats {
        let q = |p: f64| (!self.lag_ms.is_empty()).then(|| self.lag_ms.value_at_quantile(p));
        Stats {
            sessions: self.sessions.len(),
            catching_up: self
                .sessions
                .values()
                .filter(|t| matches!(t.stage, Stage::CatchingUp { .. }))
                .count(),
            readings: self.readings,
            events: self.events,
            lag_ms: LagStats {
                count: self.lag_ms.len(),
                p50: q(0.5),
                p95: q(0.95),
                p99: q(0.99),
                max: (!self.lag_ms.is_empty()).then(|| self.lag_ms.max()),
            },
        }
    }

    /// Readings taken so far, live ones and held ones.
    pub(crate) fn readings(&self) -> u64 {
        self.readings
    }

    pub(crate) fn reset_lag(&mut self) {
        self.lag_ms.reset();
    }
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct Stats {
    pub(crate) sessions: usize,
    /// Sessions whose past is still to be read back (after a restart).
    pub(crate) catching_up: usize,
    pub(crate) readings: u64,
    pub(crate) events: u64,
    /// now − the reading's device ts when it was processed, ms (live readings only).
    pub(crate) lag_ms: LagStats,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct LagStats {
    pub(crate) count: u64,
    pub(crate) p50: Option<u64>,
    pub(crate) p95: Option<u64>,
    pub(crate) p99: Option<u64>,
    pub(crate) max: Option<u64>,
}
