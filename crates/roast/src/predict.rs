//! Live predictions of a running roast — when first crack will start, when the roast will drop
//! and at what BT — from the readings so far and a reference roast, and the scoring of those
//! predictions against what happened.
//!
//! First crack is predicted two ways, each good where the other is weak:
//!
//! - **reference**: find the moment the reference had the session's current BT, take the time
//!   the reference still needed from there to its first crack, and scale it by how much faster
//!   the session is rising than the reference was at that point (reference RoR / session RoR).
//!   It knows the shape of the whole rest of the roast — the RoR falling through Maillard — but
//!   only as the reference roast had it; a session roasted differently (another batch size,
//!   another heat) follows the shape less and less well the further ahead it looks.
//! - **extrapolation**: carry the session's own BT forward at its own RoR, the RoR following its
//!   trend of the last 90 s (a straight line), until BT reaches the reference's BT at first
//!   crack. The RoR is held between a floor — half the RoR now, and at least 2 °C/min — and the
//!   RoR now: a falling trend carried on for minutes would otherwise stall BT short of first
//!   crack (in the real and simulated roasts of the tests, the RoR at first crack is at least
//!   0.68 and 0.48 of what it was half-way there), and a rising one (the roaster adding heat) is
//!   not assumed to go on. It knows this batch but
//!   nothing of what comes: over the last minute or two it is the best there is, over five it is
//!   a guess (on the simulated roasts at half-way to first crack it is off by minutes).
//!
//! The prediction blends them by how far first crack still is: the extrapolation's weight grows
//! from 0 when the reference puts first crack [`BLEND_HORIZON_MS`] or more away to 1 when it is
//! imminent. The horizon is twice the span the RoR trend is fitted over: a straight line is
//! trusted about as far ahead as it was seen. A fixed split would take the extrapolation's
//! large errors early or throw away the session's own evidence late; the scoring tests show the
//! blend beating each method alone at three quarters of the way. Where either has no estimate
//! the other is used alone; where neither has (no RoR yet, the beans still cooling the probe)
//! the naive baseline is: CHARGE + the reference's CHARGE→FC time.
//!
//! DROP is first crack (actual or predicted) plus the reference's development time. BT at DROP
//! is the reference's BT at its DROP, shifted by how much hotter or cooler the session was than
//! the reference at first crack: roasters drop at a temperature, and extrapolating a RoR through
//! first crack (where it stalls or crashes) would be worse than assuming the same development.

use std::fmt::Write as _;

use serde::Serialize;

use crate::session::{self, GAP_MS, Marks, Sample};
use crate::{EventKind, Profile, ROR_WINDOW_MS, Reading, Ror};

/// The span of RoR whose trend is extrapolated: long enough that the RoR's own noise does not
/// make the trend, short enough to follow a change of heat.
const TREND_MS: i64 = 90_000;
/// How far ahead the extrapolation starts to count (see the module's documentation).
pub const BLEND_HORIZON_MS: i64 = 2 * TREND_MS;
/// The least RoR the extrapolation carries BT forward at: this share of the RoR now, and never
/// under the absolute floor (°C/min) — a declining trend must not stall BT: first crack comes.
const ROR_FLOOR_SHARE: f64 = 0.5;
const ROR_FLOOR_C_PER_MIN: f64 = 2.0;
/// The furthest the extrapolation looks ahead.
const MAX_HORIZON_MS: i64 = 30 * 60_000;
/// The extrapolation's step.
const STEP_MS: i64 = 1_000;
/// The range the reference/session RoR ratio is trusted in: outside it one of the two RoRs is
/// not a roast's (a stall, a probe fault), and the reference's own time is a better guess.
const SCALE_RANGE: std::ops::RangeInclusive<f64> = 0.5..=2.0;

/// What the roast is expected to do, in device ms (as the readings').
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Prediction {
    /// First crack: the event if it is known, else predicted (never before the last reading:
    /// a crack not yet heard is still to come).
    pub fc_start_ts: Option<i64>,
    pub drop_ts: Option<i64>,
    pub bt_at_drop: Option<f64>,
    /// How first crack was had: `actual`, `blend`, `reference`, `extrapolation`, `naive`, or
    /// `none` (no CHARGE, or a reference without first crack).
    pub method: &'static str,
    /// How much of the roast the prediction rests on: CHARGE to the last reading, ms.
    pub based_on_ms: i64,
}

