//! The figures roasters compare roasts by: phase lengths, development time ratio, the turning
//! point, RoR at first crack and at the drop, temperatures at each event, the heat taken in (the
//! area under BT) and weight loss.
//!
//! A summary reads a session's events, it does not find them (that is the [`Detector`]'s, or
//! the roaster's): it is defined for any session a store can hold — running, never charged,
//! with readings out of order, repeated, missing a probe or reading NaN — and says `None` for
//! what the data cannot tell.
//!
//! [`Detector`]: crate::Detector

use serde::{Deserialize, Serialize};

use crate::session::{self, GAP_MS, Marks, Sample};
use crate::{EventKind, Reading};

/// The coffee's weight before and after the roast, grams.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Weights {
    pub green_g: f64,
    pub roasted_g: Option<f64>,
}

/// The summary of one session. Times in ms; `t_ms` are since CHARGE.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    /// The CHARGE event's device time; `None` for a session that was never charged, whose
    /// figures relative to CHARGE are all `None` (or empty).
    pub charge_ts: Option<i64>,
    /// CHARGE to DROP, or to the last reading while the roast runs.
    pub total_ms: Option<i64>,
    pub phases: Phases,
    /// Development time ratio: development / total, percent.
    pub dtr: Option<f64>,
    pub tp: Option<TpPoint>,
    /// The RoR a live display showed at first crack and at the drop, °C/min (30 s fit).
    pub ror_at_fc_start: Option<f64>,
    pub ror_at_drop: Option<f64>,
    /// Each event after CHARGE (CHARGE itself included), with the temperatures of the reading
    /// nearest it (within 10 s).
    pub at_events: Vec<EventPoint>,
    /// Area under BT from CHARGE to DROP (or the last reading), °C·min: trapezoids between
    /// readings, none across a gap of more than 10 s. A measure of the heat the roast gave,
    /// comparable between roasts of one roaster.
    pub bt_area: Option<f64>,
    /// (green − roasted) / green, percent, when both were weighed and the figures can be true.
    pub weight_loss_pct: Option<f64>,
    /// Distinct readings (by timestamp), usable or not.
    pub readings: usize,
    /// Gaps of more than 10 s between readings with a BT, over the whole session.
    pub gaps: usize,
    /// Whether the roast has a DROP.
    pub finished: bool,
}

/// Phase lengths, ms.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Phases {
    /// CHARGE to DRY END.
    pub drying_ms: Option<i64>,
    /// DRY END to first crack.
    pub maillard_ms: Option<i64>,
    /// First crack to DROP, or to the last reading while the roast runs.
    pub development_ms: Option<i64>,
}

/// The turning point: when, since CHARGE, and BT then.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct TpPoint {
    pub t_ms: i64,
    pub bt: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct EventPoint {
    pub kind: EventKind,
    pub t_ms: i64,
    pub bt: Option<f64>,
    pub et: Option<f64>,
}

/// Summarizes one session (see [`Summary`] for each figure). Events are read as every analysis
/// reads them: each kind's earliest, those contradicting the roast order left out.
pub fn summarize(
    readings: &[Reading],
    events: &[(EventKind, i64)],
    weights: Option<Weights>,
) -> Summary {
    let samples = session::samples(readings);
    let marks = Marks::new(events);
    let gaps = samples
        .windows(2)
        .filter(|w| w[1].ts_ms - w[0].ts_ms > GAP_MS)
        .count();
    let mut summary = Summary {
        charge_ts: None,
        total_ms: None,
        phases: Phases::default(),
        dtr: None,
        tp: None,
        ror_at_fc_start: None,
        ror_at_drop: None,
        at_events: Vec::new(),
        bt_area: None,
        weight_loss_pct: weights.and_then(weight_loss_pct),
        readings: session::distinct_readings(readings),
        gaps,
        finished: marks.get(EventKind::Drop).is_some(),
    };
    let Some(charge) = marks.get(EventKind::Charge) else {
        return summary;
    };
    summary.charge_ts = Some(charge);
    let at = |kind| marks.get(kind);
    let span = |from: Option<i64>, to: Option<i64>| to?.checked_sub(from?).filter(|d| *d >= 0);
    // Where the roast ends, or has got to.
    let end = at(EventKind::Drop).or_else(|| samples.last().map(|s| s.ts_ms));
    summary.total_ms = span(Some(charge), end);
    summary.phases = Phases {
        drying_ms: span(Some(charge), at(EventKind::DryEnd)),
        maillard_ms: span(at(EventKind::DryEnd), at(EventKind::FcStart)),
        development_ms: span(at(EventKind::FcStart), end),
    };
    summary.dtr = match (summary.phases.development_ms, summary.total_ms) {
        (Some(dev), Some(total)) if total > 0 => Some(dev as f64 / total as f64 * 100.0),
        _ => None,
    };
    let bt_near = |ts| session::nearest(&samples, ts, GAP_MS, |s| Some(s.bt));
    summary.tp = at(EventKind::TurningPoint).and_then(|ts| {
        Some(TpPoint {
            t_ms: ts.saturating_sub(charge),
            bt: bt_near(ts)?,
        })
    });
    let ror = |ts: Option<i64>| session::ror_at(&samples, ts?);
    summary.ror_at_fc_start = ror(at(EventKind::FcStart));
    summary.ror_at_drop = ror(at(EventKind::Drop));
    summary.at_events = marks
        .iter()
        .map(|(kind, ts)| EventPoint {
            kind,
            t_ms: ts.saturating_sub(charge),
            bt: bt_near(ts),
            et: session::nearest(&samples, ts, GAP_MS, |s| s.et),
        })
        .collect();
    summary.bt_area = end.map(|end| bt_area(&samples, charge, end));
    summary
}

