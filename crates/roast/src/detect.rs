//! Online event detection: one [`Detector`] per session, fed readings as they arrive, saying
//! each event once, as soon as the readings make it certain.
//!
//! How each event is found (the figures are the constants below):
//!
//! - **CHARGE** and **DROP** — a *BT break*: BT falls at least 2 °C below its highest reading
//!   of the last 20 s, at 0.25 °C/s or faster (cold beans around the probe; the probe left in
//!   an empty drum). The event is the moment the fall began: walking back from the newest
//!   reading in steps of at least a second while BT was falling faster than 0.15 °C/s — and,
//!   for CHARGE, by more than 0.5 °C a step: before charge the probe reads the empty drum's air,
//!   flat, where a smaller fall is its noise (a 0.1 °C probe's difference of two readings
//!   exceeds 0.15 °C in one second in one of seven, and the walk then runs past the charge).
//!   That is where roasters put the mark (the ten real roasts: the sample at which BT turns
//!   sharply, not the flat top a sample or two before). DROP is only looked for after the turning
//!   point; a session that ends without a break after TP gets its DROP at its last reading
//!   (`session_end`: simulated roasters stop publishing at the drop).
//! - **TP** — BT's lowest reading after CHARGE, said once two readings stand 0.5 °C above it
//!   (one reading could be noise). Artisan's definition, made online.
//! - **DRY END** and **FC start** — BT reaching a *prior* of the roaster model
//!   ([`Priors`]: where its probe reads dry end and first crack), *and* the evidence of the
//!   roast agreeing: BT stays there for 10 s (a spike or a stall does not count), the beans
//!   are still heating (RoR above zero), the roast is in the right phase (after TP; FC after
//!   DRY END) and old enough (DRY END at least 60 s after CHARGE, FC at least 45 s after DRY
//!   END). The event's time is where BT crossed the prior, interpolated between readings.
//!   Neither BT nor RoR carries a signature of drying or cracking in the ten real roasts (they
//!   were marked by eye and ear), so the prior is what places them and the evidence is what
//!   keeps them from being invented; their confidence says so.
//! - **FC end** is not detected: nothing in BT or RoR marks it in the real roasts, and the
//!   simulation does not model it.
//!
//! Events are never revised: each is said once its evidence is conclusive, which the delays
//! this costs allow (CHARGE ~2 s, TP ~10–20 s, DRY END and FC ~10 s).
//!
//! Readings must come in device-time order; one older than the newest already seen is ignored
//! (it cannot move an event already said) and counted. A reading that jumps more than 25 °C/s
//! from the previous one is a glitch (a probe coming loose) and is ignored, unless three in a
//! row agree, which makes them the new truth.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::{EventKind, Reading, Ror};

/// Where a roaster model's BT probe reads dry end and the start of first crack, °C. Probes
/// differ by their placement and make: a probe in the bean pile of a 5 kg drum reads first
/// crack near 197 °C, the one of a small electric roaster 20 °C lower.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Priors {
    pub dry_end_bt: f64,
    pub fc_start_bt: f64,
}

impl Priors {
    /// A shop drum roaster with a standard bean probe (the simulated roasters).
    pub const STANDARD: Priors = Priors {
        dry_end_bt: 155.0,
        fc_start_bt: 197.8,
    };

    /// Checks the priors, naming what is wrong.
    pub fn validate(&self) -> Result<(), String> {
        for (name, value) in [
            ("dry_end_bt", self.dry_end_bt),
            ("fc_start_bt", self.fc_start_bt),
        ] {
            if !(50.0..=300.0).contains(&value) {
                return Err(format!("{name} {value} is not within 50..=300 °C"));
            }
        }
        if self.dry_end_bt >= self.fc_start_bt {
            return Err(format!(
                "dry_end_bt {} must be below fc_start_bt {}",
                self.dry_end_bt, self.fc_start_bt
            ));
        }
        Ok(())
    }
}

impl Default for Priors {
    fn default() -> Self {
        Priors::STANDARD
    }
}

/// How an event was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    BtBreak,
    BtMinimum,
    BtPrior,
    SessionEnd,
}

