//! Roasts look like real ones: every built-in profile, over the batch sizes the roaster is run
//! with (60–100 % of nominal) and several seeds, lands in the ranges of a typical drum roast.

use std::ops::RangeInclusive;

use sim_engine::{EventKind, NOMINAL_BATCH_G, Roast, builtin_profiles, simulate};

use crate::{config, event, ror_at};

const MIN: u64 = 60_000;
const SEEDS: std::ops::Range<u64> = 0..8;
const BATCH_SHARES: [f64; 5] = [0.6, 0.7, 0.8, 0.9, 1.0];

#[test]
fn every_builtin_profile_roasts_like_a_real_roast() {
    let mut checked = 0;
    for profile in builtin_profiles() {
        for share in BATCH_SHARES {
            for seed in SEEDS {
                let batch_g = share * NOMINAL_BATCH_G;
                let roast = simulate(&config(&profile.name, seed, batch_g)).unwrap();
                check(&roast, &format!("{} {batch_g} g seed {seed}", profile.name));
                checked += 1;
            }
        }
    }
    assert_eq!(checked, 3 * BATCH_SHARES.len() * SEEDS.count());
}

/// The ranges of a typical roast on a drum roaster.
fn check(roast: &Roast, case: &str) {
    let kinds: Vec<EventKind> = roast.events.iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        [
            EventKind::Charge,
            EventKind::TurningPoint,
            EventKind::DryEnd,
            EventKind::FirstCrack,
            EventKind::Drop
        ],
        "{case}"
    );
    assert!(
        roast.events.windows(2).all(|w| w[0].t_ms < w[1].t_ms),
        "{case}: {:?}",
        roast.events
    );

    let within = |what: &str, value: f64, range: RangeInclusive<f64>| {
        assert!(
            range.contains(&value),
            "{case}: {what} {value} not in {range:?}"
        );
    };
    let minutes = |t_ms: u64| t_ms as f64 / MIN as f64;

    let charge = event(roast, EventKind::Charge);
    within("charge ET °C", charge.et, 180.0..=220.0);
    let tp = event(roast, EventKind::TurningPoint);
    within("turning point BT °C", tp.bt, 80.0..=100.0);
    within("turning point min", minutes(tp.t_ms), 1.0..=1.75);
    let dry = event(roast, EventKind::DryEnd);
    within("dry end BT °C", dry.bt, 150.0..=160.0);
    within("dry end min", minutes(dry.t_ms), 4.0..=6.5);
    let fc = event(roast, EventKind::FirstCrack);
    within("first crack BT °C", fc.bt, 195.0..=200.0);
    within("first crack min", minutes(fc.t_ms), 8.0..=11.0);
    let drop = event(roast, EventKind::Drop);
    within("drop BT °C", drop.bt, 205.0..=225.0);
    within("drop min", minutes(drop.t_ms), 10.0..=14.0);
    assert_eq!(roast.samples.last().unwrap().t_ms, drop.t_ms, "{case}");

    // RoR declines through the roast after the turning point: lower at first crack than two
    // minutes after the turning point, ...
    let early = ror_at(roast, tp.t_ms + 2 * MIN);
    let at_fc = ror_at(roast, fc.t_ms);
    assert!(
        at_fc < early,
        "{case}: RoR {at_fc} at first crack, {early} after the turning point"
    );
    within(
        "RoR at drop °C/min",
        roast.samples.last().unwrap().ror,
        2.0..=9.0,
    );
    // ... and, from its peak after the turning point, it neither flicks up nor crashes.
    let after_tp: Vec<(u64, f64)> = roast
        .samples
        .iter()
        .filter(|s| s.t_ms > tp.t_ms)
        .map(|s| (s.t_ms, s.ror))
        .collect();
    let peak = after_tp
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.1.total_cmp(&b.1.1))
        .map(|(i, _)| i)
        .unwrap();
    within("RoR peak °C/min", after_tp[peak].1, 15.0..=30.0);
    within("RoR peak min", minutes(after_tp[peak].0), 1.5..=3.5);
    let mut lowest = f64::INFINITY;
    for (i, &(t_ms, ror)) in after_tp.iter().enumerate().skip(peak) {
        assert!(
            ror <= lowest + 0.5,
            "{case}: RoR flicks up to {ror} at {t_ms} ms after falling to {lowest}"
        );
        lowest = lowest.min(ror);
        if let Some(&(_, later)) = after_tp.get(i + 30) {
            assert!(
                ror - later <= 4.0,
                "{case}: RoR crashes from {ror} to {later} in 30 s at {t_ms} ms"
            );
        }
    }
}
