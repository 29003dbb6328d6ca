//! The built-in roast profiles, calibrated on the simulated 5 kg roaster (see `physics`).
//!
//! All three charge with a strong burner and low airflow, ease the gas off through drying and
//! Maillard, and open the air as the roast goes on, as shop roasters do; they differ in how much
//! heat they keep late and where they drop.

use super::{ControlStep, Profile};

/// When the controls change, seconds after charge: after the turning point, around dry end,
/// mid-Maillard, and a minute before first crack.
const STEP_TIMES_S: [f64; 5] = [0.0, 90.0, 240.0, 420.0, 540.0];
const AIR: [f64; 5] = [30.0, 35.0, 45.0, 55.0, 60.0];
const DRUM: f64 = 60.0;
/// A roast still short of its drop temperature after 20 minutes has gone wrong; it is dropped.
const MAX_DURATION_S: f64 = 1200.0;

/// `light` (drop at 208 °C, gas cut hard before first crack for a gentle finish), `medium`
/// (212 °C, the default) and `dark` (219 °C, gas raised again before first crack to carry the
/// roast through a longer development).
pub fn builtin_profiles() -> Vec<Profile> {
    vec![
        profile("light", [95.0, 92.0, 73.0, 66.0, 52.0], 208.0),
        profile("medium", [90.0, 95.0, 75.0, 67.0, 65.0], 212.0),
        profile("dark", [94.0, 94.0, 78.0, 70.0, 76.0], 219.0),
    ]
}

/// The built-in profile called `name`.
pub fn builtin_profile(name: &str) -> Option<Profile> {
    builtin_profiles().into_iter().find(|p| p.name == name)
}

fn profile(name: &str, gas: [f64; 5], drop_bt_c: f64) -> Profile {
    Profile {
        name: name.to_owned(),
        steps: (0..5)
            .map(|i| ControlStep {
                at_s: STEP_TIMES_S[i],
                gas: gas[i],
                air: AIR[i],
                drum: DRUM,
            })
            .collect(),
        drop_bt_c,
        max_duration_s: MAX_DURATION_S,
    }
}
