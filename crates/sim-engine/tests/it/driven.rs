//! A driven simulation: controls set while it runs, as driver-bridge's `sim` driver does when a
//! command arrives, change the roast from then on — and only then.

use sim_engine::{Control, Sample, Simulation};

use crate::config;

/// Samples up to `until_ms`; from `at_ms` on, `gas` in place of the profile's.
fn run(gas: Option<f64>, at_ms: u64, until_ms: u64) -> Vec<Sample> {
    let mut sim = Simulation::new(&config("medium", 7, 5000.0)).unwrap();
    let mut out = Vec::new();
    while let Some(s) = sim.next_sample() {
        if s.t_ms >= at_ms
            && let Some(gas) = gas
        {
            sim.set_control(Control::Gas, gas);
        }
        let done = s.t_ms >= until_ms;
        out.push(s);
        if done {
            break;
        }
    }
    out
}

#[test]
fn a_higher_gas_raises_bts_rate_of_rise_against_the_same_seed() {
    let plain = run(None, 240_000, 360_000);
    let driven = run(Some(100.0), 240_000, 360_000);
    // Identical up to the change: the override touches nothing before it.
    let before = plain.iter().position(|s| s.t_ms >= 240_000).unwrap();
    assert_eq!(plain[..=before], driven[..=before]);
    let last = |r: &[Sample]| *r.last().unwrap();
    let (p, d) = (last(&plain), last(&driven));
    assert_eq!(d.gas, 100.0);
    assert!(p.gas < 100.0, "the profile's gas {}", p.gas);
    assert!(
        d.ror > p.ror + 1.0,
        "RoR with gas 100: {} vs the profile's {}",
        d.ror,
        p.ror
    );
    assert!(d.bt > p.bt, "BT {} vs {}", d.bt, p.bt);
}

#[test]
fn without_an_override_a_driven_simulation_is_the_plain_one() {
    let a = run(None, 0, 120_000);
    let b = sim_engine::simulate(&config("medium", 7, 5000.0)).unwrap();
    assert_eq!(a[..], b.samples[..a.len()]);
}
