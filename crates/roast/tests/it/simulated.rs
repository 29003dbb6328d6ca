//! Seeded simulated roasts over every built-in profile, batch size and two sampling rates,
//! against the engine's own events.

use roast::score::Score;
use roast::{EventKind, Priors, Reading};
use sim_engine::{RoastConfig, builtin_profiles, simulate};

pub(crate) fn kind(k: sim_engine::EventKind) -> EventKind {
    k.into()
}

#[test]
fn simulated_roasts_events_are_found_where_the_engine_put_them() {
    // A device's clock: epoch ms of the charge.
    let charged_at = 1_795_448_000_000_i64;
    let mut score = Score::default();
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
                        ..RoastConfig::default()
                    };
                    let roast = simulate(&config).unwrap();
                    let readings = roast.samples.iter().map(|s| Reading {
                        ts_ms: charged_at + s.t_ms as i64,
                        bt: Some(s.bt),
                        et: Some(s.et),
                    });
                    let said = crate::detect(Priors::STANDARD, readings);
                    let truth: Vec<(EventKind, i64)> = roast
                        .events
                        .iter()
                        .map(|e| (kind(e.kind), charged_at + e.t_ms as i64))
                        .collect();
                    let name = format!("{}-{batch_g}g-{interval_ms}ms-seed{seed}", profile.name);
                    score.add(&name, &truth, &said);
                }
            }
        }
    }
    println!("{}", score.table("simulated roasts (in process)"));
    for (roast, what) in score.misses.iter().take(20) {
        println!("  {roast}: {what}");
    }
    assert!(score.roasts >= 200);
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