/// The naive baseline: first crack as long after CHARGE as the reference's was.
pub fn naive_fc_start(charge_ts: i64, reference: &Profile) -> Option<i64> {
    charge_ts.checked_add(reference.event(EventKind::FcStart)?)
}

/// Predicts first crack and the drop of a running roast (see the module's documentation). The
/// reference is taken as [`Profile::validate`] passes it.
pub fn predict(
    readings_so_far: &[Reading],
    events_so_far: &[(EventKind, i64)],
    reference: &Profile,
) -> Prediction {
    let samples = session::samples(readings_so_far);
    let marks = Marks::new(events_so_far);
    let Some(charge) = marks.get(EventKind::Charge) else {
        return Prediction {
            fc_start_ts: None,
            drop_ts: None,
            bt_at_drop: None,
            method: "none",
            based_on_ms: 0,
        };
    };
    let since = &samples[samples.partition_point(|s| s.ts_ms < charge)..];
    let now = since.last().map_or(charge, |s| s.ts_ms);
    let (fc_start_ts, method) = match marks.get(EventKind::FcStart) {
        Some(fc) => (Some(fc), "actual"),
        None => {
            let e = estimates(since, charge, &marks, reference);
            (e.fc.map(|fc| fc.max(now)), e.method)
        }
    };
    let ref_fc = reference.event(EventKind::FcStart);
    let ref_drop = reference.event(EventKind::Drop);
    let drop_ts = match marks.get(EventKind::Drop) {
        Some(drop) => Some(drop),
        None => fc_start_ts
            .zip(ref_fc.zip(ref_drop))
            .map(|(fc, (rf, rd))| fc.saturating_add(rd - rf).max(now)),
    };
    let bt_at_drop = match marks.get(EventKind::Drop) {
        Some(drop) => session::nearest(since, drop, GAP_MS, |s| Some(s.bt)),
        None => {
            // The session's BT offset at first crack: none if first crack is only predicted
            // (it is predicted where BT reaches the reference's).
            let offset = match marks.get(EventKind::FcStart) {
                Some(fc) => session::nearest(since, fc, GAP_MS, |s| Some(s.bt))
                    .zip(ref_fc.and_then(|t| reference.bt_at(t)))
                    .map(|(bt, ref_bt)| bt - ref_bt),
                None => Some(0.0),
            };
            ref_drop
                .and_then(|t| reference.bt_at(t))
                .zip(offset)
                .map(|(bt, offset)| bt + offset)
        }
    };
    Prediction {
        fc_start_ts,
        drop_ts,
        bt_at_drop,
        method,
        based_on_ms: now.saturating_sub(charge),
    }
}

/// First crack by each method, device ms.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Estimates {
    naive: Option<i64>,
    reference: Option<i64>,
    extrapolation: Option<i64>,
    /// The prediction, and how it was made.
    fc: Option<i64>,
    method: &'static str,
}

/// Where the session is now: its BT (the 30 s fit's value at the newest reading, not the
/// reading itself, so that a reading's noise does not move the prediction) and its RoR.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Now {
    ts_ms: i64,
    bt: f64,
    ror: f64,
    /// The RoR's trend, °C/min per ms.
    trend: f64,
}

fn estimates(since: &[Sample], charge: i64, marks: &Marks, reference: &Profile) -> Estimates {
    let naive = naive_fc_start(charge, reference);
    let mut e = Estimates {
        naive,
        reference: None,
        extrapolation: None,
        fc: naive,
        method: if naive.is_some() { "naive" } else { "none" },
    };
    let (Some(ref_fc), Some(now)) = (reference.event(EventKind::FcStart), now(since)) else {
        return e;
    };
    // Only once the beans heat the probe: before the turning point BT and RoR say nothing of
    // the roast to come.
    let turned = marks.get(EventKind::TurningPoint).is_some() || now.ror > ROR_FLOOR_C_PER_MIN;
    if !turned || now.ror <= 0.0 {
        return e;
    }
    e.reference = by_reference(&now, reference, ref_fc);
    e.extrapolation = reference
        .bt_at(ref_fc)
        .and_then(|target| by_extrapolation(&now, target));
    (e.fc, e.method) = match (e.reference, e.extrapolation) {
        (Some(r), Some(x)) => {
            let ahead = (r - now.ts_ms).clamp(0, BLEND_HORIZON_MS);
            let w = 1.0 - ahead as f64 / BLEND_HORIZON_MS as f64;
            let blend = r as f64 + w * (x - r) as f64;
            (Some(blend.round() as i64), "blend")
        }
        (Some(r), None) => (Some(r), "reference"),
        (None, Some(x)) => (Some(x), "extrapolation"),
        (None, None) => (e.fc, e.method),
    };
    e
}

