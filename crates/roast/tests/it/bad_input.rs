//! Sessions as the network delivers them: gaps, readings out of order or twice, a probe that
//! fails mid-roast or reads garbage, a session that never ends. Each has a defined outcome.

use roast::score::Said;
use roast::{EventKind, Priors, Reading};
use sim_engine::{RoastConfig, simulate};

fn roast() -> (Vec<Reading>, Vec<(EventKind, i64)>) {
    let roast = simulate(&RoastConfig::default()).unwrap();
    let readings = roast
        .samples
        .iter()
        .map(|s| Reading {
            ts_ms: s.t_ms as i64,
            bt: Some(s.bt),
            et: Some(s.et),
        })
        .collect();
    let truth = roast
        .events
        .iter()
        .map(|e| (crate::simulated::kind(e.kind), e.t_ms as i64))
        .collect();
    (readings, truth)
}

fn kinds(said: &[Said]) -> Vec<EventKind> {
    said.iter().map(|s| s.kind).collect()
}

fn at(said: &[Said], kind: EventKind) -> i64 {
    said.iter().find(|s| s.kind == kind).unwrap().ts_ms
}

use EventKind::*;
const ALL: [EventKind; 5] = [Charge, TurningPoint, DryEnd, FcStart, Drop];

#[test]
fn readings_repeated_or_out_of_order_change_nothing() {
    let (readings, _) = roast();
    let clean = crate::detect(Priors::STANDARD, readings.clone());
    let mut messy = Vec::new();
    for (i, r) in readings.iter().enumerate() {
        messy.push(*r);
        if i % 7 == 0 {
            messy.push(*r); // a QoS 1 redelivery
        }
        if i % 11 == 0 && i > 5 {
            messy.push(readings[i - 5]); // a late frame
        }
    }
    let said = crate::detect(Priors::STANDARD, messy);
    assert_eq!(kinds(&said), ALL);
    for kind in ALL {
        assert_eq!(at(&said, kind), at(&clean, kind), "{kind}");
    }
}

#[test]
fn a_gap_or_a_failed_probe_delays_events_but_invents_none() {
    let (readings, truth) = roast();
    let dry = truth.iter().find(|(k, _)| *k == DryEnd).unwrap().1;
    // The probe reads nothing for the minute before dry end and a few readings are lost.
    let broken: Vec<Reading> = readings
        .iter()
        .map(|r| {
            let mut r = *r;
            if (dry - 60_000..dry + 5_000).contains(&r.ts_ms) {
                r.bt = None;
            }
            r
        })
        .filter(|r| r.ts_ms % 13_000 != 0)
        .collect();
    let said = crate::detect(Priors::STANDARD, broken);
    assert_eq!(kinds(&said), ALL, "every event, once, in order");
    // Dry end is said when BT is back, within the tolerance of where it was.
    assert!((at(&said, DryEnd) - dry).abs() <= 20_000);
}

#[test]
fn glitches_are_not_events() {
    let (readings, _) = roast();
    let clean = crate::detect(Priors::STANDARD, readings.clone());
    // A loose probe: now and then a reading of 0 °C or 999 °C.
    let noisy = readings.iter().enumerate().map(|(i, r)| {
        let mut r = *r;
        if i % 97 == 50 {
            r.bt = Some(if i % 2 == 0 { 0.0 } else { 999.0 });
        }
        r
    });
    let said = crate::detect(Priors::STANDARD, noisy);
    assert_eq!(kinds(&said), ALL);
    for kind in ALL {
        assert!(
            (at(&said, kind) - at(&clean, kind)).abs() <= 2_000,
            "{kind}"
        );
    }
}

#[test]
fn a_session_that_never_ends_has_no_drop() {
    let (readings, truth) = roast();
    let fc = truth.iter().find(|(k, _)| *k == FcStart).unwrap().1;
    let mut detector = roast::Detector::new(Priors::STANDARD);
    let mut said = Vec::new();
    for r in readings.iter().filter(|r| r.ts_ms < fc + 60_000) {
        said.extend(detector.push(*r).into_iter().map(|e| e.kind));
    }
    assert_eq!(said, [Charge, TurningPoint, DryEnd, FcStart]);
    assert!(!detector.is_done());
}

#[test]
fn a_session_without_a_roast_has_no_events() {
    // A roaster left idling at 180 °C.
    let idle = (0..600_i64).map(|i| Reading {
        ts_ms: i * 1000,
        bt: Some(180.0 + (i % 3) as f64 * 0.1),
        et: None,
    });
    assert!(crate::detect(Priors::STANDARD, idle).is_empty());
    let no_bt = (0..600_i64).map(|i| Reading {
        ts_ms: i * 1000,
        bt: None,
        et: Some(200.0),
    });
    assert!(crate::detect(Priors::STANDARD, no_bt).is_empty());
}

#[test]
fn a_session_resumed_from_its_stored_events_goes_on_where_it_was() {
    let (readings, _) = roast();
    let clean = crate::detect(Priors::STANDARD, readings.clone());
    // Stopped after each event in turn, picked up again from the events said and a minute of
    // readings before the last: the rest comes out as it would have, and nothing twice.
    for stopped_after in 1..ALL.len() {
        let mut first = roast::Detector::new(Priors::STANDARD);
        let mut said = Vec::new();
        let mut i = 0;
        while said.len() < stopped_after {
            said.extend(first.push(readings[i]));
            i += 1;
        }
        let last = said.last().unwrap().ts_ms;
        // What the store gives back: a minute before the last event, and on.
        let stored: Vec<Reading> = readings
            .iter()
            .filter(|r| r.ts_ms >= last - 60_000)
            .copied()
            .collect();
        let mut resumed = roast::Detector::resume(Priors::STANDARD, &said, &stored);
        let mut rest = Vec::new();
        for r in stored.iter().filter(|r| r.ts_ms > last) {
            rest.extend(resumed.push(*r).into_iter().map(|e| (e.kind, e.ts_ms)));
        }
        rest.extend(resumed.finish().into_iter().map(|e| (e.kind, e.ts_ms)));
        let want: Vec<(EventKind, i64)> = clean[stopped_after..]
            .iter()
            .map(|s| (s.kind, s.ts_ms))
            .collect();
        assert_eq!(rest, want, "stopped after {stopped_after} events");
    }
}

/// A roast replayed ten times faster than it ran (the load harness stamps each reading when it
/// publishes it): the break window then still holds the readings before CHARGE when BT turns,
/// and the fall of CHARGE itself was once taken for a DROP a quarter of a second after it.
#[test]
fn a_roast_replayed_fast_has_its_drop_at_its_drop() {
    let (readings, truth) = roast();
    let fast: Vec<Reading> = readings
        .iter()
        .map(|r| Reading {
            ts_ms: r.ts_ms / 10,
            ..*r
        })
        .collect();
    let said = crate::detect(Priors::STANDARD, fast);
    let drop = truth.iter().find(|(k, _)| *k == Drop).unwrap().1 / 10;
    assert!(
        (at(&said, Drop) - drop).abs() <= 500,
        "DROP at {} ms, the roast's at {drop} ms",
        at(&said, Drop)
    );
    assert!(at(&said, Drop) > at(&said, TurningPoint));
}
