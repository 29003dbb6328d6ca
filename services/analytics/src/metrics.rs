//! Metrics of analytics (names: `simcorp_analytics_*`).

use metrics::{Unit, counter, describe_counter, describe_gauge, gauge};

const READINGS: &str = "simcorp_analytics_readings_total";
const SESSIONS: &str = "simcorp_analytics_live_sessions";
const REFUSED: &str = "simcorp_analytics_sessions_refused_total";
const PREDICTIONS: &str = "simcorp_analytics_predictions_total";
const PROFILES: &str = "simcorp_analytics_profiles_created_total";
const PAGES: &str = "simcorp_analytics_live_pages_opened_total";
const CORRECTIONS: &str = "simcorp_analytics_corrections_total";

const SOURCES: [&str; 4] = ["session", "sim_twin", "alog", "json"];
/// What became of a suggested correction: proposed to the command service, refused by it,
/// not taken (unreachable, unauthorized, an error), or dropped because too many were waiting.
const OUTCOMES: [&str; 4] = ["proposed", "refused", "failed", "dropped"];

pub(crate) fn reading() {
    counter!(READINGS).increment(1);
}

pub(crate) fn sessions(n: usize) {
    gauge!(SESSIONS).set(n as f64);
}

pub(crate) fn session_refused() {
    counter!(REFUSED).increment(1);
}

pub(crate) fn prediction() {
    counter!(PREDICTIONS).increment(1);
}

pub(crate) fn profile_created(source: &str) {
    let source = SOURCES
        .iter()
        .find(|s| **s == source)
        .copied()
        .unwrap_or("json");
    counter!(PROFILES, "source" => source).increment(1);
}

pub(crate) fn correction(outcome: &'static str) {
    counter!(CORRECTIONS, "outcome" => outcome).increment(1);
}

pub(crate) fn page_opened() {
    counter!(PAGES).increment(1);
}

/// Describes analytics' metrics (and the MQTT client's), registering them at zero.
pub(crate) fn describe() {
    mqtt::metrics::describe();
    describe_counter!(
        READINGS,
        Unit::Count,
        "Telemetry readings taken into the live sessions."
    );
    describe_gauge!(SESSIONS, Unit::Count, "Sessions watched live.");
    describe_counter!(
        REFUSED,
        Unit::Count,
        "Sessions not watched live because analytics.max_live_sessions were (served from the store only)."
    );
    describe_counter!(PREDICTIONS, Unit::Count, "Live predictions computed.");
    describe_counter!(
        PROFILES,
        Unit::Count,
        "Reference profiles created, by source."
    );
    describe_counter!(PAGES, Unit::Count, "Live pushes (GET /live) opened.");
    describe_counter!(
        CORRECTIONS,
        Unit::Count,
        "Gas corrections suggested for drifting roasts, by what became of them (proposed to the command service, refused by it, failed, dropped)."
    );
    counter!(READINGS).increment(0);
    gauge!(SESSIONS).set(0.0);
    counter!(REFUSED).increment(0);
    counter!(PREDICTIONS).increment(0);
    for s in SOURCES {
        counter!(PROFILES, "source" => s).increment(0);
    }
    counter!(PAGES).increment(0);
    for o in OUTCOMES {
        counter!(CORRECTIONS, "outcome" => o).increment(0);
    }
}