fn now(since: &[Sample]) -> Option<Now> {
    let newest = since.last()?;
    let window = &since[since.partition_point(|s| s.ts_ms < newest.ts_ms - ROR_WINDOW_MS)..];
    let points: Vec<(f64, f64)> = window
        .iter()
        .map(|s| ((s.ts_ms - newest.ts_ms) as f64, s.bt))
        .collect();
    let (bt, _) = line(&points)?;
    // The RoR's trend, from the RoR a live display showed at each reading of the last 90 s:
    // one sliding fit over them (each value the fit of the 30 s up to its reading), not a fit
    // per reading, which at 10 readings a second made predictions most of analytics' CPU.
    let trend_from = newest.ts_ms - TREND_MS;
    let first = since.partition_point(|s| s.ts_ms < trend_from - ROR_WINDOW_MS);
    let mut live = Ror::new();
    let mut rors: Vec<(f64, f64)> = Vec::new();
    for s in &since[first..] {
        live.push(s.ts_ms, s.bt);
        if s.ts_ms >= trend_from
            && let Some(r) = live.value()
        {
            rors.push(((s.ts_ms - newest.ts_ms) as f64, r));
        }
    }
    let ror = live.value()?;
    let spans_half = rors
        .first()
        .is_some_and(|&(t, _)| -t >= (TREND_MS / 2) as f64);
    let trend = match line(&rors) {
        Some((_, slope)) if spans_half => slope,
        _ => 0.0,
    };
    Some(Now {
        ts_ms: newest.ts_ms,
        bt,
        ror,
        trend,
    })
}

/// The least-squares line through `points` (x ≤ 0, the newest at 0): its value at 0 and slope.
fn line(points: &[(f64, f64)]) -> Option<(f64, f64)> {
    if points.len() < 2 {
        return None;
    }
    let n = points.len() as f64;
    let mean_x = points.iter().map(|p| p.0).sum::<f64>() / n;
    let mean_y = points.iter().map(|p| p.1).sum::<f64>() / n;
    let (mut sxy, mut sxx) = (0.0, 0.0);
    for &(x, y) in points {
        sxy += (x - mean_x) * (y - mean_y);
        sxx += (x - mean_x) * (x - mean_x);
    }
    let slope = (sxx > 0.0).then(|| sxy / sxx)?;
    Some((mean_y - slope * mean_x, slope))
}

/// The reference's time from the session's BT to its first crack, scaled by the RoRs.
fn by_reference(now: &Now, reference: &Profile, ref_fc: i64) -> Option<i64> {
    // The way up: from the reference's turning point (or its lowest BT before first crack).
    let tp = reference.event(EventKind::TurningPoint).or_else(|| {
        reference
            .points
            .iter()
            .take_while(|p| p.t_ms <= ref_fc)
            .min_by(|a, b| a.bt.total_cmp(&b.bt))
            .map(|p| p.t_ms)
    })?;
    let at = reference.time_at_bt(now.bt, tp)?;
    if at >= ref_fc {
        // The session is as hot as the reference was at first crack: it is due.
        return Some(now.ts_ms);
    }
    let scale = reference
        .ror_at(at)
        .map(|r| r / now.ror)
        .filter(|s| SCALE_RANGE.contains(s))
        .unwrap_or(1.0);
    Some(now.ts_ms + ((ref_fc - at) as f64 * scale).round() as i64)
}

/// When the session's BT, carried forward on its RoR trend, reaches `target`.
fn by_extrapolation(now: &Now, target: f64) -> Option<i64> {
    if now.bt >= target {
        return Some(now.ts_ms);
    }
    // A live RoR is the slope of the last 30 s: it describes the moment half a window ago. The
    // trend line is read half a window later to give the RoR of the moment it is applied at.
    let lag = (ROR_WINDOW_MS / 2) as f64;
    let ror_at = |ahead_ms: f64| {
        let r = now.ror + now.trend * (ahead_ms + lag);
        let floor = (now.ror * ROR_FLOOR_SHARE).max(ROR_FLOOR_C_PER_MIN);
        r.clamp(floor, now.ror.max(floor))
    };
    let mut bt = now.bt;
    let mut ahead = 0;
    while ahead < MAX_HORIZON_MS {
        // The midpoint rule over each step.
        let rise = ror_at((ahead + STEP_MS / 2) as f64) * STEP_MS as f64 / 60_000.0;
        if bt + rise >= target {
            let share = (target - bt) / rise;
            return Some(now.ts_ms + ahead + (share * STEP_MS as f64).round() as i64);
        }
        bt += rise;
        ahead += STEP_MS;
    }
    None
}

