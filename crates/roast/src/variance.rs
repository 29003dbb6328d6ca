//! How a session differs from a reference roast: BT, ET and RoR side by side, aligned at
//! CHARGE, and how far apart they were in each phase.
//!
//! The session is read as a curve the way a [`Profile`] is (the same interpolation, the same
//! RoR), so a session against its own profile differs by exactly nothing, and any difference
//! is the roast's, not the arithmetic's. Differences are session − reference: positive means
//! the session ran hotter (or rose faster) than the reference at the same time after CHARGE.

use serde::{Deserialize, Serialize};

use crate::profile::{self, ProfilePoint};
use crate::session::{self, GAP_MS, Marks};
use crate::{EventKind, Profile, Reading};

/// The finest sampling of the series: finer than any probe's than 10 Hz would only repeat the
/// interpolation.
const MIN_STEP_MS: i64 = 100;
/// The most series points: a longer series is sampled more coarsely rather than grown.
const MAX_SERIES: i64 = 20_000;

/// The phases of a roast, as the session's events bound them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// CHARGE to DRY END.
    Drying,
    /// DRY END to first crack.
    Maillard,
    /// First crack to DROP.
    Development,
}

impl Phase {
    pub const ALL: [Phase; 3] = [Phase::Drying, Phase::Maillard, Phase::Development];

    /// The events that open and close the phase.
    pub fn bounds(self) -> (EventKind, EventKind) {
        match self {
            Phase::Drying => (EventKind::Charge, EventKind::DryEnd),
            Phase::Maillard => (EventKind::DryEnd, EventKind::FcStart),
            Phase::Development => (EventKind::FcStart, EventKind::Drop),
        }
    }
}

/// One moment of the session next to the reference's same moment after CHARGE. `None` where a
/// side has no value (a gap in the readings, no ET, a RoR window not yet full).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct VariancePoint {
    pub t_ms: i64,
    pub bt: Option<f64>,
    pub ref_bt: Option<f64>,
    pub d_bt: Option<f64>,
    pub et: Option<f64>,
    pub ref_et: Option<f64>,
    pub d_et: Option<f64>,
    pub ror: Option<f64>,
    pub ref_ror: Option<f64>,
    pub d_ror: Option<f64>,
}

/// The differences of one quantity over a stretch of the series; `n` points had both sides.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Stat {
    pub n: usize,
    /// Signed: a session consistently hotter or cooler shows here, noise cancels.
    pub mean: f64,
    pub mean_abs: f64,
    pub rms: f64,
    pub max_abs: f64,
}

impl Stat {
    fn of(values: impl Iterator<Item = f64>) -> Option<Stat> {
        let (mut n, mut sum, mut abs, mut sq, mut max) = (0, 0.0, 0.0, 0.0, 0.0_f64);
        for v in values {
            n += 1;
            sum += v;
            abs += v.abs();
            sq += v * v;
            max = max.max(v.abs());
        }
        let count = n as f64;
        (n > 0).then(|| Stat {
            n,
            mean: sum / count,
            mean_abs: abs / count,
            rms: (sq / count).sqrt(),
            max_abs: max,
        })
    }
}

/// The differences over a stretch of the session, since CHARGE; `None` where no point of the
/// stretch had both sides (a stretch past the reference's end).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Deviation {
    pub from_ms: i64,
    pub to_ms: i64,
    /// Series points in the stretch.
    pub samples: usize,
    pub bt: Option<Stat>,
    pub et: Option<Stat>,
    pub ror: Option<Stat>,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct PhaseVariance {
    pub phase: Phase,
    #[serde(flatten)]
    pub deviation: Deviation,
}

/// How long a phase took in the session and in the reference; `None` where either has not got
/// both of the phase's events (a phase still running has no length yet).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PhaseTime {
    pub phase: Phase,
    pub session_ms: Option<i64>,
    pub reference_ms: Option<i64>,
    /// session − reference.
    pub d_ms: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Variance {
    /// The series' spacing (the one asked for, or coarser: see [`variance`]).
    pub step_ms: i64,
    /// Every `step_ms` from CHARGE, over the stretch both curves cover.
    pub series: Vec<VariancePoint>,
    /// The phases the session has started, in order.
    pub phases: Vec<PhaseVariance>,
    /// From CHARGE to the session's end.
    pub overall: Deviation,
    /// Every phase.
    pub phase_times: Vec<PhaseTime>,
}

