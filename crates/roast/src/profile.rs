//! Reference roast curves: a roast to compare sessions against and to predict them by, aligned
//! at CHARGE so that two roasts line up whatever clock either was recorded on.
//!
//! A [`Profile`] is built from a stored session ([`Profile::from_session`]), from an Artisan log
//! ([`Profile::from_alog`]), or arrives as JSON from a user; the last kind is checked with
//! [`Profile::validate`] before anything reads it, and the constructors check what they build
//! the same way, so every profile the analyses see keeps the same invariants: points in strictly
//! increasing time from CHARGE on, real temperatures, at most one event of each kind, in roast
//! order and on the curve.

use serde::{Deserialize, Serialize};

use crate::alog::RoastLog;
use crate::session::{self, Marks, TEMP_RANGE_C};
use crate::{EventKind, ROR_WINDOW_MS, Reading, Ror};

/// The most points a profile may hold: 5½ hours at 1 Hz, or half an hour at 10 Hz — a roast is
/// 10–20 minutes, and every analysis walks the curve, so a bigger one is a mistake or an attack.
pub const MAX_POINTS: usize = 20_000;
/// The latest a point may be after CHARGE: a day. A roast is minutes long; the bound keeps the
/// arithmetic on times far from overflowing whatever a user sends.
pub const MAX_T_MS: i64 = 24 * 3_600_000;

/// The spacing at which a curve is resampled for its RoR: the fit then sees the same points
/// whether the curve was logged every 0.5 s, every 2 s or drawn by hand every 10 s.
const ROR_RESAMPLE_MS: i64 = 1_000;

/// A reference roast: BT (and ET where known) against time since CHARGE, and its events.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// Sorted by `t_ms`, strictly increasing, none before CHARGE.
    pub points: Vec<ProfilePoint>,
    /// In roast order, one per kind; CHARGE at 0.
    pub events: Vec<ProfileEvent>,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfilePoint {
    /// Since CHARGE.
    pub t_ms: i64,
    pub bt: f64,
    #[serde(default)]
    pub et: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileEvent {
    pub kind: EventKind,
    /// Since CHARGE.
    pub t_ms: i64,
}

/// Why a profile cannot be built or used; the message says what is wrong and where.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ProfileError {
    #[error("no charge event: a profile is aligned at charge")]
    NoCharge,
    #[error("no reading with a bean temperature between charge and drop")]
    NoReadings,
    #[error("the profile has no point")]
    Empty,
    #[error("the profile has {0} points, more than the {MAX_POINTS} accepted")]
    TooManyPoints(usize),
    #[error("point {index}: {probe} {value} is not a temperature within -50..=500 °C")]
    Temperature {
        index: usize,
        probe: &'static str,
        value: f64,
    },
    #[error("point {index}: t_ms {t_ms} is before charge (t_ms 0)")]
    BeforeCharge { index: usize, t_ms: i64 },
    #[error("point {index}: t_ms {t_ms} is more than a day after charge")]
    TooLate { index: usize, t_ms: i64 },
    #[error("point {index}: t_ms {t_ms} is not after the previous point's {previous_ms}")]
    NotIncreasing {
        index: usize,
        t_ms: i64,
        previous_ms: i64,
    },
    #[error("no charge event at t_ms 0: a profile is aligned at charge")]
    ChargeNotAtZero,
    #[error("event {0} is given more than once")]
    DuplicateEvent(EventKind),
    #[error(
        "event {kind} (t_ms {t_ms}) is listed after {previous} (t_ms {previous_ms}): events must \
         be in the order a roast has them, at times that do not go back"
    )]
    EventOrder {
        kind: EventKind,
        t_ms: i64,
        previous: EventKind,
        previous_ms: i64,
    },
    #[error("event {kind} at t_ms {t_ms} is outside the curve (0..={end_ms})")]
    EventOutsideCurve {
        kind: EventKind,
        t_ms: i64,
        end_ms: i64,
    },
}

