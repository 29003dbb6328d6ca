//! Metrics of event-inference (names: `simcorp_event_inference_*`).

use metrics::{
    Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram,
};
use roast::EventKind;

const READINGS: &str = "simcorp_event_inference_readings_total";
const EVENTS: &str = "simcorp_event_inference_events_total";
const SESSIONS: &str = "simcorp_event_inference_sessions";
const LAG: &str = "simcorp_event_inference_lag_seconds";
const CATCH_UPS: &str = "simcorp_event_inference_catch_ups_total";
const PUBLISH_FAILURES: &str = "simcorp_event_inference_publish_failures_total";

pub(crate) fn reading() {
    counter!(READINGS).increment(1);
}

pub(crate) fn event(kind: EventKind) {
    counter!(EVENTS, "kind" => kind.as_str()).increment(1);
}

pub(crate) fn sessions(n: usize) {
    gauge!(SESSIONS).set(n as f64);
}

pub(crate) fn lag_ms(ms: i64) {
    histogram!(LAG).record(ms as f64 / 1000.0);
}

pub(crate) fn catch_up(ok: bool) {
    counter!(CATCH_UPS, "outcome" => if ok { "ok" } else { "failed" }).increment(1);
}

pub(crate) fn publish_failed() {
    counter!(PUBLISH_FAILURES).increment(1);
}

/// Describes event-inference's metrics (and the MQTT client's), registering them at zero.
pub(crate) fn describe() {
    mqtt::metrics::describe();
    describe_counter!(
        READINGS,
        Unit::Count,
        "Telemetry readings taken by the detectors."
    );
    describe_counter!(
        EVENTS,
        Unit::Count,
        "Roast events detected and published, by kind."
    );
    describe_gauge!(SESSIONS, Unit::Count, "Sessions being watched.");
    describe_histogram!(
        LAG,
        Unit::Seconds,
        "How far detection runs behind the stream: the time a reading is processed minus its device timestamp."
    );
    describe_counter!(
        CATCH_UPS,
        Unit::Count,
        "Sessions whose past readings were fetched from the store, by outcome."
    );
    describe_counter!(
        PUBLISH_FAILURES,
        Unit::Count,
        "Events that could not be handed to the MQTT client (it was shutting down)."
    );
    counter!(READINGS).increment(0);
    for kind in EventKind::ALL {
        counter!(EVENTS, "kind" => kind.as_str()).increment(0);
    }
    gauge!(SESSIONS).set(0.0);
    counter!(CATCH_UPS, "outcome" => "ok").increment(0);
    counter!(CATCH_UPS, "outcome" => "failed").increment(0);
    counter!(PUBLISH_FAILURES).increment(0);
}