impl Method {
    pub fn parse(name: &str) -> Option<Method> {
        [
            Method::BtBreak,
            Method::BtMinimum,
            Method::BtPrior,
            Method::SessionEnd,
        ]
        .into_iter()
        .find(|m| m.as_str() == name)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Method::BtBreak => "bt_break",
            Method::BtMinimum => "bt_minimum",
            Method::BtPrior => "bt_prior",
            Method::SessionEnd => "session_end",
        }
    }

    /// How far an event found this way is to be trusted, 0–1: a break or a minimum is in the
    /// data itself; an end of session is where a drop usually is; a prior is where the roaster
    /// model usually is, within the spread of its beans.
    pub fn confidence(self) -> f64 {
        match self {
            Method::BtBreak | Method::BtMinimum => 0.9,
            Method::SessionEnd => 0.7,
            Method::BtPrior => 0.6,
        }
    }
}

/// An event, as the detector says it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Detected {
    pub kind: EventKind,
    /// The device time the event belongs to (epoch ms, as the readings').
    pub ts_ms: i64,
    pub bt: f64,
    pub et: Option<f64>,
    /// The RoR when the event was said, °C/min.
    pub ror: Option<f64>,
    pub method: Method,
}

impl Detected {
    pub fn confidence(&self) -> f64 {
        self.method.confidence()
    }
}

const HISTORY_MS: i64 = 60_000;
const BREAK_WINDOW_MS: i64 = 20_000;
const BREAK_FALL_C: f64 = 2.0;
const BREAK_RATE_C_PER_S: f64 = 0.25;
const BREAK_WALK_RATE_C_PER_S: f64 = 0.15;
const BREAK_WALK_STEP_MS: i64 = 1_000;
/// The least fall of a step of CHARGE's walk-back: the noise of a flat BT is not a fall. Below
/// the 0.8–1.3 °C BT falls in the reading after each real roast's CHARGE mark. Not for DROP,
/// whose BT rises until the break and whose real falls begin gently.
const BREAK_WALK_CHARGE_MIN_FALL_C: f64 = 0.5;
const TP_RISE_C: f64 = 0.4;
const SUSTAIN_MS: i64 = 10_000;
const SUSTAIN_SLACK_C: f64 = 0.5;
const MIN_DRY_AFTER_CHARGE_MS: i64 = 60_000;
const MIN_FC_AFTER_DRY_MS: i64 = 45_000;
const GLITCH_RATE_C_PER_S: f64 = 25.0;
const GLITCH_MIN_JUMP_C: f64 = 3.0;
const GLITCHES_TO_ACCEPT: u32 = 3;

#[derive(Debug, Clone, Copy, PartialEq)]
struct Sample {
    ts_ms: i64,
    bt: f64,
    et: Option<f64>,
}

/// Where BT crossed a prior, waiting for the evidence to hold.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Crossing {
    ts_ms: i64,
    at: Sample,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Stage {
    AwaitCharge,
    AwaitTurn { lowest: Sample },
    AwaitDry { crossing: Option<Crossing> },
    AwaitFc { crossing: Option<Crossing> },
    AwaitDrop,
    Done,
}

/// The event detector of one session.
#[derive(Debug, Clone)]
pub struct Detector {
    priors: Priors,
    stage: Stage,
    history: VecDeque<Sample>,
    ror: Ror,
    last_et: Option<f64>,
    newest_ts: Option<i64>,
    glitches: u32,
    found: Vec<Detected>,
    ignored: u64,
}

impl Detector {
    pub fn new(priors: Priors) -> Self {
        Detector {
            priors,
            stage: Stage::AwaitCharge,
            history: VecDeque::new(),
            ror: Ror::new(),
            last_et: None,
            newest_ts: None,
            glitches: 0,
            found: Vec::new(),
            ignored: 0,
        }
    }