impl Profile {
    /// The profile of a recorded session: its readings from CHARGE to DROP (or to the last one,
    /// for a session that never dropped), aligned at CHARGE.
    ///
    /// Readings without a BT, with a temperature no probe reads (non-finite, outside
    /// -50..=500 °C: a loose probe) or before CHARGE are left out, out-of-order readings are
    /// sorted and a repeated timestamp keeps its first reading; events are read as the other
    /// analyses read them (each kind's earliest, in roast order) and those past the last reading
    /// are left out. Refused without a CHARGE event, without a reading after it, or with more
    /// than [`MAX_POINTS`] readings (or a day of them) from CHARGE to DROP.
    pub fn from_session(
        readings: &[Reading],
        events: &[(EventKind, i64)],
    ) -> Result<Profile, ProfileError> {
        let marks = Marks::new(events);
        let charge = marks.get(EventKind::Charge).ok_or(ProfileError::NoCharge)?;
        let end = marks.get(EventKind::Drop).unwrap_or(i64::MAX);
        let points: Vec<ProfilePoint> = session::samples(readings)
            .into_iter()
            .filter(|s| (charge..=end).contains(&s.ts_ms))
            .map(|s| ProfilePoint {
                t_ms: s.ts_ms.saturating_sub(charge),
                bt: s.bt,
                et: s.et,
            })
            .collect();
        let last = points.last().ok_or(ProfileError::NoReadings)?.t_ms;
        let events = marks
            .iter()
            .map(|(kind, ts)| ProfileEvent {
                kind,
                t_ms: ts.saturating_sub(charge),
            })
            .filter(|e| e.t_ms <= last)
            .collect();
        let profile = Profile { points, events };
        profile.validate()?;
        Ok(profile)
    }

    /// The profile of an Artisan roast log, aligned at the roaster's own CHARGE mark, with the
    /// roaster's marks (and Artisan's TP) as its events.
    pub fn from_alog(log: &RoastLog) -> Result<Profile, ProfileError> {
        let ms = |t_s: f64| (t_s * 1000.0).round() as i64;
        let readings: Vec<Reading> = log
            .samples
            .iter()
            .map(|s| Reading {
                ts_ms: ms(s.t_s),
                bt: s.bt,
                et: s.et,
            })
            .collect();
        let events: Vec<(EventKind, i64)> = log.marks.iter().map(|m| (m.kind, ms(m.t_s))).collect();
        Profile::from_session(&readings, &events)
    }

    /// Checks a profile, naming the first thing wrong: what a user's JSON must pass before any
    /// analysis reads it (every helper below relies on it).
    pub fn validate(&self) -> Result<(), ProfileError> {
        if self.points.is_empty() {
            return Err(ProfileError::Empty);
        }
        if self.points.len() > MAX_POINTS {
            return Err(ProfileError::TooManyPoints(self.points.len()));
        }
        let mut previous: Option<i64> = None;
        for (index, p) in self.points.iter().enumerate() {
            let probes = [("bt", Some(p.bt)), ("et", p.et)];
            for (probe, value) in probes {
                if let Some(value) = value.filter(|v| !TEMP_RANGE_C.contains(v)) {
                    // NaN is in no range: it lands here too.
                    return Err(ProfileError::Temperature {
                        index,
                        probe,
                        value,
                    });
                }
            }
            if p.t_ms < 0 {
                return Err(ProfileError::BeforeCharge {
                    index,
                    t_ms: p.t_ms,
                });
            }
            if p.t_ms > MAX_T_MS {
                return Err(ProfileError::TooLate {
                    index,
                    t_ms: p.t_ms,
                });
            }
            if let Some(previous_ms) = previous.filter(|&t| p.t_ms <= t) {
                return Err(ProfileError::NotIncreasing {
                    index,
                    t_ms: p.t_ms,
                    previous_ms,
                });
            }
            previous = Some(p.t_ms);
        }
        for kind in EventKind::ALL {
            if self.events.iter().filter(|e| e.kind == kind).count() > 1 {
                return Err(ProfileError::DuplicateEvent(kind));
            }
        }
        if self.event(EventKind::Charge) != Some(0) {
            return Err(ProfileError::ChargeNotAtZero);
        }
        for pair in self.events.windows(2) {
            let (a, b) = (pair[0], pair[1]);
            if b.kind < a.kind || b.t_ms < a.t_ms {
                return Err(ProfileError::EventOrder {
                    kind: b.kind,
                    t_ms: b.t_ms,
                    previous: a.kind,
                    previous_ms: a.t_ms,
                });
            }
        }
        let end_ms = self.end_ms();
        if let Some(e) = self.events.iter().find(|e| e.t_ms > end_ms) {
            return Err(ProfileError::EventOutsideCurve {
                kind: e.kind,
                t_ms: e.t_ms,
                end_ms,
            });
        }
        Ok(())
    }

    /// The time of the last point, since CHARGE.
    pub fn end_ms(&self) -> i64 {
        self.points.last().map_or(0, |p| p.t_ms)
    }