/// Compares a session with a reference, aligned at `charge_ts` (the session's CHARGE, device
/// ms): the series every `step_ms` (at least 100 ms, and coarser if the series would pass
/// 20 000 points) over the time both cover — from CHARGE to the earlier of the session's end
/// (DROP, or its last reading while it runs) and the reference's; past the reference's end there
/// is nothing to compare with, so a phase there has no statistics.
///
/// The reference is taken as [`Profile::validate`] passes it; an invalid one gives meaningless
/// figures (never a panic).
///
/// A phase is bounded by the session's own events (drying from CHARGE to DRY END, Maillard to
/// first crack, development to DROP), so that its statistics compare like with like even when
/// the session is ahead of or behind the reference; the phase a running session is in ends at its
/// last reading. A phase whose opening event is missing while a later one is known is left out:
/// where it began cannot be told.
pub fn variance(
    readings: &[Reading],
    charge_ts: i64,
    events: &[(EventKind, i64)],
    reference: &Profile,
    step_ms: i64,
) -> Variance {
    let mut given: Vec<(EventKind, i64)> = events
        .iter()
        .filter(|(k, _)| *k != EventKind::Charge)
        .copied()
        .collect();
    given.push((EventKind::Charge, charge_ts));
    let marks = Marks::new(&given);
    let drop = marks.get(EventKind::Drop).unwrap_or(i64::MAX);
    let curve: Vec<ProfilePoint> = session::samples(readings)
        .into_iter()
        .filter(|s| (charge_ts..=drop).contains(&s.ts_ms))
        .map(|s| ProfilePoint {
            t_ms: s.ts_ms.saturating_sub(charge_ts),
            bt: s.bt,
            et: s.et,
        })
        .collect();
    let session_end = curve.last().map_or(0, |p| p.t_ms);

    let first = curve
        .first()
        .zip(reference.points.first())
        .map(|(a, b)| a.t_ms.max(b.t_ms));
    let last = session_end.min(reference.end_ms());
    let mut step_ms = step_ms.max(MIN_STEP_MS);
    let mut series = Vec::new();
    if let Some(first) = first.filter(|&f| f <= last) {
        step_ms = step_ms.max((last - first) / MAX_SERIES + 1);
        // On a grid from CHARGE, so that series of different sessions line up.
        let grid = (first.div_euclid(step_ms)..=last.div_euclid(step_ms))
            .filter_map(|k| k.checked_mul(step_ms))
            .filter(|t| (first..=last).contains(t));
        series.extend(grid.map(|t| point(&curve, reference, t)));
    }

    // The session's phase bounds, since CHARGE.
    let rel = |kind| marks.get(kind).map(|ts: i64| ts.saturating_sub(charge_ts));
    let mut phases = Vec::new();
    for phase in Phase::ALL {
        let (open, close) = phase.bounds();
        let Some(from_ms) = rel(open) else { continue };
        let later_known = EventKind::ALL
            .into_iter()
            .filter(|k| *k > close)
            .any(|k| rel(k).is_some());
        let to_ms = match rel(close) {
            Some(t) => t.min(session_end),
            // Running: the phase goes on to the last reading.
            None if !later_known => session_end,
            None => continue,
        };
        let closed_at_end = to_ms == session_end;
        phases.push(PhaseVariance {
            phase,
            deviation: deviation(&series, from_ms, to_ms, closed_at_end),
        });
    }
    let overall = deviation(&series, 0, session_end, true);

    let phase_times = Phase::ALL
        .into_iter()
        .map(|phase| {
            let (open, close) = phase.bounds();
            let session_ms = rel(close).zip(rel(open)).map(|(b, a)| b - a);
            let reference_ms = reference
                .event(close)
                .zip(reference.event(open))
                .map(|(b, a)| b - a);
            PhaseTime {
                phase,
                session_ms,
                reference_ms,
                d_ms: session_ms.zip(reference_ms).map(|(s, r)| s - r),
            }
        })
        .collect();

    Variance {
        step_ms,
        series,
        phases,
        overall,
        phase_times,
    }
}

