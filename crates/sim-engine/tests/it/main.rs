//! The engine's specification: determinism, realism over every built-in profile and a range of
//! batches and seeds, the logging of the empty drum before charge, and golden roasts pinned byte
//! for byte.
//!
//! Golden files (`tests/golden/*.json`) pin whole roasts. A deliberate change to the model or the
//! built-in profiles changes them: regenerate with
//! `SIMCORP_UPDATE_GOLDEN=1 cargo test -p sim-engine --test it golden`, and review the diff (one
//! sample per line) before committing it.
#![allow(clippy::unwrap_used)] // In tests a panic is the assertion.
#![allow(unreachable_pub)] // Helpers are shared between the modules of this one binary.

mod determinism;
mod driven;
mod engine;
mod golden;
mod pre_charge;
mod realism;

use sim_engine::{Event, EventKind, Roast, RoastConfig, builtin_profile};

/// The default roast with `profile`, `seed` and `batch_g`.
pub fn config(profile: &str, seed: u64, batch_g: f64) -> RoastConfig {
    RoastConfig {
        profile: builtin_profile(profile).unwrap(),
        seed,
        batch_g,
        ..RoastConfig::default()
    }
}

pub fn event(roast: &Roast, kind: EventKind) -> Event {
    *roast
        .events
        .iter()
        .find(|e| e.kind == kind)
        .unwrap_or_else(|| panic!("no {kind:?} in {:?}", roast.events))
}

/// The RoR of the first sample at or after `t_ms`.
pub fn ror_at(roast: &Roast, t_ms: u64) -> f64 {
    roast
        .samples
        .iter()
        .find(|s| s.t_ms >= t_ms)
        .unwrap_or_else(|| panic!("no sample at or after {t_ms} ms"))
        .ror
}