    /// When the reference had `kind`, since CHARGE.
    pub fn event(&self, kind: EventKind) -> Option<i64> {
        self.events.iter().find(|e| e.kind == kind).map(|e| e.t_ms)
    }

    /// The reference's BT at `t_ms`, interpolated between its points; `None` off the curve.
    pub fn bt_at(&self, t_ms: i64) -> Option<f64> {
        bt_at(&self.points, t_ms, i64::MAX)
    }

    /// The reference's ET at `t_ms`, interpolated between the two points around it when both
    /// have one.
    pub fn et_at(&self, t_ms: i64) -> Option<f64> {
        et_at(&self.points, t_ms, i64::MAX)
    }

    /// The reference's RoR at `t_ms`, °C/min: what a live [`Ror`] would have shown then — the
    /// least-squares slope of the 30 s of BT up to `t_ms` — so that it compares with a session's
    /// RoR lag for lag. The curve is resampled every second for the fit, so a sparse curve (a
    /// hand-drawn one) has a RoR too.
    pub fn ror_at(&self, t_ms: i64) -> Option<f64> {
        ror_at(&self.points, t_ms, i64::MAX)
    }

    /// The first time at or after `after_ms` that the reference's BT reaches `bt`, interpolated
    /// between its points (`after_ms` itself if BT already stands there); `None` if it never
    /// does. `after_ms` is what tells the way down after CHARGE from the way up: pass the TP.
    pub fn time_at_bt(&self, bt: f64, after_ms: i64) -> Option<i64> {
        if !bt.is_finite() {
            return None;
        }
        let start = after_ms.max(self.points.first()?.t_ms);
        let mut previous = (start, self.bt_at(start)?);
        if previous.1 >= bt {
            return Some(start);
        }
        let from = self.points.partition_point(|p| p.t_ms <= start);
        for p in &self.points[from..] {
            if p.bt >= bt {
                let share = (bt - previous.1) / (p.bt - previous.1);
                return Some(previous.0 + (share * (p.t_ms - previous.0) as f64).round() as i64);
            }
            previous = (p.t_ms, p.bt);
        }
        None
    }
}

/// Where `t_ms` falls on a curve: the point at it, or the two around it if they are at most
/// `gap_ms` apart.
enum At<'a> {
    On(&'a ProfilePoint),
    Between(&'a ProfilePoint, &'a ProfilePoint, f64),
}

fn locate(points: &[ProfilePoint], t_ms: i64, gap_ms: i64) -> Option<At<'_>> {
    let i = points.partition_point(|p| p.t_ms < t_ms);
    let after = points.get(i)?;
    if after.t_ms == t_ms {
        return Some(At::On(after));
    }
    let before = points.get(i.checked_sub(1)?)?;
    if after.t_ms - before.t_ms > gap_ms {
        return None;
    }
    let share = (t_ms - before.t_ms) as f64 / (after.t_ms - before.t_ms) as f64;
    Some(At::Between(before, after, share))
}

/// BT on a curve at `t_ms`, not interpolated across a gap wider than `gap_ms`.
pub(crate) fn bt_at(points: &[ProfilePoint], t_ms: i64, gap_ms: i64) -> Option<f64> {
    match locate(points, t_ms, gap_ms)? {
        At::On(p) => Some(p.bt),
        At::Between(a, b, share) => Some(a.bt + (b.bt - a.bt) * share),
    }
}

/// ET on a curve at `t_ms`, where the points around it have one.
pub(crate) fn et_at(points: &[ProfilePoint], t_ms: i64, gap_ms: i64) -> Option<f64> {
    match locate(points, t_ms, gap_ms)? {
        At::On(p) => p.et,
        At::Between(a, b, share) => Some(a.et? + (b.et? - a.et?) * share),
    }
}