/// A roast to score predictions on: its readings, its true events and the reference to predict
/// it by.
#[derive(Debug, Clone, PartialEq)]
pub struct Case {
    pub name: String,
    pub readings: Vec<Reading>,
    pub events: Vec<(EventKind, i64)>,
    pub reference: Profile,
}

/// Where predictions are made: these shares of the true CHARGE→FC time.
pub const PREDICTION_CUTS: [f64; 2] = [0.5, 0.75];

/// The errors of the first-crack prediction at one cut, predicted − true, ms; each method's as
/// it would do alone (falling back to the naive baseline where it has no estimate), so the
/// blend can be judged against its parts.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct CutScore {
    pub fraction: f64,
    pub errors_ms: Vec<i64>,
    pub naive_errors_ms: Vec<i64>,
    pub reference_errors_ms: Vec<i64>,
    pub extrapolation_errors_ms: Vec<i64>,
    /// The case with the largest error, and the error.
    pub worst: Option<(String, i64)>,
}

fn mae_s(errors: &[i64]) -> Option<f64> {
    (!errors.is_empty())
        .then(|| errors.iter().map(|e| e.abs()).sum::<i64>() as f64 / errors.len() as f64 / 1e3)
}

impl CutScore {
    pub fn n(&self) -> usize {
        self.errors_ms.len()
    }

    /// Mean absolute error, s.
    pub fn mae_s(&self) -> Option<f64> {
        mae_s(&self.errors_ms)
    }

    pub fn max_s(&self) -> Option<f64> {
        self.errors_ms
            .iter()
            .map(|e| e.abs())
            .max()
            .map(|e| e as f64 / 1e3)
    }

    /// Mean signed error, s: positive when first crack is predicted late.
    pub fn bias_s(&self) -> Option<f64> {
        (!self.errors_ms.is_empty())
            .then(|| self.errors_ms.iter().sum::<i64>() as f64 / self.errors_ms.len() as f64 / 1e3)
    }

    pub fn naive_mae_s(&self) -> Option<f64> {
        mae_s(&self.naive_errors_ms)
    }

    pub fn naive_max_s(&self) -> Option<f64> {
        self.naive_errors_ms
            .iter()
            .map(|e| e.abs())
            .max()
            .map(|e| e as f64 / 1e3)
    }

    pub fn reference_mae_s(&self) -> Option<f64> {
        mae_s(&self.reference_errors_ms)
    }

    pub fn extrapolation_mae_s(&self) -> Option<f64> {
        mae_s(&self.extrapolation_errors_ms)
    }
}

/// First-crack predictions scored over many roasts.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PredictionScore {
    pub cases: usize,
    /// Cases that could not be scored (no CHARGE or first crack in the truth, none in the
    /// reference), by name.
    pub skipped: Vec<String>,
    /// One per [`PREDICTION_CUTS`].
    pub cuts: Vec<CutScore>,
}

/// Scores first-crack predictions: for each case, the readings and events up to each cut of
/// the true CHARGE→FC time are given to [`predict`], and the prediction compared with the true
/// first crack, next to the naive baseline's.
pub fn score_predictions(cases: &[Case]) -> PredictionScore {
    let mut score = PredictionScore {
        cases: cases.len(),
        skipped: Vec::new(),
        cuts: PREDICTION_CUTS
            .iter()
            .map(|&fraction| CutScore {
                fraction,
                ..CutScore::default()
            })
            .collect(),
    };
    for case in cases {
        let truth = Marks::new(&case.events);
        let (Some(charge), Some(fc)) =
            (truth.get(EventKind::Charge), truth.get(EventKind::FcStart))
        else {
            score.skipped.push(case.name.clone());
            continue;
        };
        let Some(naive) = naive_fc_start(charge, &case.reference) else {
            score.skipped.push(case.name.clone());
            continue;
        };
        for cut in &mut score.cuts {
            let at = charge + ((fc - charge) as f64 * cut.fraction).round() as i64;
            let readings: Vec<Reading> = case
                .readings
                .iter()
                .filter(|r| r.ts_ms <= at)
                .copied()
                .collect();
            let events: Vec<(EventKind, i64)> = truth.until(at).iter().collect();
            let predicted = predict(&readings, &events, &case.reference)
                .fc_start_ts
                .unwrap_or(naive);
            let samples = session::samples(&readings);
            let since = &samples[samples.partition_point(|s| s.ts_ms < charge)..];
            let e = estimates(since, charge, &Marks::new(&events), &case.reference);
            let error = predicted - fc;
            cut.errors_ms.push(error);
            cut.naive_errors_ms.push(naive - fc);
            cut.reference_errors_ms
                .push(e.reference.unwrap_or(naive) - fc);
            cut.extrapolation_errors_ms
                .push(e.extrapolation.unwrap_or(naive) - fc);
            if cut
                .worst
                .as_ref()
                .is_none_or(|(_, w)| error.abs() > w.abs())
            {
                cut.worst = Some((case.name.clone(), error));
            }
        }
    }
    score
}

