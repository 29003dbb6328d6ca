//! The same inputs and seed give the same roast, byte for byte; the seed alone varies it; how
//! often it is sampled does not change it.

use sim_engine::{EventKind, RoastConfig, Simulation, simulate};

use crate::config;

fn json(config: &RoastConfig) -> String {
    serde_json::to_string(&simulate(config).unwrap()).unwrap()
}

#[test]
fn the_same_config_and_seed_give_byte_identical_json() {
    for (profile, seed) in [("medium", 0), ("light", 42), ("dark", u64::MAX)] {
        let c = config(profile, seed, 4200.0);
        assert_eq!(json(&c), json(&c), "{profile} seed {seed}");
    }
}

#[test]
fn stepping_a_simulation_gives_what_simulate_gives() {
    let c = config("medium", 9, 4000.0);
    let roast = simulate(&c).unwrap();
    let mut sim = Simulation::new(&c).unwrap();
    let mut samples = Vec::new();
    while let Some(s) = sim.next_sample() {
        samples.push(s);
    }
    assert_eq!(samples, roast.samples);
    assert_eq!(sim.events(), roast.events.as_slice());
    assert_eq!(sim.next_sample(), None, "nothing after the drop");
}

#[test]
fn different_seeds_give_different_roasts() {
    let a = simulate(&config("medium", 1, 4000.0)).unwrap();
    let b = simulate(&config("medium", 2, 4000.0)).unwrap();
    assert_ne!(a.samples, b.samples);
    // Not only the noise: the batches differ a little, so their events do too.
    assert_ne!(a.events, b.events);
}

#[test]
fn sampling_more_or_less_often_shows_the_same_roast() {
    let every = |ms| {
        simulate(&RoastConfig {
            sample_interval_ms: ms,
            ..config("dark", 5, 3600.0)
        })
        .unwrap()
    };
    let fine = every(500);
    let coarse = every(2000);
    let odd = every(250);
    // The events come from the integration, which does not depend on the sampling: they are
    // not only within one sample interval of each other but identical.
    assert_eq!(fine.events, coarse.events);
    assert_eq!(fine.events, odd.events);
    // The rate of rise has no noise: at common instants it is the same number.
    for s in &coarse.samples {
        let f = fine.samples.iter().find(|f| f.t_ms == s.t_ms).unwrap();
        assert_eq!(f.ror, s.ror, "at {} ms", s.t_ms);
        // BT differs only by the sensor noise (σ 0.1 °C, bounded at ±0.35 °C each).
        assert!(
            (f.bt - s.bt).abs() <= 0.75,
            "at {} ms: {} vs {}",
            s.t_ms,
            f.bt,
            s.bt
        );
    }
    // Four samples per 2 s.
    let ratio = fine.samples.len() as f64 / coarse.samples.len() as f64;
    assert!((ratio - 4.0).abs() < 0.05, "{ratio}");
}

#[test]
fn samples_fall_on_the_interval_grid_and_the_drop_is_the_last() {
    for interval in [100, 250, 1000, 1500, 60_000] {
        let roast = simulate(&RoastConfig {
            sample_interval_ms: interval,
            ..config("light", 3, 4000.0)
        })
        .unwrap();
        let drop = roast.events.last().unwrap();
        assert_eq!(drop.kind, EventKind::Drop);
        let (last, grid) = roast.samples.split_last().unwrap();
        assert_eq!(
            last.t_ms, drop.t_ms,
            "interval {interval}: the drop sample is the last"
        );
        for (i, s) in grid.iter().enumerate() {
            assert_eq!(s.t_ms, i as u64 * interval, "interval {interval}");
        }
        assert!(
            drop.t_ms - grid.last().unwrap().t_ms <= interval,
            "interval {interval}: no sample missing before the drop"
        );
    }
}

#[test]
fn events_are_shown_only_once_their_time_has_been_sampled() {
    let mut sim = Simulation::new(&config("medium", 4, 4000.0)).unwrap();
    assert!(sim.events().is_empty(), "nothing sampled yet");
    let mut seen = 0;
    while let Some(sample) = sim.next_sample() {
        let events = sim.events();
        assert!(events.len() >= seen, "events are never taken back");
        assert!(events.iter().all(|e| e.t_ms <= sample.t_ms));
        seen = events.len();
    }
    let kinds: Vec<EventKind> = sim.events().iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        [
            EventKind::Charge,
            EventKind::TurningPoint,
            EventKind::DryEnd,
            EventKind::FirstCrack,
            EventKind::Drop
        ]
    );
}
