//! A roast logged from before charge: the preheated, empty drum reads flat (within the sensor
//! noise) until charge, at `pre_charge_ms`, where BT breaks downward; after charge the roast is
//! the roast without a pre-charge segment, shifted (but for the RoR of its first window).

use sim_engine::{
    EventKind, MAX_PRE_CHARGE_MS, ROR_WINDOW_MS, Roast, RoastConfig, Simulation, simulate,
};

use crate::{config, event};

/// The sensor noise is bounded at 3.5 σ (σ 0.1 °C on BT, 0.3 °C on ET), the samples rounded
/// to 0.01; the burner controller swings the idle drum's ET by at most 2 °C.
const BT_NOISE_BOUND_C: f64 = 0.355;
const ET_IDLE_BOUND_C: f64 = 2.0 + 1.055;

fn with_pre_charge(config: RoastConfig, pre_charge_ms: u64) -> RoastConfig {
    RoastConfig {
        pre_charge_ms,
        ..config
    }
}

/// The samples from `from_ms` on, moved back by `by_ms`.
fn shifted_back(roast: &Roast, from_ms: u64, by_ms: u64) -> Vec<sim_engine::Sample> {
    roast
        .samples
        .iter()
        .filter(|s| s.t_ms >= from_ms)
        .map(|s| sim_engine::Sample {
            t_ms: s.t_ms - by_ms,
            ..*s
        })
        .collect()
}

#[test]
fn before_charge_the_empty_drum_reads_flat_and_bt_breaks_at_charge() {
    for (profile, seed, interval_ms, pre_charge_ms) in [
        ("medium", 1, 1000, 30_000),
        ("light", 2, 2000, 20_000),
        ("dark", 3, 1000, 60_000),
        ("medium", 4, 500, 45_500),
        ("light", 5, 2000, 21_000),
    ] {
        let case = format!("{profile} seed {seed} every {interval_ms} ms, {pre_charge_ms} ms");
        let config = RoastConfig {
            sample_interval_ms: interval_ms,
            ..with_pre_charge(config(profile, seed, 4000.0), pre_charge_ms)
        };
        let roast = simulate(&config).unwrap();
        let charge = event(&roast, EventKind::Charge);
        assert_eq!(charge.t_ms, pre_charge_ms, "{case}");
        assert_eq!(roast.events[0], charge, "{case}: charge comes first");

        let (idle, roasting): (Vec<&sim_engine::Sample>, Vec<_>) =
            roast.samples.iter().partition(|s| s.t_ms < pre_charge_ms);
        assert_eq!(
            idle.len() as u64,
            pre_charge_ms.div_ceil(interval_ms),
            "{case}: logged from t = 0"
        );
        let first = config.profile.steps[0];
        for s in &idle {
            assert!(
                (s.bt - charge.bt).abs() <= BT_NOISE_BOUND_C,
                "{case}: BT {} at {} ms, {} at charge",
                s.bt,
                s.t_ms,
                charge.bt
            );
            assert!(
                (s.et - config.charge_et_c).abs() <= ET_IDLE_BOUND_C,
                "{case}: ET {} at {} ms",
                s.et,
                s.t_ms
            );
            assert_eq!(s.ror, 0.0, "{case}: at {} ms", s.t_ms);
            assert_eq!((s.gas, s.air, s.drum), (first.gas, first.air, first.drum));
        }
        // The ET swing is there, not only its noise.
        let et_span = idle.iter().map(|s| s.et).fold(f64::MIN, f64::max)
            - idle.iter().map(|s| s.et).fold(f64::MAX, f64::min);
        assert!(et_span > 1.0, "{case}: ET spans {et_span} °C before charge");

        // The bean probe is continuous through charge: the first sample after it starts from
        // the idle value, and from there BT falls, fast — the only break in the curve.
        let after = roasting[0];
        let fell_by = charge.bt - after.bt;
        let since_ms = after.t_ms - pre_charge_ms;
        assert!(
            fell_by <= BT_NOISE_BOUND_C + 5.0 * since_ms as f64 / 1000.0,
            "{case}: BT {} at {} ms, {} at charge",
            after.bt,
            after.t_ms,
            charge.bt
        );
        let two_s_later = roasting
            .iter()
            .find(|s| s.t_ms >= pre_charge_ms + 2_000)
            .unwrap();
        assert!(
            charge.bt - two_s_later.bt > 5.0,
            "{case}: BT {} two seconds after charge at {}",
            two_s_later.bt,
            charge.bt
        );
        let steepest_idle_fall = idle
            .windows(2)
            .map(|w| w[0].bt - w[1].bt)
            .fold(0.0, f64::max);
        assert!(
            steepest_idle_fall <= 2.0 * BT_NOISE_BOUND_C,
            "{case}: BT fell {steepest_idle_fall} °C between two idle samples"
        );
    }
}

