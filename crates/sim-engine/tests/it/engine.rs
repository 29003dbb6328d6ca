//! The engine's inputs: what it refuses and why, and roasts driven by custom profiles.

use sim_engine::{
    ControlStep, EventKind, Profile, RoastConfig, SimError, Simulation, builtin_profiles, simulate,
};

fn step(at_s: f64, gas: f64) -> ControlStep {
    ControlStep {
        at_s,
        gas,
        air: 40.0,
        drum: 60.0,
    }
}

/// Applies `change` to the default roast and expects a refusal mentioning `expected`.
fn check_refused(change: impl FnOnce(&mut RoastConfig), expected: &str) {
    let mut config = RoastConfig::default();
    change(&mut config);
    let err = Simulation::new(&config).err().unwrap_or_else(|| {
        panic!("accepted {config:?}, expected a refusal mentioning {expected:?}")
    });
    let SimError::Invalid(message) = &err;
    assert!(message.contains(expected), "{message:?} lacks {expected:?}");
    assert_eq!(simulate(&config).err(), Some(err));
}

#[test]
fn invalid_inputs_are_refused_with_the_reason() {
    check_refused(|c| c.batch_g = 0.0, "batch_g 0 is not within 500..=6000");
    check_refused(|c| c.batch_g = f64::NAN, "batch_g NaN");
    check_refused(|c| c.moisture_pct = 30.0, "moisture_pct 30");
    check_refused(|c| c.charge_et_c = 90.0, "charge_et_c 90");
    check_refused(|c| c.ambient_c = f64::INFINITY, "ambient_c inf");
    check_refused(|c| c.sample_interval_ms = 50, "sample_interval_ms 50");
    check_refused(
        |c| c.sample_interval_ms = 120_000,
        "sample_interval_ms 120000",
    );
    check_refused(|c| c.profile.name = String::new(), "name must be 1-64");
    check_refused(|c| c.profile.steps.clear(), "must have 1-1000 steps");
    check_refused(
        |c| c.profile.steps[0].at_s = 5.0,
        "first step must be at_s 0",
    );
    check_refused(|c| c.profile.steps[2].at_s = 10.0, "increasing at_s order");
    check_refused(|c| c.profile.steps[1].gas = 120.0, "step 1: gas 120");
    check_refused(|c| c.profile.steps[1].air = -1.0, "step 1: air -1");
    check_refused(|c| c.profile.steps[3].drum = f64::NAN, "step 3: drum NaN");
    check_refused(|c| c.profile.steps[1].at_s = f64::NAN, "step 1: at_s");
    check_refused(|c| c.profile.drop_bt_c = 300.0, "drop_bt_c 300");
    check_refused(|c| c.profile.max_duration_s = 7200.0, "max_duration_s 7200");
    check_refused(|c| c.profile.max_duration_s = 0.0, "max_duration_s 0");
    check_refused(
        |c| c.pre_charge_ms = 600_001,
        "pre_charge_ms 600001 is not within 0..=600000",
    );
}

#[test]
fn builtin_profiles_are_valid_and_distinct() {
    let profiles = builtin_profiles();
    let names: Vec<&str> = profiles.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["light", "medium", "dark"]);
    for p in &profiles {
        p.validate().unwrap();
    }
    assert!(profiles[0].drop_bt_c < profiles[1].drop_bt_c);
    assert!(profiles[1].drop_bt_c < profiles[2].drop_bt_c);
    assert_eq!(RoastConfig::default().profile.name, "medium");
}