/// The trapezoid area under BT between `from` and `to` (device ms), °C·min, skipping gaps.
fn bt_area(samples: &[Sample], from: i64, to: i64) -> f64 {
    let inside: Vec<&Sample> = samples
        .iter()
        .filter(|s| (from..=to).contains(&s.ts_ms))
        .collect();
    inside
        .windows(2)
        .map(|w| (w[0], w[1]))
        .filter(|(a, b)| b.ts_ms - a.ts_ms <= GAP_MS)
        .map(|(a, b)| (a.bt + b.bt) / 2.0 * (b.ts_ms - a.ts_ms) as f64 / 60_000.0)
        .sum()
}

/// Weight loss, when the weights can be a roast's: a roast loses water and mass, never gains.
fn weight_loss_pct(w: Weights) -> Option<f64> {
    let green = Some(w.green_g).filter(|g| g.is_finite() && *g > 0.0)?;
    let roasted = w
        .roasted_g
        .filter(|r| r.is_finite() && *r > 0.0 && *r <= green)?;
    Some((green - roasted) / green * 100.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use EventKind::*;

    const T0: i64 = 1_700_000_000_000;

    /// A session sampled every second from 60 s before CHARGE to `end_s` after it; BT rising
    /// 10 °C/min from 100 °C at CHARGE, ET 40 °C above.
    fn session(end_s: i64) -> Vec<Reading> {
        (-60..=end_s)
            .map(|s| Reading {
                ts_ms: T0 + s * 1000,
                bt: Some(100.0 + s as f64 / 6.0),
                et: Some(140.0 + s as f64 / 6.0),
            })
            .collect()
    }

    fn events(list: &[(EventKind, i64)]) -> Vec<(EventKind, i64)> {
        list.iter().map(|&(k, s)| (k, T0 + s * 1000)).collect()
    }

    const ROAST: [(EventKind, i64); 5] = [
        (Charge, 0),
        (TurningPoint, 60),
        (DryEnd, 240),
        (FcStart, 480),
        (Drop, 600),
    ];

    fn close(a: Option<f64>, b: f64) -> bool {
        a.is_some_and(|a| (a - b).abs() < 1e-6)
    }

    #[test]
    fn phases_and_dtr_of_a_known_roast() {
        let s = summarize(&session(600), &events(&ROAST), None);
        assert_eq!(s.charge_ts, Some(T0));
        assert_eq!(s.total_ms, Some(600_000));
        assert_eq!(
            s.phases,
            Phases {
                drying_ms: Some(240_000),
                maillard_ms: Some(240_000),
                development_ms: Some(120_000),
            }
        );
        assert!(close(s.dtr, 20.0), "{:?}", s.dtr);
        assert_eq!(
            s.tp,
            Some(TpPoint {
                t_ms: 60_000,
                bt: 110.0
            })
        );
        assert!(close(s.ror_at_fc_start, 10.0));
        assert!(close(s.ror_at_drop, 10.0));
        assert!(s.finished);
        assert_eq!(s.readings, 661);
        assert_eq!(s.gaps, 0);
        let fc = s.at_events.iter().find(|e| e.kind == FcStart).unwrap();
        assert_eq!((fc.t_ms, fc.bt, fc.et), (480_000, Some(180.0), Some(220.0)));
        assert_eq!(s.at_events.len(), 5);
    }

    #[test]
    fn bt_area_of_a_constant_slope_is_its_integral_and_skips_gaps() {
        // ∫ (100 + 10 m) dm over 10 minutes = 1000 + 500 °C·min; the readings before CHARGE
        // do not count.
        let s = summarize(&session(600), &events(&ROAST), None);
        assert!(close(s.bt_area, 1500.0), "{:?}", s.bt_area);
        // No readings from 100 s to 130 s: that 31 s stretch is not integrated, and is a gap.
        let gappy: Vec<Reading> = session(600)
            .into_iter()
            .filter(|r| !(T0 + 100_000..T0 + 131_000).contains(&r.ts_ms))
            .collect();
        let s = summarize(&gappy, &events(&ROAST), None);
        // The missing 99→131 s trapezoid: mean BT 118.33 °C over 32/60 min.
        let missing = (100.0 + 99.0 / 6.0 + 100.0 + 131.0 / 6.0) / 2.0 * 32.0 / 60.0;
        assert!(close(s.bt_area, 1500.0 - missing), "{:?}", s.bt_area);
        assert_eq!(s.gaps, 1);
    }

    #[test]
    fn a_running_roast_is_measured_to_its_last_reading() {
        let s = summarize(&session(540), &events(&ROAST[..4]), None);
        assert!(!s.finished);
        assert_eq!(s.total_ms, Some(540_000));
        assert_eq!(s.phases.development_ms, Some(60_000));
        assert!(close(s.dtr, 60.0 / 540.0 * 100.0));
        assert_eq!(s.ror_at_drop, None);
        // Before dry end: nothing after drying is known, and drying has no end yet.
        let s = summarize(&session(200), &events(&ROAST[..2]), None);
        assert_eq!(s.phases, Phases::default());
        assert_eq!(s.dtr, None);
        assert_eq!(s.total_ms, Some(200_000));
    }

    #[test]
    fn a_session_never_charged_has_only_its_counts() {
        let s = summarize(&session(600), &events(&[(FcStart, 480)]), None);
        assert_eq!(s.charge_ts, None);
        assert_eq!(
            (s.total_ms, s.dtr, s.bt_area, s.tp),
            (None, None, None, None)
        );
        assert_eq!(s.phases, Phases::default());
        assert!(s.at_events.is_empty());
        assert_eq!((s.readings, s.finished), (661, false));
        let empty = summarize(&[], &[], None);
        assert_eq!((empty.readings, empty.gaps, empty.charge_ts), (0, 0, None));
    }

    #[test]
    fn readings_out_of_order_repeated_missing_or_nan_change_nothing_but_the_counts() {
        let clean = summarize(&session(600), &events(&ROAST), None);
        let mut messy = session(600);
        messy.reverse();
        messy.extend(session(600).into_iter().step_by(7)); // redeliveries
        for i in (0..messy.len()).step_by(50) {
            let mut bad = messy[i];
            bad.ts_ms += 500; // between two readings: no BT, or a NaN one
            bad.bt = if i % 100 == 0 { None } else { Some(f64::NAN) };
            messy.push(bad);
        }
        let s = summarize(&messy, &events(&ROAST), None);
        assert_eq!(
            Summary {
                readings: clean.readings,
                ..s
            },
            clean
        );
        assert!(s.readings > clean.readings);
    }

    #[test]
    fn weight_loss_when_both_weights_can_be_true() {
        let check = |green_g, roasted_g, expected: Option<f64>| {
            let w = Weights { green_g, roasted_g };
            let got = summarize(&[], &[], Some(w)).weight_loss_pct;
            match expected {
                Some(e) => assert!(close(got, e), "{w:?}: {got:?}"),
                None => assert_eq!(got, None, "{w:?}"),
            }
        };
        check(250.0, Some(215.0), Some(14.0));
        check(250.0, None, None);
        check(0.0, Some(10.0), None);
        check(250.0, Some(260.0), None);
        check(f64::NAN, Some(200.0), None);
        check(250.0, Some(-1.0), None);
    }
}