    /// A detector picking up a session whose events so far were said before (by an earlier run
    /// of the service, now read back from the store): it goes on from the last of them.
    /// `recent` are the session's readings up to that event (a minute of them is enough: the
    /// RoR and BT-break windows are 30 s and 20 s; for a session at TP-watch, everything since
    /// CHARGE, so that its lowest reading is known); they fill the windows without saying
    /// anything again, and any later among them are left out: give those, and every reading
    /// after, to [`push`](Self::push), which says what they make certain.
    pub fn resume(priors: Priors, said: &[Detected], recent: &[Reading]) -> Self {
        let mut d = Detector::new(priors);
        let mut said = said.to_vec();
        said.sort_by_key(|e| e.ts_ms);
        let Some(last) = said.last().copied() else {
            return d;
        };
        for r in recent.iter().filter(|r| r.ts_ms <= last.ts_ms) {
            d.warm(*r);
        }
        d.found = said;
        d.stage = match last.kind {
            EventKind::Charge => {
                let at = Sample {
                    ts_ms: last.ts_ms,
                    bt: last.bt,
                    et: last.et,
                };
                let lowest = d
                    .history
                    .iter()
                    .filter(|s| s.ts_ms >= last.ts_ms)
                    .copied()
                    .min_by(|a, b| a.bt.total_cmp(&b.bt))
                    .unwrap_or(at);
                Stage::AwaitTurn { lowest }
            }
            EventKind::TurningPoint => Stage::AwaitDry { crossing: None },
            EventKind::DryEnd => Stage::AwaitFc { crossing: None },
            EventKind::FcStart | EventKind::FcEnd => Stage::AwaitDrop,
            EventKind::Drop => Stage::Done,
        };
        d
    }

    /// Takes a reading into the windows only (no event can come of it).
    fn warm(&mut self, reading: Reading) {
        if self.newest_ts.is_some_and(|t| reading.ts_ms <= t) {
            return;
        }
        self.newest_ts = Some(reading.ts_ms);
        if let Some(et) = reading.et.filter(|v| v.is_finite()) {
            self.last_et = Some(et);
        }
        let Some(bt) = reading.bt.filter(|v| v.is_finite()) else {
            return;
        };
        self.history.push_back(Sample {
            ts_ms: reading.ts_ms,
            bt,
            et: self.last_et,
        });
        while self
            .history
            .front()
            .is_some_and(|s| s.ts_ms < reading.ts_ms - HISTORY_MS)
        {
            self.history.pop_front();
        }
        self.ror.push(reading.ts_ms, bt);
    }

    /// The events said so far, in the order they were said.
    pub fn events(&self) -> &[Detected] {
        &self.found
    }

    /// The RoR at the newest reading, °C/min.
    pub fn ror(&self) -> Option<f64> {
        self.ror.value()
    }

    /// Readings ignored: out of order, repeated, or glitches.
    pub fn ignored(&self) -> u64 {
        self.ignored
    }

    /// Whether the roast is over (DROP said): later readings change nothing.
    pub fn is_done(&self) -> bool {
        self.stage == Stage::Done
    }

    /// Takes one reading; returns the events it makes certain (usually none).
    pub fn push(&mut self, reading: Reading) -> Vec<Detected> {
        if self.newest_ts.is_some_and(|t| reading.ts_ms <= t) {
            self.ignored += 1;
            return Vec::new();
        }
        self.newest_ts = Some(reading.ts_ms);
        if let Some(et) = reading.et.filter(|v| v.is_finite()) {
            self.last_et = Some(et);
        }
        let Some(bt) = reading.bt.filter(|v| v.is_finite()) else {
            return Vec::new();
        };
        let sample = Sample {
            ts_ms: reading.ts_ms,
            bt,
            et: self.last_et,
        };
        if self.is_glitch(sample) {
            self.ignored += 1;
            return Vec::new();
        }
        self.history.push_back(sample);
        while self
            .history
            .front()
            .is_some_and(|s| s.ts_ms < sample.ts_ms - HISTORY_MS)
        {
            self.history.pop_front();
        }
        self.ror.push(sample.ts_ms, bt);
        if self.stage == Stage::Done {
            return Vec::new();
        }
        let before = self.found.len();
        self.step(sample);
        self.found[before..].to_vec()
    }

