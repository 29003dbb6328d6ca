//! What a roast is made of, for the services that understand one: the events roasters mark
//! ([`EventKind`]), BT's rate of rise ([`Ror`]), a detector that finds the events in a live
//! stream of readings ([`Detector`]), and Artisan's roast logs ([`alog`]); and the analyses of a
//! roast once its events are known: reference curves ([`Profile`]), a session's figures
//! ([`summarize`]), how it differs from a reference ([`variance`]), and when a running roast
//! will crack and drop ([`predict`], scored by [`score_predictions`]), and the gas change that
//! would bring a drifting roast back to its reference ([`suggest`]).
//!
//! The crate is pure — no I/O, no clock, no async — so that the service that runs the detector
//! on live MQTT traffic, the scoring tests that replay roasts into it and the analytics that
//! read stored sessions all get the same answers from the same readings. Not here: storing
//! sessions or profiles, or serving the analyses (the services do that). The analyses read a
//! session's readings and events as one shared module cleans them (sorted, one per timestamp,
//! real temperatures only; each kind's earliest event, in roast order), so that they never
//! disagree about what the roast was.

pub mod alog;
mod correct;
mod detect;
mod predict;
mod profile;
mod ror;
pub mod score;
mod session;
mod summary;
mod variance;

use serde::{Deserialize, Serialize};

pub use correct::{Correction, CorrectionRule, suggest};
pub use detect::{Detected, Detector, Method, Priors};
pub use predict::{
    BLEND_HORIZON_MS, Case, CutScore, PREDICTION_CUTS, Prediction, PredictionScore, naive_fc_start,
    predict, score_predictions,
};
pub use profile::{MAX_POINTS, MAX_T_MS, Profile, ProfileError, ProfileEvent, ProfilePoint};
pub use ror::{ROR_WINDOW_MS, Ror};
pub use summary::{EventPoint, Phases, Summary, TpPoint, Weights, summarize};
pub use variance::{
    Deviation, Phase, PhaseTime, PhaseVariance, Stat, Variance, VariancePoint, variance,
};

/// The landmarks of a roast, in the order they happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// The beans go into the preheated drum: BT breaks downward.
    Charge,
    /// BT's minimum after charge: the probe stops cooling and starts following the beans.
    TurningPoint,
    /// The beans have dried and start to yellow.
    DryEnd,
    /// First crack begins.
    FcStart,
    /// First crack is over.
    FcEnd,
    /// The beans leave the drum: BT breaks downward again.
    Drop,
}

impl EventKind {
    pub const ALL: [EventKind; 6] = [
        EventKind::Charge,
        EventKind::TurningPoint,
        EventKind::DryEnd,
        EventKind::FcStart,
        EventKind::FcEnd,
        EventKind::Drop,
    ];

    /// The name on the wire and in the store.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Charge => "charge",
            EventKind::TurningPoint => "turning_point",
            EventKind::DryEnd => "dry_end",
            EventKind::FcStart => "fc_start",
            EventKind::FcEnd => "fc_end",
            EventKind::Drop => "drop",
        }
    }

    pub fn parse(name: &str) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|k| k.as_str() == name)
    }
}

impl std::fmt::Display for EventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the probes read at one moment: device time (epoch ms, or any monotonic millisecond
/// clock) and temperatures in °C, `None` where a probe read nothing.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reading {
    pub ts_ms: i64,
    pub bt: Option<f64>,
    pub et: Option<f64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_names_round_trip_and_match_serde() {
        // The service serializes with serde and the store keys by `as_str`: they must agree.
        for kind in EventKind::ALL {
            assert_eq!(EventKind::parse(kind.as_str()), Some(kind));
            assert_eq!(serde_json::to_string(&kind).unwrap(), format!("\"{kind}\""));
        }
        assert_eq!(EventKind::parse("first_crack"), None);
    }
}
