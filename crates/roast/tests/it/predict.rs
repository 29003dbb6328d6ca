//! First-crack prediction scored on real and simulated roasts: the readings up to half and
//! three quarters of the way from CHARGE to first crack, predicted against a reference roast,
//! next to the naive baseline (first crack as long after CHARGE as the reference's).
//!
//! Run with `--nocapture` for the tables. The bounds asserted are what must keep holding, looser
//! than what is reached today (the figures are in the tables; the product's targets are 45 s at
//! 50 % and 20 s at 75 %).

use roast::alog::RoastLog;
use roast::{Case, EventKind, PredictionScore, Profile, Reading, score_predictions};
use sim_engine::{RoastConfig, builtin_profiles, simulate};

fn ms(t_s: f64) -> i64 {
    (t_s * 1000.0).round() as i64
}

/// A real roast as a session: its samples as readings, its roaster's marks as events.
fn session(log: &RoastLog) -> (Vec<Reading>, Vec<(EventKind, i64)>) {
    let readings = log
        .samples
        .iter()
        .map(|s| Reading {
            ts_ms: ms(s.t_s),
            bt: s.bt,
            et: s.et,
        })
        .collect();
    let events = log.marks.iter().map(|m| (m.kind, ms(m.t_s))).collect();
    (readings, events)
}

/// Each real roast against a reference built from another: of the other nine, the one whose
/// first crack came at the median time after CHARGE. One other roast rather than an average of
/// them, because a reference is a roast a roaster chose to repeat, not a mean curve (averaging
/// curves aligned at CHARGE smears first crack over a minute and a half of BT); the median one,
/// so that the reference is typical of the roaster and not the one it is scored on.
pub(crate) fn real_cases() -> Vec<Case> {
    let logs = crate::real::logs();
    let profiles: Vec<Profile> = logs
        .iter()
        .map(|log| Profile::from_alog(log).unwrap())
        .collect();
    logs.iter()
        .enumerate()
        .map(|(i, log)| {
            let mut others: Vec<&Profile> = (0..profiles.len())
                .filter(|&j| j != i)
                .map(|j| &profiles[j])
                .collect();
            others.sort_by_key(|p| p.event(EventKind::FcStart));
            let (readings, events) = session(log);
            Case {
                name: log.name.clone(),
                readings,
                events,
                reference: others[others.len() / 2].clone(),
            }
        })
        .collect()
}

/// A simulated roast as a session on a device's clock, with the engine's events.
fn simulated(config: &RoastConfig) -> (Vec<Reading>, Vec<(EventKind, i64)>) {
    let charged_at = 1_795_448_000_000_i64;
    let roast = simulate(config).unwrap();
    let readings = roast
        .samples
        .iter()
        .map(|s| Reading {
            ts_ms: charged_at + s.t_ms as i64,
            bt: Some(s.bt),
            et: Some(s.et),
        })
        .collect();
    let events = roast
        .events
        .iter()
        .map(|e| (crate::simulated::kind(e.kind), charged_at + e.t_ms as i64))
        .collect();
    (readings, events)
}

/// Seeded simulated roasts (seeds 1..=`seeds`) over every built-in profile and batch size, each
/// against the same profile roasted with seed 0 (another batch of the same coffee: the engine
/// draws each batch's heat transfer, moisture, starting temperature, burner and crack
/// temperatures from the seed), of the same batch size or, given `reference_batch_g`, of that
/// one (and then the sessions of that batch size are left out).
pub(crate) fn simulated_cases(seeds: u64, reference_batch_g: Option<f64>) -> Vec<Case> {
    let mut cases = Vec::new();
    for profile in builtin_profiles() {
        for batch_g in [1_500.0, 3_000.0, 4_000.0, 5_000.0, 6_000.0] {
            if reference_batch_g == Some(batch_g) {
                continue;
            }
            let config = |seed, batch_g| RoastConfig {
                profile: profile.clone(),
                seed,
                batch_g,
                ..RoastConfig::default()
            };
            let (readings, events) = simulated(&config(0, reference_batch_g.unwrap_or(batch_g)));
            let reference = Profile::from_session(&readings, &events).unwrap();
            for seed in 1..=seeds {
                let (readings, events) = simulated(&config(seed, batch_g));
                cases.push(Case {
                    name: format!("{}-{batch_g}g-seed{seed}", profile.name),
                    readings,
                    events,
                    reference: reference.clone(),
                });
            }
        }
    }
    cases
}