    /// The session has ended: says what the end makes certain (a DROP not yet seen, once the
    /// roast had turned).
    pub fn finish(&mut self) -> Vec<Detected> {
        let turned = matches!(
            self.stage,
            Stage::AwaitDry { .. } | Stage::AwaitFc { .. } | Stage::AwaitDrop
        );
        match self.history.back().copied() {
            Some(last) if turned => {
                self.say(EventKind::Drop, last.ts_ms, last, Method::SessionEnd);
                self.stage = Stage::Done;
                self.found[self.found.len() - 1..].to_vec()
            }
            _ => {
                self.stage = Stage::Done;
                Vec::new()
            }
        }
    }

    fn step(&mut self, now: Sample) {
        match self.stage {
            Stage::AwaitCharge => {
                if let Some(at) = self.break_point(i64::MIN, BREAK_WALK_CHARGE_MIN_FALL_C) {
                    self.say(EventKind::Charge, at.ts_ms, at, Method::BtBreak);
                    let lowest = self
                        .history
                        .iter()
                        .filter(|s| s.ts_ms >= at.ts_ms)
                        .copied()
                        .min_by(|a, b| a.bt.total_cmp(&b.bt))
                        .unwrap_or(now);
                    self.stage = Stage::AwaitTurn { lowest };
                }
            }
            Stage::AwaitTurn { lowest } => {
                // The last of equal lowest readings, as Artisan takes it.
                if now.bt <= lowest.bt {
                    self.stage = Stage::AwaitTurn { lowest: now };
                } else if self.rose_above(lowest.bt + TP_RISE_C) {
                    self.say(
                        EventKind::TurningPoint,
                        lowest.ts_ms,
                        lowest,
                        Method::BtMinimum,
                    );
                    self.stage = Stage::AwaitDry { crossing: None };
                }
            }
            Stage::AwaitDry { crossing } => {
                if self.dropped() {
                    return;
                }
                let earliest = self
                    .at(EventKind::Charge)
                    .map(|c| c.ts_ms + MIN_DRY_AFTER_CHARGE_MS);
                match self.crossing(crossing, self.priors.dry_end_bt, earliest, now) {
                    Ok(at) => {
                        self.say(EventKind::DryEnd, at.ts_ms, at.at, Method::BtPrior);
                        self.stage = Stage::AwaitFc { crossing: None };
                    }
                    Err(crossing) => self.stage = Stage::AwaitDry { crossing },
                }
            }
            Stage::AwaitFc { crossing } => {
                if self.dropped() {
                    return;
                }
                let earliest = self
                    .at(EventKind::DryEnd)
                    .map(|d| d.ts_ms + MIN_FC_AFTER_DRY_MS);
                match self.crossing(crossing, self.priors.fc_start_bt, earliest, now) {
                    Ok(at) => {
                        self.say(EventKind::FcStart, at.ts_ms, at.at, Method::BtPrior);
                        self.stage = Stage::AwaitDrop;
                    }
                    Err(crossing) => self.stage = Stage::AwaitFc { crossing },
                }
            }
            Stage::AwaitDrop => {
                self.dropped();
            }
            Stage::Done => {}
        }
    }

    /// Looks for the BT break of a DROP; says it and ends the roast when found.
    fn dropped(&mut self) -> bool {
        // A DROP breaks BT's rise after the turning point: readings up to it (the fall of
        // CHARGE itself, still inside the break window when a roast is replayed fast or turns
        // early) are no evidence of one.
        let after = self
            .at(EventKind::TurningPoint)
            .map_or(i64::MIN, |tp| tp.ts_ms);
        let Some(at) = self.break_point(after, 0.0) else {
            return false;
        };
        self.say(EventKind::Drop, at.ts_ms, at, Method::BtBreak);
        self.stage = Stage::Done;
        true
    }

