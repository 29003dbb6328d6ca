//! Metrics of driver-bridge (names: `simcorp_driver_bridge_*`).

use metrics::{Unit, counter, describe_counter, describe_gauge, gauge};

const SAMPLES: &str = "simcorp_driver_bridge_samples_total";
const DRIVER_ERRORS: &str = "simcorp_driver_bridge_driver_errors_total";
const COMMANDS: &str = "simcorp_driver_bridge_commands_total";
const PUBLISHED: &str = "simcorp_driver_bridge_messages_published_total";
const OUTBOX_DEPTH: &str = "simcorp_driver_bridge_outbox_messages";
const OUTBOX_DROPPED: &str = "simcorp_driver_bridge_outbox_dropped_total";
const SIGNING_FAILURES: &str = "simcorp_driver_bridge_signing_failures_total";
const CONNECTED: &str = "simcorp_driver_bridge_mqtt_connected";

pub(crate) fn sample(device: &str) {
    counter!(SAMPLES, "device" => device.to_owned()).increment(1);
}

pub(crate) fn driver_error(device: &str) {
    counter!(DRIVER_ERRORS, "device" => device.to_owned()).increment(1);
}

/// `reason` is `""` for an applied command.
pub(crate) fn command(outcome: &'static str, reason: &'static str) {
    counter!(COMMANDS, "outcome" => outcome, "reason" => reason).increment(1);
}

pub(crate) fn published() {
    counter!(PUBLISHED).increment(1);
}

pub(crate) fn outbox_depth(n: u64) {
    gauge!(OUTBOX_DEPTH).set(n as f64);
}

pub(crate) fn outbox_dropped() {
    counter!(OUTBOX_DROPPED).increment(1);
}

pub(crate) fn signing_failed() {
    counter!(SIGNING_FAILURES).increment(1);
}

pub(crate) fn connected(up: bool) {
    gauge!(CONNECTED).set(if up { 1.0 } else { 0.0 });
}

/// Describes driver-bridge's metrics (and the MQTT client's), registering them at zero.
pub(crate) fn describe() {
    mqtt::metrics::describe();
    describe_counter!(
        SAMPLES,
        Unit::Count,
        "Samples read from the devices' drivers."
    );
    describe_counter!(
        DRIVER_ERRORS,
        Unit::Count,
        "Failed driver reads and connects (the roaster unreachable or refusing)."
    );
    describe_counter!(
        COMMANDS,
        Unit::Count,
        "Commands answered, by outcome (applied, refused) and refusal reason."
    );
    describe_counter!(
        PUBLISHED,
        Unit::Count,
        "Messages acknowledged by the broker and removed from the outbox."
    );
    describe_gauge!(
        OUTBOX_DEPTH,
        Unit::Count,
        "Messages in the on-disk outbox, waiting for the broker."
    );
    describe_counter!(
        OUTBOX_DROPPED,
        Unit::Count,
        "Messages dropped because the outbox was full."
    );
    describe_counter!(
        SIGNING_FAILURES,
        Unit::Count,
        "Messages sent unsigned because the device key could not sign (the HSM unavailable)."
    );
    counter!(SIGNING_FAILURES).increment(0);
    describe_gauge!(
        CONNECTED,
        Unit::Count,
        "1 while the outbox sender is connected to the broker."
    );
    counter!(PUBLISHED).increment(0);
    counter!(OUTBOX_DROPPED).increment(0);
    gauge!(OUTBOX_DEPTH).set(0.0);
    gauge!(CONNECTED).set(0.0);
}
