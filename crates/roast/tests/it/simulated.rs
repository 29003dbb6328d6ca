//! Seeded simulated roasts over every built-in profile, batch size and two sampling rates,
//! half of them logged from charge and half from 20–60 s before it (the preheated, empty drum a
//! real logger records first: CHARGE is then a break in a flat BT, as in the real roasts),
//! against the engine's own events.

use roast::score::Score;
use roast::{EventKind, Priors, Reading};
use sim_engine::{RoastConfig, builtin_profiles, simulate};

pub(crate) fn kind(k: sim_engine::EventKind) -> EventKind {
    k.into()
}

/// How long a roast is logged before its charge: none for an even seed, else 20–60 s in whole
/// seconds, from the seed (as `loadtest::score` picks them for the same table over MQTT).
fn pre_charge_ms(seed: u64) -> u64 {
    if seed.is_multiple_of(2) {
        0
    } else {
        20_000 + (seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 33) % 41 * 1000
    }
}

#[test]
fn simulated_roasts_events_are_found_where_the_engine_put_them() {
    // A device's clock: epoch ms of the start of logging (the charge, without a pre-charge
    // segment).
    let logging_from = 1_795_448_000_000_i64;
    let mut score = Score::default();
    // The same for the roasts logged from before charge alone.
    let mut pre_charged = Score::default();
    let mut seed = 0;
    for profile in builtin_profiles() {
        for batch_g in [1_500.0, 3_000.0, 4_000.0, 5_000.0, 6_000.0] {
            for interval_ms in [1_000, 2_000] {
                for _ in 0..7 {
                    seed += 1;
                    let config = RoastConfig {
                        profile: profile.clone(),
                        seed,
                        batch_g,
                        sample_interval_ms: interval_ms,
                        pre_charge_ms: pre_charge_ms(seed),
                        ..RoastConfig::default()
                    };
                    let roast = simulate(&config).unwrap();
                    // Samples and events are on the engine's one clock, since logging started.
                    let readings = roast.samples.iter().map(|s| Reading {
                        ts_ms: logging_from + s.t_ms as i64,
                        bt: Some(s.bt),
                        et: Some(s.et),
                    });
                    let said = crate::detect(Priors::STANDARD, readings);
                    let truth: Vec<(EventKind, i64)> = roast
                        .events
                        .iter()
                        .map(|e| (kind(e.kind), logging_from + e.t_ms as i64))
                        .collect();
                    let pre = match config.pre_charge_ms {
                        0 => String::new(),
                        ms => format!("-pre{}s", ms / 1000),
                    };
                    let name = format!(
                        "{}-{batch_g}g-{interval_ms}ms-seed{seed}{pre}",
                        profile.name
                    );
                    score.add(&name, &truth, &said);
                    if config.pre_charge_ms > 0 {
                        pre_charged.add(&name, &truth, &said);
                    }
                }
            }
        }
    }
    println!("{}", score.table("simulated roasts (in process)"));
    for (roast, what) in score.misses.iter().take(20) {
        println!("  {roast}: {what}");
    }
    println!(
        "{}",
        pre_charged.table("of them, logged 20-60 s before charge")
    );
    assert!(score.roasts >= 200);
    assert!(pre_charged.roasts >= 100);
    for kind in [
        EventKind::Charge,
        EventKind::TurningPoint,
        EventKind::DryEnd,
        EventKind::FcStart,
        EventKind::Drop,
    ] {
        assert!(score.tally(kind).meets(kind), "{kind}: {:?}", score.misses);
    }
}
