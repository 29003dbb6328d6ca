//! Scoring detected events against the truth (a roaster's marks, a simulation's own events):
//! one table for the in-process tests and for `cargo xtask score-events`, which replays roasts
//! through a running platform.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::EventKind;

/// How far from the truth an event may be and still be found, ms.
pub fn tolerance_ms(kind: EventKind) -> i64 {
    match kind {
        EventKind::Charge | EventKind::Drop => 2_000,
        EventKind::TurningPoint => 5_000,
        EventKind::DryEnd => 20_000,
        EventKind::FcStart | EventKind::FcEnd => 30_000,
    }
}

/// How long after the event it may be said, ms.
pub fn max_delay_ms(kind: EventKind) -> i64 {
    match kind {
        EventKind::Charge | EventKind::Drop => 5_000,
        EventKind::TurningPoint => 20_000,
        EventKind::DryEnd | EventKind::FcStart | EventKind::FcEnd => 30_000,
    }
}

/// An event as the platform said it: when it belongs (`ts_ms`) and when it was said.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Said {
    pub kind: EventKind,
    pub ts_ms: i64,
    pub said_ms: i64,
}

/// The tally of one kind of event.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Tally {
    /// Detected where the truth has one (within tolerance or not).
    pub found: u32,
    /// Of those, within the tolerance.
    pub within: u32,
    /// In the truth, not detected.
    pub missed: u32,
    /// Detected, not in the truth.
    pub false_: u32,
    /// |detected − truth| of each found event, ms.
    pub errors_ms: Vec<i64>,
    /// said − ts of each detected event, ms.
    pub delays_ms: Vec<i64>,
}

impl Tally {
    fn mean(values: &[i64]) -> Option<f64> {
        (!values.is_empty()).then(|| values.iter().sum::<i64>() as f64 / values.len() as f64)
    }

    pub fn mean_error_s(&self) -> Option<f64> {
        Tally::mean(&self.errors_ms).map(|v| v / 1000.0)
    }

    pub fn max_error_s(&self) -> Option<f64> {
        self.errors_ms.iter().max().map(|&v| v as f64 / 1000.0)
    }

    pub fn mean_delay_s(&self) -> Option<f64> {
        Tally::mean(&self.delays_ms).map(|v| v / 1000.0)
    }

    pub fn max_delay_s(&self) -> Option<f64> {
        self.delays_ms.iter().max().map(|&v| v as f64 / 1000.0)
    }

    /// Whether every event was found within its tolerance and said in time, none invented.
    pub fn meets(&self, kind: EventKind) -> bool {
        self.missed == 0
            && self.false_ == 0
            && self.within == self.found
            && self.delays_ms.iter().all(|&d| d <= max_delay_ms(kind))
    }
}

/// Tallies over many roasts.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Score {
    pub roasts: u32,
    pub kinds: BTreeMap<EventKind, Tally>,
    /// Roasts with an event outside its tolerance, missed or invented: (roast, what).
    pub misses: Vec<(String, String)>,
}

impl Score {
    /// Adds one roast: the truth (kind → device time, ms) and what was said.
    pub fn add(&mut self, roast: &str, truth: &[(EventKind, i64)], said: &[Said]) {
        self.roasts += 1;
        for kind in EventKind::ALL {
            let expected = truth.iter().find(|(k, _)| *k == kind).map(|&(_, t)| t);
            let got = said.iter().find(|s| s.kind == kind);
            if expected.is_none() && got.is_none() {
                continue;
            }
            let tally = self.kinds.entry(kind).or_default();
            if let Some(s) = got {
                tally.delays_ms.push(s.said_ms - s.ts_ms);
            }
            match (expected, got) {
                (Some(t), Some(s)) => {
                    let error = (s.ts_ms - t).abs();
                    tally.found += 1;
                    tally.errors_ms.push(error);
                    if error <= tolerance_ms(kind) {
                        tally.within += 1;
                    } else {
                        self.misses.push((
                            roast.to_owned(),
                            format!("{kind} off by {:.1} s", error as f64 / 1000.0),
                        ));
                    }
                }
                (Some(_), None) => {
                    tally.missed += 1;
                    self.misses
                        .push((roast.to_owned(), format!("{kind} missed")));
                }
                (None, Some(_)) => {
                    tally.false_ += 1;
                    self.misses
                        .push((roast.to_owned(), format!("{kind} invented")));
                }
                (None, None) => {}
            }
        }
    }

    pub fn tally(&self, kind: EventKind) -> Tally {
        self.kinds.get(&kind).cloned().unwrap_or_default()
    }

    /// The table: per event, found (within tolerance / all), missed, false, mean and max
    /// absolute error, and detection delay.
    pub fn table(&self, title: &str) -> String {
        let mut out = String::new();
        let s = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.1}"));
        let _ = writeln!(out, "{title}: {} roasts", self.roasts);
        let _ = writeln!(
            out,
            "{:<14} {:>7} {:>9} {:>6} {:>6} {:>9} {:>9} {:>9} {:>9}  target",
            "event",
            "found",
            "within",
            "missed",
            "false",
            "mean err",
            "max err",
            "delay",
            "max dly"
        );
        for (kind, t) in &self.kinds {
            let _ = writeln!(
                out,
                "{:<14} {:>7} {:>9} {:>6} {:>6} {:>8}s {:>8}s {:>8}s {:>8}s  ±{}s, ≤{}s{}",
                kind.as_str(),
                t.found,
                format!("{}/{}", t.within, t.found),
                t.missed,
                t.false_,
                s(t.mean_error_s()),
                s(t.max_error_s()),
                s(t.mean_delay_s()),
                s(t.max_delay_s()),
                tolerance_ms(*kind) / 1000,
                max_delay_ms(*kind) / 1000,
                if t.meets(*kind) { "  ok" } else { "  MISSED" }
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn found_missed_invented_and_off_are_told_apart() {
        use EventKind::*;
        let mut score = Score::default();
        let truth = [(Charge, 0), (TurningPoint, 70_000), (DryEnd, 300_000)];
        let said = [
            Said {
                kind: Charge,
                ts_ms: 1_000,
                said_ms: 3_000,
            },
            Said {
                kind: TurningPoint,
                ts_ms: 80_000,
                said_ms: 90_000,
            },
            Said {
                kind: Drop,
                ts_ms: 600_000,
                said_ms: 600_000,
            },
        ];
        score.add("r1", &truth, &said);
        let charge = score.tally(Charge);
        assert_eq!(
            (charge.found, charge.within, charge.errors_ms[0]),
            (1, 1, 1_000)
        );
        assert!(charge.meets(Charge));
        let tp = score.tally(TurningPoint);
        assert_eq!(
            (tp.found, tp.within),
            (1, 0),
            "10 s off is outside TP's 5 s"
        );
        assert_eq!(score.tally(DryEnd).missed, 1);
        assert_eq!(score.tally(Drop).false_, 1);
        assert_eq!(score.misses.len(), 3);
        let table = score.table("test");
        assert!(table.contains("charge"), "{table}");
        assert!(table.contains("MISSED"), "{table}");
    }
}