fn point(curve: &[ProfilePoint], reference: &Profile, t_ms: i64) -> VariancePoint {
    let d = |a: Option<f64>, b: Option<f64>| Some(a? - b?);
    // The session is not interpolated across a gap in its readings; the reference is a
    // reference, taken as drawn.
    let bt = profile::bt_at(curve, t_ms, GAP_MS);
    let ref_bt = reference.bt_at(t_ms);
    let et = profile::et_at(curve, t_ms, GAP_MS);
    let ref_et = reference.et_at(t_ms);
    let ror = profile::ror_at(curve, t_ms, GAP_MS);
    let ref_ror = reference.ror_at(t_ms);
    VariancePoint {
        t_ms,
        bt,
        ref_bt,
        d_bt: d(bt, ref_bt),
        et,
        ref_et,
        d_et: d(et, ref_et),
        ror,
        ref_ror,
        d_ror: d(ror, ref_ror),
    }
}

/// The statistics of the series points from `from_ms` up to `to_ms` (included if `closed`: the
/// last stretch of the session keeps its last point).
fn deviation(series: &[VariancePoint], from_ms: i64, to_ms: i64, closed: bool) -> Deviation {
    let inside: Vec<&VariancePoint> = series
        .iter()
        .filter(|p| p.t_ms >= from_ms && (p.t_ms < to_ms || (closed && p.t_ms == to_ms)))
        .collect();
    let stat =
        |pick: fn(&VariancePoint) -> Option<f64>| Stat::of(inside.iter().filter_map(|p| pick(p)));
    Deviation {
        from_ms,
        to_ms,
        samples: inside.len(),
        bt: stat(|p| p.d_bt),
        et: stat(|p| p.d_et),
        ror: stat(|p| p.d_ror),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use EventKind::*;

    const T0: i64 = 1_700_000_000_000;

    /// A roast-shaped session: BT falls from 200 °C to a TP of ~100 °C at 60 s, then climbs
    /// ever more slowly; a little deterministic noise, readings every second for `end_s`.
    fn session(end_s: i64, offset_c: f64) -> Vec<Reading> {
        let mut noise = 12345_u64;
        (0..=end_s)
            .map(|s| {
                noise = noise.wrapping_mul(6364136223846793005).wrapping_add(1);
                let n = ((noise >> 33) as f64 / (1u64 << 31) as f64 - 0.5) * 0.4;
                let t = s as f64;
                let bt = if s < 60 {
                    200.0 - 100.0 * t / 60.0
                } else {
                    100.0 + 25.0 * (t - 60.0).sqrt() / 2.0
                };
                Reading {
                    ts_ms: T0 + s * 1000,
                    bt: Some(bt + n + offset_c),
                    et: Some(bt + 60.0 + offset_c),
                }
            })
            .collect()
    }

    fn events(list: &[(EventKind, i64)]) -> Vec<(EventKind, i64)> {
        list.iter().map(|&(k, s)| (k, T0 + s * 1000)).collect()
    }

    const ROAST: [(EventKind, i64); 5] = [
        (Charge, 0),
        (TurningPoint, 60),
        (DryEnd, 250),
        (FcStart, 480),
        (Drop, 600),
    ];

    #[test]
    fn a_session_against_its_own_profile_differs_by_nothing() {
        let readings = session(600, 0.0);
        let reference = Profile::from_session(&readings, &events(&ROAST)).unwrap();
        let v = variance(&readings, T0, &events(&ROAST), &reference, 1000);
        assert_eq!(v.series.len(), 601);
        assert!(
            v.series
                .iter()
                .all(|p| p.d_bt == Some(0.0) && p.d_et == Some(0.0))
        );
        assert!(v.series[20..].iter().all(|p| p.d_ror == Some(0.0)));
        let phases: Vec<Phase> = v.phases.iter().map(|p| p.phase).collect();
        assert_eq!(phases, Phase::ALL);
        for d in v.phases.iter().map(|p| p.deviation).chain([v.overall]) {
            for stat in [d.bt, d.et, d.ror] {
                let s = stat.unwrap();
                assert_eq!((s.mean, s.mean_abs, s.rms, s.max_abs), (0.0, 0.0, 0.0, 0.0));
            }
        }
        assert!(v.phase_times.iter().all(|t| t.d_ms == Some(0)));
        // The phases split the series between them, each point once.
        let split: usize = v.phases.iter().map(|p| p.deviation.samples).sum();
        assert_eq!(split, v.overall.samples);
        assert_eq!(v.phases[2].deviation.from_ms, 480_000);
        // As the service sends it: phases by name, their figures beside it.
        let json = serde_json::to_value(v.phases[0]).unwrap();
        assert_eq!(json["phase"], "drying");
        assert_eq!(json["to_ms"], 250_000);
        assert_eq!(json["bt"]["rms"], 0.0);
    }

    #[test]
    fn a_hotter_session_differs_by_its_offset_and_rises_alike() {
        let reference = Profile::from_session(&session(600, 0.0), &events(&ROAST)).unwrap();
        let v = variance(&session(600, 5.0), T0, &events(&ROAST), &reference, 5000);
        assert_eq!(v.step_ms, 5000);
        let bt = v.overall.bt.unwrap();
        assert!(
            (bt.mean - 5.0).abs() < 0.1 && (bt.rms - 5.0).abs() < 0.1,
            "{bt:?}"
        );
        assert!(bt.max_abs < 5.6);
        let et = v.overall.et.unwrap();
        assert!((et.mean - 5.0).abs() < 1e-9 && (et.max_abs - 5.0).abs() < 1e-9);
        assert!(v.overall.ror.unwrap().mean_abs < 1.0);
    }

    #[test]
    fn phases_are_the_sessions_own_and_past_the_references_end_there_is_nothing() {
        // The reference stops at 420 s, 20 s after its first crack; the session goes on to its
        // DROP at 600 s, its events later than the reference's.
        let readings = session(600, 0.0);
        let short = Profile::from_session(
            &session(420, 0.0),
            &events(&[(Charge, 0), (DryEnd, 230), (FcStart, 400)]),
        )
        .unwrap();
        let v = variance(&readings, T0, &events(&ROAST), &short, 1000);
        assert_eq!(v.series.last().unwrap().t_ms, 420_000);
        let dev = v.phases[2].deviation;
        assert_eq!((dev.from_ms, dev.to_ms, dev.samples), (480_000, 600_000, 0));
        assert_eq!((dev.bt, dev.et, dev.ror), (None, None, None));
        assert_eq!(v.overall.to_ms, 600_000);
        let times: Vec<(Option<i64>, Option<i64>, Option<i64>)> = v
            .phase_times
            .iter()
            .map(|t| (t.session_ms, t.reference_ms, t.d_ms))
            .collect();
        assert_eq!(
            times,
            [
                (Some(250_000), Some(230_000), Some(20_000)),
                (Some(230_000), Some(170_000), Some(60_000)),
                (Some(120_000), None, None),
            ]
        );
    }

    #[test]
    fn a_running_session_is_in_its_last_phase_until_its_last_reading() {
        let reference = Profile::from_session(&session(600, 0.0), &events(&ROAST)).unwrap();
        let v = variance(
            &session(300, 0.0),
            T0,
            &events(&ROAST[..3]),
            &reference,
            1000,
        );
        let phases: Vec<(Phase, i64, i64)> = v
            .phases
            .iter()
            .map(|p| (p.phase, p.deviation.from_ms, p.deviation.to_ms))
            .collect();
        assert_eq!(
            phases,
            [
                (Phase::Drying, 0, 250_000),
                (Phase::Maillard, 250_000, 300_000)
            ]
        );
        assert_eq!(v.phase_times[1].session_ms, None, "not over yet");
        // No DRY END but first crack known: Maillard cannot be told from drying.
        let v = variance(
            &session(500, 0.0),
            T0,
            &events(&[(Charge, 0), (FcStart, 480)]),
            &reference,
            1000,
        );
        let phases: Vec<Phase> = v.phases.iter().map(|p| p.phase).collect();
        assert_eq!(phases, [Phase::Development]);
    }

    #[test]
    fn a_gap_in_the_session_is_not_compared_and_no_session_gives_an_empty_series() {
        let reference = Profile::from_session(&session(600, 0.0), &events(&ROAST)).unwrap();
        let gappy: Vec<Reading> = session(600, 0.0)
            .into_iter()
            .filter(|r| !(T0 + 300_000..T0 + 360_000).contains(&r.ts_ms))
            .collect();
        let v = variance(&gappy, T0, &events(&ROAST), &reference, 1000);
        let at = |t: i64| v.series.iter().find(|p| p.t_ms == t).unwrap();
        assert_eq!(at(330_000).bt, None);
        assert!(at(330_000).ref_bt.is_some());
        assert_eq!(
            at(370_000).ror,
            None,
            "the RoR window refills after the gap"
        );
        assert_eq!(at(400_000).d_bt, Some(0.0));

        let v = variance(&[], T0, &[], &reference, 0);
        assert!(v.series.is_empty());
        assert_eq!(v.overall.samples, 0);
        assert_eq!(v.step_ms, MIN_STEP_MS);
        assert_eq!(v.phases.len(), 1, "charged, drying from CHARGE on");
    }
}