impl PredictionScore {
    /// The table: per cut, the prediction's n, mean absolute, largest and mean signed error, the
    /// naive baseline's, and each method's alone.
    pub fn table(&self, title: &str) -> String {
        let s = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.1}s"));
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{title}: {} roasts, {} skipped",
            self.cases,
            self.skipped.len()
        );
        let _ = writeln!(
            out,
            "{:<5} {:>4} {:>8} {:>8} {:>8} | {:>9} {:>9} | {:>9} {:>9}  worst",
            "cut", "n", "MAE", "max", "bias", "naive MAE", "naive max", "ref MAE", "extrap MAE"
        );
        for c in &self.cuts {
            let worst = c.worst.as_ref().map_or(String::new(), |(name, e)| {
                format!("{name} {:+.1}s", *e as f64 / 1e3)
            });
            let _ = writeln!(
                out,
                "{:<5} {:>4} {:>8} {:>8} {:>8} | {:>9} {:>9} | {:>9} {:>9}  {worst}",
                format!("{:.0}%", c.fraction * 100.0),
                c.n(),
                s(c.mae_s()),
                s(c.max_s()),
                s(c.bias_s()),
                s(c.naive_mae_s()),
                s(c.naive_max_s()),
                s(c.reference_mae_s()),
                s(c.extrapolation_mae_s()),
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::tests::ramp;
    use EventKind::*;

    const T0: i64 = 1_700_000_000_000;

    /// A session on a ramp of `ror` °C/min from 100 °C at CHARGE, a reading a second, for
    /// `secs` seconds.
    fn session(ror: f64, secs: i64) -> Vec<Reading> {
        (0..=secs)
            .map(|s| Reading {
                ts_ms: T0 + s * 1000,
                bt: Some(100.0 + ror * s as f64 / 60.0),
                et: None,
            })
            .collect()
    }

    /// The reference: 10 °C/min from 100 °C; first crack at 180 °C (480 s), DROP at 600 s.
    fn reference() -> Profile {
        ramp(&[
            (Charge, 0),
            (TurningPoint, 0),
            (FcStart, 480_000),
            (Drop, 600_000),
        ])
    }

    #[test]
    fn a_session_like_its_reference_cracks_when_the_reference_did() {
        let p = predict(&session(10.0, 240), &[(Charge, T0)], &reference());
        assert_eq!(p.method, "blend");
        assert_eq!(p.based_on_ms, 240_000);
        let fc = p.fc_start_ts.unwrap();
        assert!((fc - (T0 + 480_000)).abs() <= 1_000, "{}", fc - T0);
        assert_eq!(p.drop_ts, Some(fc + 120_000));
        assert!((p.bt_at_drop.unwrap() - 200.0).abs() < 1e-9);
    }

    #[test]
    fn a_faster_session_is_predicted_earlier_by_both_methods() {
        // 12 °C/min: 180 °C at 400 s.
        let since = session(12.0, 200);
        let samples = session::samples(&since);
        let e = estimates(&samples, T0, &Marks::new(&[(Charge, T0)]), &reference());
        for (method, fc) in [
            ("reference", e.reference),
            ("extrapolation", e.extrapolation),
        ] {
            let fc = fc.unwrap() - T0;
            assert!((fc - 400_000).abs() <= 2_000, "{method}: {fc}");
        }
        assert_eq!(e.naive, Some(T0 + 480_000));
    }

    #[test]
    fn known_events_are_taken_as_they_are() {
        let events = [(Charge, T0), (FcStart, T0 + 480_000)];
        let mut readings = session(10.0, 500);
        // 2 °C hotter than the reference at first crack.
        for r in &mut readings {
            r.bt = r.bt.map(|bt| bt + 2.0);
        }
        let p = predict(&readings, &events, &reference());
        assert_eq!(
            (p.fc_start_ts, p.drop_ts, p.method),
            (Some(T0 + 480_000), Some(T0 + 600_000), "actual")
        );
        assert!((p.bt_at_drop.unwrap() - 202.0).abs() < 1e-9);
        let mut done = events.to_vec();
        done.push((Drop, T0 + 500_000));
        let p = predict(&readings, &done, &reference());
        assert_eq!(p.drop_ts, Some(T0 + 500_000));
        assert!((p.bt_at_drop.unwrap() - (100.0 + 500.0 / 6.0 + 2.0)).abs() < 1e-9);
    }

    #[test]
    fn without_charge_or_rise_there_is_no_prediction_or_only_the_naive_one() {
        let p = predict(&session(10.0, 240), &[], &reference());
        assert_eq!((p.fc_start_ts, p.method), (None, "none"));
        // Just charged: no RoR yet.
        let p = predict(&session(10.0, 5), &[(Charge, T0)], &reference());
        assert_eq!((p.fc_start_ts, p.method), (Some(T0 + 480_000), "naive"));
        // A reference without first crack predicts nothing.
        let p = predict(&session(10.0, 240), &[(Charge, T0)], &ramp(&[(Charge, 0)]));
        assert_eq!((p.fc_start_ts, p.drop_ts, p.method), (None, None, "none"));
    }

    #[test]
    fn a_prediction_is_never_in_the_past() {
        // Hotter than the reference's first crack, which has not been heard yet.
        let p = predict(&session(10.0, 540), &[(Charge, T0)], &reference());
        assert_eq!(p.fc_start_ts, Some(T0 + 540_000));
        assert_eq!(p.drop_ts, Some(T0 + 660_000));
    }

    #[test]
    fn a_declining_ror_is_extrapolated_to_a_later_crack_but_never_stalls() {
        let now = Now {
            ts_ms: 0,
            bt: 150.0,
            ror: 10.0,
            trend: -5.0 / 60_000.0, // −5 °C/min per minute
        };
        let steady = by_extrapolation(&Now { trend: 0.0, ..now }, 160.0).unwrap();
        assert!((steady - 60_000).abs() <= 1, "{steady}");
        let slowing = by_extrapolation(&now, 160.0).unwrap();
        assert!(slowing > steady + 30_000, "{slowing}");
        // Far enough for the RoR to reach its floor, half of today's: it goes on at 5 °C/min.
        let far = by_extrapolation(&now, 200.0).unwrap();
        let at_floor = by_extrapolation(
            &Now {
                trend: 0.0,
                ror: 5.0,
                ..now
            },
            200.0,
        )
        .unwrap();
        assert!(far < at_floor, "{far} {at_floor}");
        assert!(far > at_floor - 120_000, "{far} {at_floor}");
        // A rising trend is not carried up: the RoR stays at today's.
        let rising = by_extrapolation(
            &Now {
                trend: -now.trend,
                ..now
            },
            160.0,
        )
        .unwrap();
        assert_eq!(rising, steady);
    }

    #[test]
    fn scoring_cuts_the_roast_at_half_and_three_quarters_of_its_way_to_first_crack() {
        let case = |name: &str, ror: f64| Case {
            name: name.to_owned(),
            readings: session(ror, 700),
            events: vec![(Charge, T0), (FcStart, T0 + (80.0 / ror * 60_000.0) as i64)],
            reference: reference(),
        };
        let mut no_fc = case("no fc", 10.0);
        no_fc.events.truncate(1);
        let score = score_predictions(&[case("same", 10.0), case("faster", 12.0), no_fc]);
        assert_eq!((score.cases, score.skipped.len()), (3, 1));
        for cut in &score.cuts {
            assert_eq!(cut.n(), 2);
            assert!(cut.mae_s().unwrap() < 2.0, "{cut:?}");
            // The naive baseline is 0 s and 80 s off.
            assert!((cut.naive_mae_s().unwrap() - 40.0).abs() < 0.01, "{cut:?}");
        }
        let table = score.table("test");
        assert!(table.contains("50%") && table.contains("75%"), "{table}");
    }
}
