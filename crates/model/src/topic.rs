use crate::Rejection;

/// What a topic under `roasters/{device_id}/…` carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopicKind {
    /// `roasters/{device_id}/telemetry`: points, one object or a frame (array) of them.
    Telemetry,
    /// `roasters/{device_id}/session`: session start/end.
    Session,
    /// `roasters/{device_id}/events`: roast events inferred by event-inference.
    Events,
    /// `roasters/{device_id}/commands`: commands to the device.
    Commands,
    /// `roasters/{device_id}/commands/ack`: the device's acknowledgements of commands.
    CommandAck,
}

impl TopicKind {
    fn suffix(self) -> &'static str {
        match self {
            TopicKind::Telemetry => "telemetry",
            TopicKind::Session => "session",
            TopicKind::Events => "events",
            TopicKind::Commands => "commands",
            TopicKind::CommandAck => "commands/ack",
        }
    }
}

/// A parsed contract topic; borrows the device id from the topic string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Topic<'a> {
    pub device_id: &'a str,
    pub kind: TopicKind,
}

impl Topic<'_> {
    /// The topic string for a device and kind, e.g. `roasters/r-1/telemetry`.
    pub fn format(device_id: &str, kind: TopicKind) -> String {
        format!("roasters/{device_id}/{}", kind.suffix())
    }
}

/// Parses `roasters/{device_id}/{kind}`; anything else is [`Rejection::BadTopic`], a malformed
/// device id is [`Rejection::BadId`].
pub fn parse_topic(topic: &str) -> Result<Topic<'_>, Rejection> {
    let bad = || Rejection::BadTopic(topic.chars().take(256).collect());
    let rest = topic.strip_prefix("roasters/").ok_or_else(bad)?;
    let (device_id, suffix) = rest.split_once('/').ok_or_else(bad)?;
    let kind = match suffix {
        "telemetry" => TopicKind::Telemetry,
        "session" => TopicKind::Session,
        "events" => TopicKind::Events,
        "commands" => TopicKind::Commands,
        "commands/ack" => TopicKind::CommandAck,
        _ => return Err(bad()),
    };
    if !valid_id(device_id) {
        return Err(Rejection::BadId {
            what: "device_id",
            value: device_id.chars().take(80).collect(),
        });
    }
    Ok(Topic { device_id, kind })
}

/// Device and session ids: 1–64 characters of `[A-Za-z0-9._:-]`.
///
/// Narrow on purpose: ids end up in MQTT topics (no `/`, `+`, `#`), Redis keys, URLs and log
/// lines, and a narrow alphabet keeps all of those unambiguous without escaping.
pub fn valid_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(topic: &str, expected: Result<(&str, TopicKind), &str>) {
        let got = parse_topic(topic).map(|t| (t.device_id, t.kind));
        match (got, expected) {
            (Ok(got), Ok(want)) => assert_eq!(got, want, "{topic}"),
            (Err(e), Err(code)) => assert_eq!(e.code(), code, "{topic}: {e}"),
            (got, want) => panic!("{topic}: got {got:?}, want {want:?}"),
        }
    }

    #[test]
    fn contract_topics() {
        check("roasters/r-1/telemetry", Ok(("r-1", TopicKind::Telemetry)));
        check("roasters/r-1/session", Ok(("r-1", TopicKind::Session)));
        check("roasters/r-1/events", Ok(("r-1", TopicKind::Events)));
        check("roasters/r-1/commands", Ok(("r-1", TopicKind::Commands)));
        check(
            "roasters/r-1/commands/ack",
            Ok(("r-1", TopicKind::CommandAck)),
        );
        check("roasters/r-1/telemetry/extra", Err("bad_topic"));
        check("roasters//telemetry", Err("bad_id"));
        check("roasters/a b/telemetry", Err("bad_id"));
        check("roaster/r-1/telemetry", Err("bad_topic"));
        check("roasters/r-1", Err("bad_topic"));
        check("", Err("bad_topic"));
        check(
            &format!("roasters/{}/telemetry", "x".repeat(65)),
            Err("bad_id"),
        );
    }

    #[test]
    fn format_round_trips() {
        let t = Topic::format("r-9", TopicKind::CommandAck);
        assert_eq!(parse_topic(&t).unwrap().kind, TopicKind::CommandAck);
    }
}
