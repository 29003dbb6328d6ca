//! Every metric of the embedded broker, in one place (names: `simcorp_broker_*`).

use metrics::{Unit, counter, describe_counter};

const QOS0_DROPPED: &str = "simcorp_broker_qos0_dropped_total";

/// Describes the broker's metrics to the installed recorder. The broker is no service of its
/// own: whoever runs it (`simcorp up`) calls this once the recorder is installed.
pub fn describe() {
    describe_counter!(
        QOS0_DROPPED,
        Unit::Count,
        "QoS 0 messages dropped because their session's queue was full or its client offline."
    );
}

pub(crate) fn qos0_dropped() {
    counter!(QOS0_DROPPED).increment(1);
}