#[test]
fn a_custom_profile_drives_the_roast() {
    let profile = Profile {
        name: "hot and short".into(),
        steps: vec![step(0.0, 100.0), step(300.0, 80.0)],
        drop_bt_c: 200.0,
        max_duration_s: 900.0,
    };
    let roast = simulate(&RoastConfig {
        profile,
        ..RoastConfig::default()
    })
    .unwrap();
    let drop = roast.events.last().unwrap();
    assert_eq!(drop.kind, EventKind::Drop);
    assert!(drop.bt >= 200.0 && drop.bt < 200.5, "{drop:?}");
    // The controls in the samples are the profile's, step by step.
    for s in &roast.samples {
        let gas = if s.t_ms < 300_000 { 100.0 } else { 80.0 };
        assert_eq!(
            (s.gas, s.air, s.drum),
            (gas, 40.0, 60.0),
            "at {} ms",
            s.t_ms
        );
    }
    // More heat than the built-in medium: a faster roast.
    let medium = simulate(&RoastConfig::default()).unwrap();
    let fc = |r: &sim_engine::Roast| {
        r.events
            .iter()
            .find(|e| e.kind == EventKind::FirstCrack)
            .map(|e| e.t_ms)
    };
    assert!(fc(&roast).unwrap() < fc(&medium).unwrap());
}

#[test]
fn a_roast_that_never_gets_hot_enough_is_dropped_at_its_time_limit() {
    let profile = Profile {
        name: "pilot light".into(),
        steps: vec![step(0.0, 10.0)],
        drop_bt_c: 210.0,
        max_duration_s: 600.0,
    };
    let roast = simulate(&RoastConfig {
        profile,
        ..RoastConfig::default()
    })
    .unwrap();
    let kinds: Vec<EventKind> = roast.events.iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        [EventKind::Charge, EventKind::TurningPoint, EventKind::Drop]
    );
    let drop = roast.events.last().unwrap();
    assert_eq!(drop.t_ms, 600_000);
    assert!(drop.bt < 150.0, "{drop:?}");
    assert_eq!(roast.samples.len(), 601);
}

#[test]
fn the_drop_temperature_counts_only_after_the_turning_point() {
    // The probe starts at the charge ET, above this drop temperature: that is not a drop.
    let mut config = RoastConfig::default();
    config.profile.drop_bt_c = 150.0;
    let roast = simulate(&config).unwrap();
    let tp = roast.events[1];
    assert_eq!(tp.kind, EventKind::TurningPoint);
    let drop = roast.events.last().unwrap();
    assert_eq!(drop.kind, EventKind::Drop);
    assert!(
        drop.t_ms > tp.t_ms && drop.bt >= 150.0,
        "{:?}",
        roast.events
    );
}

#[test]
fn the_worst_case_sample_count_bounds_every_roast() {
    for interval in [100, 333, 1000, 7000] {
        let config = RoastConfig {
            sample_interval_ms: interval,
            ..RoastConfig::default()
        };
        let roast = simulate(&config).unwrap();
        assert!(roast.samples.len() as u64 <= config.max_samples());
    }
    let mut long = RoastConfig::default();
    long.profile.steps = vec![step(0.0, 0.0)];
    long.profile.max_duration_s = 3600.0;
    long.sample_interval_ms = 100;
    assert_eq!(
        simulate(&long).unwrap().samples.len() as u64,
        long.max_samples() - 1,
        "an hour at 100 ms: every grid sample, the last of them the drop"
    );
    // Logged from ten minutes before charge, with a charge and a time limit off the grids.
    long.pre_charge_ms = 600_000;
    assert_eq!(
        simulate(&long).unwrap().samples.len() as u64,
        long.max_samples() - 1,
        "ten minutes more at 100 ms"
    );
    for (pre_charge_ms, max_duration_s) in [(990, 1.001), (999, 599.95), (12_345, 600.0)] {
        for interval in [100, 1000, 7000] {
            let mut c = long.clone();
            c.pre_charge_ms = pre_charge_ms;
            c.profile.max_duration_s = max_duration_s;
            c.sample_interval_ms = interval;
            let n = simulate(&c).unwrap().samples.len() as u64;
            assert!(
                n <= c.max_samples(),
                "{pre_charge_ms} ms, {max_duration_s} s, every {interval} ms: {n}"
            );
        }
    }
}
