//! Corrections: when a running roast has drifted from its reference and is not coming back by
//! itself, the gas change that would bring it back. A suggestion for a person to approve —
//! analytics proposes it to the command service, which checks it against the device's safety
//! limits and waits for an approver; nothing here acts.
//!
//! The rule, aligned at CHARGE like the variance: between the turning point and first crack —
//! the stretch where the burner is the roaster's lever; before the TP the beans' own heat-up
//! dominates, after first crack a gas change lands too late to matter — BT has stood more than
//! `bt_tolerance_c` on the same side of the reference's BT at every reading of the last
//! `hold_ms`, and its RoR is not already closing the gap faster than the reference's
//! (`ror_margin` °C/min). Then gas moves one `gas_step` towards the reference, within
//! `gas_range`. The hold keeps a probe's noise or a single lagging reading from proposing
//! anything; the RoR test keeps a roast that is already recovering from being pushed past it.

use crate::session::{self, Marks};
use crate::{EventKind, Profile, ROR_WINDOW_MS, Reading};

/// When and by how much to suggest a correction.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CorrectionRule {
    /// BT further than this from the reference's, °C, for the whole hold.
    pub bt_tolerance_c: f64,
    /// How long BT must have stood off the reference.
    pub hold_ms: i64,
    /// A roast whose RoR beats the reference's by this much (°C/min) in the direction of the
    /// reference is recovering: no correction.
    pub ror_margin: f64,
    /// The change proposed, in the gas channel's unit (% of the burner's range).
    pub gas_step: f64,
    /// The gas values a suggestion may name.
    pub gas_range: (f64, f64),
}

impl Default for CorrectionRule {
    fn default() -> Self {
        CorrectionRule {
            bt_tolerance_c: 5.0,
            hold_ms: 30_000,
            ror_margin: 1.0,
            gas_step: 5.0,
            gas_range: (0.0, 100.0),
        }
    }
}

/// A suggested gas change and the evidence for it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Correction {
    pub gas_from: f64,
    pub gas_to: f64,
    /// The session's BT minus the reference's at the newest reading, °C.
    pub bt_deviation_c: f64,
    pub ror: f64,
    pub reference_ror: f64,
    /// The newest reading's time since CHARGE.
    pub t_ms: i64,
    /// Why, in words an approver reads.
    pub reason: String,
}

/// The correction a running roast needs now, if any (see the module's documentation).
/// `readings` are the session's so far, in time order as a live session keeps them (only the
/// newest `hold_ms` plus a RoR window are read); `gas` is the burner's current setting.
pub fn suggest(
    readings: &[Reading],
    events: &[(EventKind, i64)],
    reference: &Profile,
    gas: f64,
    rule: &CorrectionRule,
) -> Option<Correction> {
    let marks = Marks::new(events);
    let charge = marks.get(EventKind::Charge)?;
    let tp = marks.get(EventKind::TurningPoint)?;
    if marks.get(EventKind::FcStart).is_some() || marks.get(EventKind::Drop).is_some() {
        return None;
    }
    // The reference's own turning-point-to-crack stretch bounds where it can be compared.
    let reference_fc = reference.event(EventKind::FcStart)?;
    let newest = readings.last()?.ts_ms;
    let from = readings.partition_point(|r| r.ts_ms < newest - rule.hold_ms - ROR_WINDOW_MS);
    let samples = session::samples(&readings[from..]);
    let last = *samples.last()?;
    let window_start = last.ts_ms - rule.hold_ms;
    if window_start < tp || last.ts_ms - charge >= reference_fc || !gas.is_finite() {
        return None;
    }
    let held = samples.partition_point(|s| s.ts_ms < window_start);
    let window = &samples[held..];
    // The hold must be covered: its first reading near its start, no gap inside it.
    let first = window.first()?;
    if first.ts_ms - window_start > session::GAP_MS
        || window
            .windows(2)
            .any(|w| w[1].ts_ms - w[0].ts_ms > session::GAP_MS)
    {
        return None;
    }
    let mut side = 0.0_f64;
    for s in window {
        let deviation = s.bt - reference.bt_at(s.ts_ms - charge)?;
        if deviation.abs() <= rule.bt_tolerance_c {
            return None;
        }
        if side != 0.0 && deviation.signum() != side {
            return None;
        }
        side = deviation.signum();
    }
    let t_ms = last.ts_ms - charge;
    let bt_deviation_c = last.bt - reference.bt_at(t_ms)?;
    let ror = session::ror_at(&samples, last.ts_ms)?;
    let reference_ror = reference.ror_at(t_ms)?;
    // Too cold (side < 0) recovers with a RoR above the reference's; too hot with one below.
    if (ror - reference_ror) * -side > rule.ror_margin {
        return None;
    }
    let (low, high) = rule.gas_range;
    let gas_to = (gas - side * rule.gas_step).clamp(low, high);
    if (gas_to - gas).abs() < f64::EPSILON {
        return None;
    }
    let reason = format!(
        "BT {:.1} °C {} the reference for {} s, {} after CHARGE; RoR {:.1} against the \
         reference's {:.1} °C/min: gas {} → {}",
        bt_deviation_c.abs(),
        if side < 0.0 { "below" } else { "above" },
        rule.hold_ms / 1000,
        clock(t_ms),
        ror,
        reference_ror,
        trim(gas),
        trim(gas_to),
    );
    Some(Correction {
        gas_from: gas,
        gas_to,
        bt_deviation_c,
        ror,
        reference_ror,
        t_ms,
        reason,
    })
}