    /// Follows BT across `threshold`: `Ok` with the crossing once the evidence holds, else the
    /// crossing still waiting (or none).
    fn crossing(
        &self,
        pending: Option<Crossing>,
        threshold: f64,
        earliest_ms: Option<i64>,
        now: Sample,
    ) -> Result<Crossing, Option<Crossing>> {
        if earliest_ms.is_some_and(|t| now.ts_ms < t) {
            return Err(None);
        }
        if now.bt < threshold - SUSTAIN_SLACK_C {
            return Err(None);
        }
        let crossing = match pending {
            Some(c) => c,
            None if now.bt >= threshold => Crossing {
                ts_ms: self.crossed_at(threshold, now),
                at: now,
            },
            None => return Err(None),
        };
        let held = now.ts_ms - crossing.ts_ms >= SUSTAIN_MS;
        let heating = self.ror.value().is_some_and(|r| r > 0.0);
        if held && heating {
            Ok(crossing)
        } else {
            Err(Some(crossing))
        }
    }

    /// When BT reached `threshold`, between the reading before `now` and `now`.
    fn crossed_at(&self, threshold: f64, now: Sample) -> i64 {
        let before = self.history.iter().rev().nth(1);
        match before {
            Some(prev) if prev.bt < threshold && now.bt > prev.bt => {
                let share = (threshold - prev.bt) / (now.bt - prev.bt);
                prev.ts_ms + (share * (now.ts_ms - prev.ts_ms) as f64).round() as i64
            }
            _ => now.ts_ms,
        }
    }

    /// Whether the two newest readings both stand at or above `level`.
    fn rose_above(&self, level: f64) -> bool {
        let mut newest = self.history.iter().rev();
        matches!(
            (newest.next(), newest.next()),
            (Some(a), Some(b)) if a.bt >= level && b.bt >= level - TP_RISE_C * 0.4
        )
    }

    /// Where a BT break began, if the newest readings after `after_ms` show one; the walk back
    /// takes only steps that fell by more than `min_step_fall_c`.
    fn break_point(&self, after_ms: i64, min_step_fall_c: f64) -> Option<Sample> {
        let newest = *self.history.back()?;
        let top = self
            .history
            .iter()
            .rev()
            .take_while(|s| s.ts_ms >= newest.ts_ms - BREAK_WINDOW_MS && s.ts_ms > after_ms)
            .max_by(|a, b| a.bt.total_cmp(&b.bt))?;
        let fall = top.bt - newest.bt;
        let secs = (newest.ts_ms - top.ts_ms) as f64 / 1000.0;
        if fall < BREAK_FALL_C || secs <= 0.0 || fall / secs < BREAK_RATE_C_PER_S {
            return None;
        }
        // Walk back while BT was falling fast, a second or more at a time.
        let mut j = self.history.len() - 1;
        loop {
            let at = self.history[j];
            let Some(i) = (0..j)
                .rev()
                .find(|&i| self.history[i].ts_ms <= at.ts_ms - BREAK_WALK_STEP_MS)
                .filter(|&i| self.history[i].ts_ms > after_ms)
            else {
                break;
            };
            let before = self.history[i];
            let rate = (at.bt - before.bt) / ((at.ts_ms - before.ts_ms) as f64 / 1000.0);
            if rate < -BREAK_WALK_RATE_C_PER_S && before.bt - at.bt > min_step_fall_c {
                j = i;
            } else {
                break;
            }
        }
        Some(self.history[j])
    }

    fn is_glitch(&mut self, sample: Sample) -> bool {
        let Some(prev) = self.history.back() else {
            return false;
        };
        let jump = (sample.bt - prev.bt).abs();
        let secs = (sample.ts_ms - prev.ts_ms) as f64 / 1000.0;
        if jump < GLITCH_MIN_JUMP_C || jump / secs <= GLITCH_RATE_C_PER_S {
            self.glitches = 0;
            return false;
        }
        self.glitches += 1;
        if self.glitches >= GLITCHES_TO_ACCEPT {
            // The probe really reads this now: start over from here.
            self.glitches = 0;
            self.history.clear();
            self.ror = Ror::new();
            return false;
        }
        true
    }

    fn at(&self, kind: EventKind) -> Option<&Detected> {
        self.found.iter().find(|e| e.kind == kind)
    }

    fn say(&mut self, kind: EventKind, ts_ms: i64, at: Sample, method: Method) {
        self.found.push(Detected {
            kind,
            ts_ms,
            bt: at.bt,
            et: at.et,
            ror: self.ror.value(),
            method,
        });
    }
}
