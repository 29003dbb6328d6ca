//! A stored or live session as the analyses read it: its readings cleaned into one BT series
//! and its events reduced to one consistent set of marks. Shared, so that a profile built from a
//! session, the session's summary, its variance and its predictions all see the same roast.

use crate::{EventKind, Reading, Ror};

/// The temperatures a probe can really read, °C: anything outside is a probe fault (a loose
/// thermocouple reads 0 or 999) or a unit mistake, and is no reading.
pub(crate) const TEMP_RANGE_C: std::ops::RangeInclusive<f64> = -50.0..=500.0;

/// A gap in the readings longer than this is a gap: nothing is interpolated or integrated
/// across it (a device offline, a probe that read nothing).
pub(crate) const GAP_MS: i64 = 10_000;

/// One usable reading: a BT, and the ET of the same reading where it had one.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Sample {
    pub(crate) ts_ms: i64,
    pub(crate) bt: f64,
    pub(crate) et: Option<f64>,
}

/// A temperature if it is one.
pub(crate) fn temperature(value: Option<f64>) -> Option<f64> {
    value.filter(|v| v.is_finite() && TEMP_RANGE_C.contains(v))
}

/// The readings with a BT, in time order, one per timestamp (the first given, as the detector
/// keeps the first of a redelivered reading).
pub(crate) fn samples(readings: &[Reading]) -> Vec<Sample> {
    let mut out: Vec<Sample> = readings
        .iter()
        .filter_map(|r| {
            Some(Sample {
                ts_ms: r.ts_ms,
                bt: temperature(r.bt)?,
                et: temperature(r.et),
            })
        })
        .collect();
    // Stable: of equal timestamps the first given stays first, and is the one kept.
    out.sort_by_key(|s| s.ts_ms);
    out.dedup_by_key(|s| s.ts_ms);
    out
}

/// The number of distinct timestamps among the readings, usable or not.
pub(crate) fn distinct_readings(readings: &[Reading]) -> usize {
    let mut ts: Vec<i64> = readings.iter().map(|r| r.ts_ms).collect();
    ts.sort_unstable();
    ts.dedup();
    ts.len()
}

/// A session's events, one per kind, in an order a roast can have.
///
/// Events come from a detector, a roaster's marks or a user, and may repeat (a redelivery, a
/// resumed detector) or contradict each other. Each kind's earliest event is taken; then they
/// are kept in the order of how surely a roast shows them — CHARGE and DROP (BT breaks), the
/// TP (BT's minimum), first crack, DRY END, FC end (marked by ear and eye, or not at all) — each
/// only if it does not contradict the roast order of those kept before it (a DRY END before the
/// TP, an FC end after the DROP). Every analysis then reads the phases in the same order, and
/// never a negative one, and a doubtful mark cannot push out a sure one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Marks([Option<i64>; 6]);

impl Marks {
    pub(crate) fn new(events: &[(EventKind, i64)]) -> Self {
        use EventKind::*;
        let mut marks = Marks::default();
        for kind in [Charge, Drop, TurningPoint, FcStart, DryEnd, FcEnd] {
            let earliest = events
                .iter()
                .filter(|(k, _)| *k == kind)
                .map(|&(_, ts)| ts)
                .min();
            let Some(ts) = earliest else { continue };
            let fits = marks.iter().all(|(other, at)| match other.cmp(&kind) {
                std::cmp::Ordering::Less => at <= ts,
                std::cmp::Ordering::Greater => at >= ts,
                std::cmp::Ordering::Equal => true,
            });
            if fits {
                marks.0[kind as usize] = Some(ts);
            }
        }
        marks
    }

    pub(crate) fn get(&self, kind: EventKind) -> Option<i64> {
        self.0[kind as usize]
    }

    /// The events kept, in order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (EventKind, i64)> + '_ {
        EventKind::ALL
            .into_iter()
            .zip(self.0)
            .filter_map(|(kind, ts)| Some((kind, ts?)))
    }

    /// Only the events up to `until_ms`.
    pub(crate) fn until(&self, until_ms: i64) -> Marks {
        Marks(self.0.map(|ts| ts.filter(|&t| t <= until_ms)))
    }
}

/// The RoR a live [`Ror`] showed at the newest sample at or before `ts_ms`, °C/min: the fit over
/// the samples of the 30 s up to it. `None` if that sample is more than a gap before `ts_ms`
/// (the RoR then was not known).
pub(crate) fn ror_at(samples: &[Sample], ts_ms: i64) -> Option<f64> {
    let end = samples.partition_point(|s| s.ts_ms <= ts_ms);
    let newest = samples[..end].last()?.ts_ms;
    if ts_ms - newest > GAP_MS {
        return None;
    }
    let start = samples[..end].partition_point(|s| s.ts_ms < newest - crate::ROR_WINDOW_MS);
    let mut ror = Ror::new();
    for s in &samples[start..end] {
        ror.push(s.ts_ms, s.bt);
    }
    ror.value()
}

/// The sample nearest `ts_ms` whose reading is `within_ms` of it, and what `pick` reads of it.
pub(crate) fn nearest<T>(
    samples: &[Sample],
    ts_ms: i64,
    within_ms: i64,
    pick: impl Fn(&Sample) -> Option<T>,
) -> Option<T> {
    samples
        .iter()
        .filter(|s| (s.ts_ms - ts_ms).abs() <= within_ms)
        .filter_map(|s| Some(((s.ts_ms - ts_ms).abs(), pick(s)?)))
        .min_by_key(|&(d, _)| d)
        .map(|(_, v)| v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use EventKind::*;

    fn r(ts_ms: i64, bt: Option<f64>) -> Reading {
        Reading {
            ts_ms,
            bt,
            et: None,
        }
    }

    #[test]
    fn samples_are_sorted_deduplicated_and_only_real_temperatures() {
        let readings = [
            r(3_000, Some(103.0)),
            r(1_000, Some(101.0)),
            r(2_000, Some(f64::NAN)),
            r(1_000, Some(999.0)),
            r(4_000, None),
            r(5_000, Some(999.0)),
            r(6_000, Some(106.0)),
        ];
        let got: Vec<(i64, f64)> = samples(&readings).iter().map(|s| (s.ts_ms, s.bt)).collect();
        assert_eq!(got, [(1_000, 101.0), (3_000, 103.0), (6_000, 106.0)]);
        assert_eq!(distinct_readings(&readings), 6);
    }

    #[test]
    fn marks_keep_each_kinds_earliest_event_in_roast_order() {
        let marks = Marks::new(&[
            (Charge, 10),
            (TurningPoint, 30),
            (Charge, 5),
            (DryEnd, 20), // before the TP: left out
            (FcStart, 40),
            (Drop, 90),
            (Drop, 80),
            (FcEnd, 85), // after the DROP: left out
        ]);
        let kept: Vec<(EventKind, i64)> = marks.iter().collect();
        assert_eq!(
            kept,
            [(Charge, 5), (TurningPoint, 30), (FcStart, 40), (Drop, 80)]
        );
        assert_eq!(marks.until(60).get(Drop), None);
    }
}
