//! Every metric of the MQTT crate, in one place (names: `simcorp_mqtt_*`). Only the subscriber
//! emits any: the publisher's figures are the publishing program's to report.

use metrics::{Unit, counter, describe_counter, describe_gauge, gauge};

const MESSAGES_RECEIVED: &str = "simcorp_mqtt_messages_received_total";
const CONNECTED: &str = "simcorp_mqtt_connected";
const CONNECTION_LOSSES: &str = "simcorp_mqtt_connection_losses_total";
const SESSIONS_LOST: &str = "simcorp_mqtt_sessions_lost_total";
const STALE_ACKS_SKIPPED: &str = "simcorp_mqtt_stale_acks_skipped_total";

/// Describes the subscriber's metrics to the installed recorder.
pub fn describe() {
    describe_counter!(
        MESSAGES_RECEIVED,
        Unit::Count,
        "PUBLISH packets received from the broker."
    );
    describe_gauge!(CONNECTED, "1 while connected to the broker, else 0.");
    describe_counter!(
        CONNECTION_LOSSES,
        Unit::Count,
        "Connections to the broker lost (each followed by a reconnect with backoff)."
    );
    describe_counter!(
        SESSIONS_LOST,
        Unit::Count,
        "Reconnections on which the broker had kept no session: what it held for us is gone."
    );
    describe_counter!(
        STALE_ACKS_SKIPPED,
        Unit::Count,
        "Acknowledgements not sent because their message came on an earlier connection (the \
         broker redelivers it)."
    );
}

pub(crate) fn received() {
    counter!(MESSAGES_RECEIVED).increment(1);
}

pub(crate) fn connected(up: bool) {
    gauge!(CONNECTED).set(if up { 1.0 } else { 0.0 });
}

pub(crate) fn connection_lost() {
    counter!(CONNECTION_LOSSES).increment(1);
}

pub(crate) fn session_lost() {
    counter!(SESSIONS_LOST).increment(1);
}

pub(crate) fn stale_acks(n: u64) {
    counter!(STALE_ACKS_SKIPPED).increment(n);
}