fn report(title: &str, score: &PredictionScore) {
    println!("{}", score.table(title));
    assert!(score.skipped.is_empty(), "{:?}", score.skipped);
}

#[test]
fn first_crack_is_predicted_on_the_real_roasts_better_than_by_the_clock() {
    let score = score_predictions(&real_cases());
    report(
        "real roasts, leave-one-out reference (median FC of the other nine)",
        &score,
    );
    let [half, three_quarters] = &score.cuts[..] else {
        panic!("two cuts");
    };
    assert_eq!(half.n(), 10);
    assert!(three_quarters.mae_s().unwrap() < 60.0);
    assert!(three_quarters.mae_s() < three_quarters.naive_mae_s());
    assert!(half.mae_s() < half.naive_mae_s());
}

/// Every real roast against each of the other nine in turn (90 pairs): the errors to expect
/// whichever roast the roaster picks as the reference, not only a typical one.
#[test]
fn first_crack_is_predicted_on_the_real_roasts_whichever_other_is_the_reference() {
    let logs = crate::real::logs();
    let mut cases = Vec::new();
    for (i, log) in logs.iter().enumerate() {
        for other in logs
            .iter()
            .enumerate()
            .filter(|&(j, _)| j != i)
            .map(|(_, o)| o)
        {
            let (readings, events) = session(log);
            cases.push(Case {
                name: format!("{} by {}", log.name, other.name),
                readings,
                events,
                reference: Profile::from_alog(other).unwrap(),
            });
        }
    }
    let score = score_predictions(&cases);
    report("real roasts, every other roast as the reference", &score);
    for cut in &score.cuts {
        assert_eq!(cut.n(), 90);
        assert!(cut.mae_s() < cut.naive_mae_s(), "{cut:?}");
    }
}

#[test]
fn first_crack_is_predicted_on_seeded_simulated_roasts_better_than_by_the_clock() {
    let score = score_predictions(&simulated_cases(4, None));
    report(
        "simulated roasts, reference = same profile and batch, seed 0",
        &score,
    );
    let [half, three_quarters] = &score.cuts[..] else {
        panic!("two cuts");
    };
    assert_eq!(half.n(), 60);
    assert!(three_quarters.mae_s() < three_quarters.naive_mae_s());
    assert!(three_quarters.mae_s().unwrap() < 20.0);
    assert!(half.mae_s().unwrap() < 45.0);
}

/// The same roasts against the same profile roasted at another batch size (4 kg): a reference
/// that is not quite the roast, where the clock alone is off by most of a minute.
#[test]
fn first_crack_is_predicted_on_simulated_roasts_of_another_batch_size_than_the_reference() {
    let score = score_predictions(&simulated_cases(4, Some(4_000.0)));
    report(
        "simulated roasts, reference = same profile at 4 kg, seed 0",
        &score,
    );
    let [half, three_quarters] = &score.cuts[..] else {
        panic!("two cuts");
    };
    assert_eq!(half.n(), 48);
    for cut in [half, three_quarters] {
        assert!(
            cut.mae_s().unwrap() < cut.naive_mae_s().unwrap() / 1.5,
            "{cut:?}"
        );
    }
    assert!(three_quarters.mae_s().unwrap() < 20.0);
    assert!(half.mae_s().unwrap() < 45.0);
}