/// The RoR of a curve at `t_ms` (see [`Profile::ror_at`]).
pub(crate) fn ror_at(points: &[ProfilePoint], t_ms: i64, gap_ms: i64) -> Option<f64> {
    let first = points.first()?.t_ms;
    if t_ms > points.last()?.t_ms || t_ms < first {
        return None;
    }
    let mut ror = Ror::new();
    let steps = ROR_WINDOW_MS / ROR_RESAMPLE_MS;
    for k in (0..=steps).rev() {
        let t = t_ms - k * ROR_RESAMPLE_MS;
        if let Some(bt) = (t >= first).then(|| bt_at(points, t, gap_ms)).flatten() {
            ror.push(t, bt);
        }
    }
    ror.value()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use EventKind::*;

    /// BT rising 10 °C/min from 100 °C, a point a second from CHARGE for ten minutes, ET 50 °C
    /// above it; events at the given times.
    pub(crate) fn ramp(events: &[(EventKind, i64)]) -> Profile {
        let points = (0..=600)
            .map(|s| ProfilePoint {
                t_ms: s * 1000,
                bt: 100.0 + s as f64 / 6.0,
                et: Some(150.0 + s as f64 / 6.0),
            })
            .collect();
        let events = events
            .iter()
            .map(|&(kind, t_ms)| ProfileEvent { kind, t_ms })
            .collect();
        Profile { points, events }
    }

    fn reading(ts_ms: i64, bt: f64) -> Reading {
        Reading {
            ts_ms,
            bt: Some(bt),
            et: None,
        }
    }

    #[test]
    fn a_session_is_cut_at_charge_and_drop_and_aligned_at_charge() {
        let base = 1_700_000_000_000;
        let mut readings: Vec<Reading> = (0..100)
            .map(|s| reading(base + s * 1000, 150.0 + s as f64))
            .collect();
        readings.reverse(); // out of order
        readings.push(reading(base + 30_000, 0.0)); // a repeat of a timestamp: the first stays
        readings.push(Reading {
            ts_ms: base + 31_500,
            bt: Some(f64::NAN),
            et: None,
        });
        let events = [
            (Charge, base + 10_000),
            (TurningPoint, base + 20_000),
            (Drop, base + 90_000),
            (FcEnd, base + 95_000), // after DROP: contradicts it
        ];
        let profile = Profile::from_session(&readings, &events).unwrap();
        assert_eq!(profile.points.len(), 81, "10 s to 90 s, both ends kept");
        assert_eq!(profile.points[0].t_ms, 0);
        assert_eq!(profile.points[0].bt, 160.0);
        assert_eq!(profile.bt_at(20_000), Some(180.0));
        assert_eq!(profile.end_ms(), 80_000);
        let kinds: Vec<(EventKind, i64)> =
            profile.events.iter().map(|e| (e.kind, e.t_ms)).collect();
        assert_eq!(kinds, [(Charge, 0), (TurningPoint, 10_000), (Drop, 80_000)]);
    }

    #[test]
    fn a_session_without_charge_or_readings_after_it_has_no_profile() {
        let readings = [reading(0, 150.0), reading(1000, 151.0)];
        assert_eq!(
            Profile::from_session(&readings, &[(Drop, 1000)]),
            Err(ProfileError::NoCharge)
        );
        assert_eq!(
            Profile::from_session(&readings, &[(Charge, 5000)]),
            Err(ProfileError::NoReadings)
        );
    }

    #[test]
    fn a_real_log_is_aligned_at_its_roasters_charge_mark() {
        let path = format!(
            "{}/../../testdata/roast-logs/skywalker/roast_25-10-11_1319.alog",
            env!("CARGO_MANIFEST_DIR")
        );
        let log = crate::alog::parse("x", &std::fs::read_to_string(path).unwrap()).unwrap();
        let profile = Profile::from_alog(&log).unwrap();
        let kinds: Vec<EventKind> = profile.events.iter().map(|e| e.kind).collect();
        assert_eq!(kinds, [Charge, TurningPoint, DryEnd, FcStart, FcEnd, Drop]);
        // FC 390 s after CHARGE (see alog's own test), on the curve, and the curve ends at DROP.
        assert!((profile.event(FcStart).unwrap() - 390_000).abs() <= 10);
        assert_eq!(profile.end_ms(), profile.event(Drop).unwrap());
        // TP is BT's lowest reading after CHARGE.
        let tp = profile.event(TurningPoint).unwrap();
        let lowest = profile.points.iter().map(|p| p.bt).fold(f64::MAX, f64::min);
        assert!((profile.bt_at(tp).unwrap() - lowest).abs() < 0.5);
    }

    #[test]
    fn the_curve_is_interpolated_and_its_ror_is_the_slope() {
        let profile = ramp(&[(Charge, 0)]);
        assert_eq!(profile.bt_at(0), Some(100.0));
        assert!((profile.bt_at(1_500).unwrap() - 100.25).abs() < 1e-9);
        assert_eq!(profile.bt_at(-1), None);
        assert_eq!(profile.bt_at(600_001), None);
        assert!((profile.et_at(1_500).unwrap() - 150.25).abs() < 1e-9);
        assert!((profile.ror_at(300_000).unwrap() - 10.0).abs() < 1e-9);
        // Not until half the RoR window has passed, as a live RoR.
        assert_eq!(profile.ror_at(10_000), None);
        assert!(profile.ror_at(15_000).is_some());
        // BT 150 °C is reached at 300 s; already above at 400 s.
        assert_eq!(profile.time_at_bt(150.0, 0), Some(300_000));
        assert_eq!(profile.time_at_bt(150.0, 400_000), Some(400_000));
        assert_eq!(profile.time_at_bt(150.05, 0), Some(300_300));
        assert_eq!(profile.time_at_bt(250.0, 0), None);
        assert_eq!(profile.time_at_bt(f64::NAN, 0), None);
    }

    #[test]
    fn a_sparse_curve_has_a_ror_too() {
        let profile = Profile {
            points: (0..=10)
                .map(|i| ProfilePoint {
                    t_ms: i * 60_000,
                    bt: 100.0 + 10.0 * i as f64,
                    et: None,
                })
                .collect(),
            events: vec![ProfileEvent {
                kind: Charge,
                t_ms: 0,
            }],
        };
        assert_eq!(profile.validate(), Ok(()));
        assert!((profile.ror_at(90_000).unwrap() - 10.0).abs() < 1e-9);
        assert_eq!(profile.et_at(90_000), None);
    }

    /// `validate` on the ramp changed by `edit`: what it must say.
    fn check(edit: impl FnOnce(&mut Profile), expected: &str) {
        let mut profile = ramp(&[(Charge, 0), (DryEnd, 200_000), (FcStart, 400_000)]);
        assert_eq!(profile.validate(), Ok(()));
        edit(&mut profile);
        let err = profile.validate().expect_err(expected).to_string();
        assert!(err.contains(expected), "{err:?} should say {expected:?}");
    }

    #[test]
    fn validate_refuses_what_no_roast_looks_like_and_says_why() {
        check(|p| p.points.clear(), "no point");
        check(
            |p| {
                let last = *p.points.last().unwrap();
                p.points
                    .extend((1..=MAX_POINTS as i64).map(|i| ProfilePoint {
                        t_ms: last.t_ms + i,
                        ..last
                    }));
            },
            "more than the 20000 accepted",
        );
        check(|p| p.points[3].bt = f64::NAN, "point 3: bt NaN");
        check(|p| p.points[3].bt = f64::INFINITY, "point 3: bt inf");
        check(|p| p.points[4].et = Some(600.0), "point 4: et 600");
        check(|p| p.points[5].bt = -60.0, "within -50..=500");
        check(
            |p| p.points.swap(10, 11),
            "point 11: t_ms 10000 is not after",
        );
        check(
            |p| p.points[12].t_ms = 11_000,
            "point 12: t_ms 11000 is not after",
        );
        check(|p| p.points[0].t_ms = -1000, "before charge");
        check(
            |p| p.points.last_mut().unwrap().t_ms = i64::MAX,
            "more than a day after charge",
        );
        check(
            |p| {
                p.events.remove(0);
            },
            "no charge event at t_ms 0",
        );
        check(|p| p.events[0].t_ms = 5, "no charge event at t_ms 0");
        check(
            |p| p.events.swap(1, 2),
            "dry_end (t_ms 200000) is listed after fc_start",
        );
        check(
            |p| p.events[2].t_ms = 100_000,
            "fc_start (t_ms 100000) is listed after dry_end",
        );
        check(
            |p| {
                p.events.push(ProfileEvent {
                    kind: DryEnd,
                    t_ms: 450_000,
                })
            },
            "dry_end is given more than once",
        );
        check(
            |p| {
                p.events.push(ProfileEvent {
                    kind: Drop,
                    t_ms: 700_000,
                })
            },
            "drop at t_ms 700000 is outside the curve (0..=600000)",
        );
    }

    #[test]
    fn a_profile_round_trips_through_json_and_a_users_json_is_checked() {
        let profile = ramp(&[(Charge, 0), (FcStart, 400_000)]);
        let json = serde_json::to_string(&profile).unwrap();
        assert_eq!(serde_json::from_str::<Profile>(&json).unwrap(), profile);
        let user = r#"{"points": [{"t_ms": 0, "bt": 180.0}, {"t_ms": 0, "bt": 170.0}],
                       "events": [{"kind": "charge", "t_ms": 0}]}"#;
        let profile: Profile = serde_json::from_str(user).unwrap();
        assert!(matches!(
            profile.validate(),
            Err(ProfileError::NotIncreasing { index: 1, .. })
        ));
        let unknown = r#"{"points": [], "events": [], "name": "x"}"#;
        assert!(serde_json::from_str::<Profile>(unknown).is_err());
    }
}