/// `m:ss`.
fn clock(ms: i64) -> String {
    let s = ms.max(0) / 1000;
    format!("{}:{:02}", s / 60, s % 60)
}

/// A setting as a person writes it: `60`, `62.5`.
fn trim(v: f64) -> String {
    let s = format!("{v:.2}");
    s.trim_end_matches('0').trim_end_matches('.').to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ProfileEvent, ProfilePoint};

    /// A reference rising from 100 °C at its TP (60 s) by 10 °C a minute, first crack at 600 s.
    fn reference() -> Profile {
        let points = (0..=720)
            .map(|s| ProfilePoint {
                t_ms: s * 1000,
                bt: if s < 60 {
                    200.0 - s as f64 * 100.0 / 60.0
                } else {
                    100.0 + (s - 60) as f64 / 6.0
                },
                et: None,
            })
            .collect();
        Profile {
            points,
            events: vec![
                ProfileEvent {
                    kind: EventKind::Charge,
                    t_ms: 0,
                },
                ProfileEvent {
                    kind: EventKind::TurningPoint,
                    t_ms: 60_000,
                },
                ProfileEvent {
                    kind: EventKind::FcStart,
                    t_ms: 600_000,
                },
            ],
        }
    }

    const CHARGE: i64 = 1_700_000_000_000;

    /// A session charged at `CHARGE` that follows the reference, offset by `offset(t)` °C.
    fn session(until_s: i64, offset: impl Fn(i64) -> f64) -> Vec<Reading> {
        let reference = reference();
        (0..=until_s)
            .map(|s| Reading {
                ts_ms: CHARGE + s * 1000,
                bt: Some(reference.bt_at(s * 1000).unwrap() + offset(s)),
                et: None,
            })
            .collect()
    }

    fn events() -> Vec<(EventKind, i64)> {
        vec![
            (EventKind::Charge, CHARGE),
            (EventKind::TurningPoint, CHARGE + 60_000),
        ]
    }

    #[test]
    fn a_roast_that_runs_cold_gets_more_gas_and_one_that_runs_hot_less() {
        let rule = CorrectionRule::default();
        let cold = session(300, |s| if s > 200 { -8.0 } else { 0.0 });
        let c = suggest(&cold, &events(), &reference(), 60.0, &rule).unwrap();
        assert_eq!((c.gas_from, c.gas_to), (60.0, 65.0));
        assert!((c.bt_deviation_c + 8.0).abs() < 1e-9, "{c:?}");
        assert_eq!(c.t_ms, 300_000);
        assert!(
            c.reason
                .starts_with("BT 8.0 °C below the reference for 30 s, 5:00 after CHARGE"),
            "{}",
            c.reason
        );
        assert!(c.reason.ends_with("gas 60 → 65"), "{}", c.reason);

        let hot = session(300, |s| if s > 200 { 8.0 } else { 0.0 });
        let c = suggest(&hot, &events(), &reference(), 60.0, &rule).unwrap();
        assert_eq!(c.gas_to, 55.0);
        assert!(c.reason.contains("above"), "{}", c.reason);
        // At the end of the burner's range there is nothing to suggest.
        assert_eq!(suggest(&hot, &events(), &reference(), 0.0, &rule), None);
        let c = suggest(&cold, &events(), &reference(), 98.0, &rule).unwrap();
        assert_eq!(c.gas_to, 100.0);
    }

    #[test]
    fn nothing_is_suggested_within_tolerance_or_before_the_hold_is_over() {
        let rule = CorrectionRule::default();
        let close = session(300, |_| -4.0);
        assert_eq!(suggest(&close, &events(), &reference(), 60.0, &rule), None);
        // Off by 8 °C for 20 s only.
        let brief = session(300, |s| if s > 280 { -8.0 } else { 0.0 });
        assert_eq!(suggest(&brief, &events(), &reference(), 60.0, &rule), None);
        // Noise that crosses the band is no drift.
        let noisy = session(300, |s| if s % 2 == 0 { -8.0 } else { 8.0 });
        assert_eq!(suggest(&noisy, &events(), &reference(), 60.0, &rule), None);
    }

    #[test]
    fn a_roast_already_recovering_is_left_alone() {
        let rule = CorrectionRule::default();
        // 10–13 °C low over the hold, closing by 0.1 °C/s (6 °C/min faster than the reference).
        let recovering = session(300, |s| -20.0 + (s - 200).max(0) as f64 * 0.1);
        assert_eq!(
            suggest(&recovering, &events(), &reference(), 60.0, &rule),
            None
        );
        // It is its RoR that spares it.
        let lenient = CorrectionRule {
            ror_margin: 10.0,
            ..rule
        };
        let c = suggest(&recovering, &events(), &reference(), 60.0, &lenient).unwrap();
        assert!((c.ror - c.reference_ror - 6.0).abs() < 0.5, "{c:?}");
    }

    #[test]
    fn only_between_the_turning_point_and_first_crack() {
        let rule = CorrectionRule::default();
        let cold = session(300, |_| -8.0);
        // No TP yet.
        let charge_only = vec![(EventKind::Charge, CHARGE)];
        assert_eq!(
            suggest(&cold, &charge_only, &reference(), 60.0, &rule),
            None
        );
        // The hold reaching back before the TP.
        let early = session(80, |_| -8.0);
        assert_eq!(suggest(&early, &events(), &reference(), 60.0, &rule), None);
        // First crack heard.
        let mut cracked = events();
        cracked.push((EventKind::FcStart, CHARGE + 290_000));
        assert_eq!(suggest(&cold, &cracked, &reference(), 60.0, &rule), None);
        // Past the reference's own first crack.
        let late = session(650, |_| -8.0);
        assert_eq!(suggest(&late, &events(), &reference(), 60.0, &rule), None);
    }

    #[test]
    fn a_gap_in_the_hold_suggests_nothing() {
        let rule = CorrectionRule::default();
        let mut cold = session(300, |_| -8.0);
        cold.retain(|r| !(CHARGE + 275_000..CHARGE + 290_000).contains(&r.ts_ms));
        assert_eq!(suggest(&cold, &events(), &reference(), 60.0, &rule), None);
        let nan_gas = session(300, |_| -8.0);
        assert_eq!(
            suggest(&nan_gas, &events(), &reference(), f64::NAN, &rule),
            None
        );
    }
}