#[test]
fn after_charge_the_roast_is_the_roast_without_a_pre_charge_segment_shifted() {
    for (profile, seed, interval_ms, pre_charge_ms) in [
        ("medium", 11, 1000, 30_000),
        ("dark", 12, 2000, 40_000),
        ("light", 13, 250, 20_250),
        ("medium", 14, 1000, MAX_PRE_CHARGE_MS),
    ] {
        let case = format!("{profile} seed {seed} every {interval_ms} ms, {pre_charge_ms} ms");
        let base = RoastConfig {
            sample_interval_ms: interval_ms,
            ..config(profile, seed, 4000.0)
        };
        let without = simulate(&base).unwrap();
        let with = simulate(&with_pre_charge(base, pre_charge_ms)).unwrap();
        let moved: Vec<_> = with
            .events
            .iter()
            .map(|e| sim_engine::Event {
                t_ms: e.t_ms - pre_charge_ms,
                ..*e
            })
            .collect();
        assert_eq!(moved, without.events, "{case}");
        // Charge falls on the sample grid here: the samples are the same, noise and all, but
        // for the RoR of the first window after charge, which the logger now takes over the
        // flat BT before charge too.
        let after = shifted_back(&with, pre_charge_ms, pre_charge_ms);
        assert_eq!(after.len(), without.samples.len(), "{case}");
        let charge_bt = event(&without, EventKind::Charge).bt;
        for (a, b) in after.iter().zip(&without.samples) {
            if a.t_ms < ROR_WINDOW_MS {
                assert_eq!(
                    sim_engine::Sample { ror: b.ror, ..*a },
                    *b,
                    "{case}: at {} ms after charge",
                    a.t_ms
                );
                // BT now minus BT a window ago (the idle drum's, flat at the charge BT) — or at
                // the start of logging, when that is nearer; the probe's noise-free BT is within
                // its noise of the sample's.
                let span_ms = (a.t_ms + pre_charge_ms).min(ROR_WINDOW_MS) as f64;
                let over_window = (a.bt - charge_bt) * 60_000.0 / span_ms;
                let slack = 2.0 * (BT_NOISE_BOUND_C + 0.005) * 60_000.0 / span_ms;
                assert!(
                    (a.ror - over_window).abs() <= slack + 0.01,
                    "{case}: RoR {} at {} ms after charge, BT {}",
                    a.ror,
                    a.t_ms,
                    a.bt
                );
            } else {
                assert_eq!(a, b, "{case}");
            }
        }
    }
}

#[test]
fn ror_is_continuous_through_charge() {
    // Logged for a whole RoR window before charge (a shorter segment softens the jump less).
    for pre_charge_ms in [ROR_WINDOW_MS, 60_000] {
        let roast = simulate(&with_pre_charge(
            config("medium", 41, 4000.0),
            pre_charge_ms,
        ))
        .unwrap();
        let steepest = roast
            .samples
            .windows(2)
            .map(|w| (w[1].ror - w[0].ror).abs())
            .fold(0.0, f64::max);
        // Without a pre-charge segment it jumps by some 250 °C/min in the first second.
        assert!(
            steepest < 25.0,
            "{pre_charge_ms} ms: RoR jumps by {steepest} °C/min between two samples"
        );
    }
}

#[test]
fn a_charge_between_two_samples_keeps_the_grid_and_the_events() {
    let base = config("medium", 21, 4000.0);
    let without = simulate(&base).unwrap();
    let pre_charge_ms = 25_370;
    let with = simulate(&with_pre_charge(base, pre_charge_ms)).unwrap();
    let (last, grid) = with.samples.split_last().unwrap();
    for (i, s) in grid.iter().enumerate() {
        assert_eq!(s.t_ms, i as u64 * 1000, "the grid starts when logging does");
    }
    let drop = event(&with, EventKind::Drop);
    assert_eq!(last.t_ms, drop.t_ms, "the drop sample is the last");
    // The integration does not depend on where the samples fall: the same events, shifted.
    let shifted: Vec<u64> = without
        .events
        .iter()
        .map(|e| e.t_ms + pre_charge_ms)
        .collect();
    let times: Vec<u64> = with.events.iter().map(|e| e.t_ms).collect();
    assert_eq!(times, shifted);
    assert_eq!(
        with.events
            .iter()
            .map(|e| (e.kind, e.bt, e.et))
            .collect::<Vec<_>>(),
        without
            .events
            .iter()
            .map(|e| (e.kind, e.bt, e.et))
            .collect::<Vec<_>>()
    );
}

#[test]
fn a_pre_charge_segment_is_deterministic_and_stepping_gives_what_simulate_gives() {
    let c = with_pre_charge(config("dark", 31, 3600.0), 33_000);
    let json = |c: &RoastConfig| serde_json::to_string(&simulate(c).unwrap()).unwrap();
    assert_eq!(json(&c), json(&c));

    let roast = simulate(&c).unwrap();
    let mut sim = Simulation::new(&c).unwrap();
    let mut samples = Vec::new();
    while let Some(s) = sim.next_sample() {
        // Nothing has happened until the charge has been sampled.
        let charged = s.t_ms >= c.pre_charge_ms;
        assert_eq!(!sim.events().is_empty(), charged, "at {} ms", s.t_ms);
        samples.push(s);
    }
    assert_eq!(samples, roast.samples);
    assert_eq!(sim.events(), roast.events.as_slice());
    assert!(roast.samples.len() as u64 <= c.max_samples());
}

#[test]
fn a_config_without_pre_charge_ms_reads_as_none() {
    let mut value = serde_json::to_value(RoastConfig::default()).unwrap();
    value
        .as_object_mut()
        .unwrap()
        .remove("pre_charge_ms")
        .unwrap();
    let config: RoastConfig = serde_json::from_value(value).unwrap();
    assert_eq!(config, RoastConfig::default());
    assert_eq!(config.pre_charge_ms, 0);
}
