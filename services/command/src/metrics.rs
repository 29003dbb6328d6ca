//! Metrics of the command service (names: `simcorp_command_*`).

use metrics::{Unit, counter, describe_counter};

const TRANSITIONS: &str = "simcorp_command_transitions_total";
const REFUSED: &str = "simcorp_command_proposals_refused_total";
const BAD_ACKS: &str = "simcorp_command_acks_refused_total";

pub(crate) fn transition(to: &'static str) {
    counter!(TRANSITIONS, "to" => to).increment(1);
}

pub(crate) fn proposal_refused(reason: &'static str) {
    counter!(REFUSED, "reason" => reason).increment(1);
}

pub(crate) fn ack_refused(reason: &'static str) {
    counter!(BAD_ACKS, "reason" => reason).increment(1);
}

/// Describes the service's metrics (and the MQTT client's).
pub(crate) fn describe() {
    mqtt::metrics::describe();
    describe_counter!(
        TRANSITIONS,
        Unit::Count,
        "Command state transitions, by the state entered."
    );
    describe_counter!(
        REFUSED,
        Unit::Count,
        "Proposals refused (safety limits, session), by reason."
    );
    describe_counter!(
        BAD_ACKS,
        Unit::Count,
        "Acknowledgements refused (unknown command or key, bad signature, revoked key), by reason."
    );
    counter!(BAD_ACKS, "reason" => "bad_signature").increment(0);
}
