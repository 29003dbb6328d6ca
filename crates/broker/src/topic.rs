//! Topic names and filters.
//!
//! These are our own instead of `rumqttc::mqttbytes::{matches, valid_filter}`: its `matches`
//! slices `topic[..1]`, which panics when a topic starts with a multi-byte character (a topic
//! comes straight from the network), and it refuses every `$` topic even for a filter like
//! `$SYS/#`, which MQTT allows; only filters *starting* with a wildcard must skip `$` topics.

/// A parsed SUBSCRIBE filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Filter<'a> {
    Normal(&'a str),
    /// `$share/{group}/{filter}`.
    Shared {
        filter: &'a str,
    },
}

/// A topic a client may PUBLISH to: non-empty, no wildcards, no NUL.
pub(crate) fn valid_topic_name(topic: &str) -> bool {
    !topic.is_empty() && !topic.contains(['+', '#', '\0'])
}

/// MQTT 3.1.1 §4.7: `#` only as the whole last level, `+` only as a whole level.
pub(crate) fn valid_filter(filter: &str) -> bool {
    if filter.is_empty() || filter.contains('\0') {
        return false;
    }
    let mut levels = filter.split('/').peekable();
    while let Some(level) = levels.next() {
        let last = levels.peek().is_none();
        if level.contains('#') && (level != "#" || !last) {
            return false;
        }
        if level.contains('+') && level != "+" {
            return false;
        }
    }
    true
}

/// Parses a SUBSCRIBE filter; `None` when it is invalid.
pub(crate) fn parse_filter(raw: &str) -> Option<Filter<'_>> {
    if let Some(rest) = raw.strip_prefix("$share/") {
        let (group, filter) = rest.split_once('/')?;
        let group_ok = !group.is_empty() && !group.contains(['+', '#', '\0']);
        return (group_ok && valid_filter(filter)).then_some(Filter::Shared { filter });
    }
    valid_filter(raw).then_some(Filter::Normal(raw))
}

/// Whether `topic` (a valid topic name) matches `filter` (a valid filter).
pub(crate) fn matches(topic: &str, filter: &str) -> bool {
    // MQTT 3.1.1 §4.7.2: `$` topics are for the server; `#` or `+/...` must not see them.
    if topic.starts_with('$') && filter.starts_with(['+', '#']) {
        return false;
    }
    let mut topic_levels = topic.split('/');
    for f in filter.split('/') {
        if f == "#" {
            return true;
        }
        match topic_levels.next() {
            Some(t) if f == "+" || f == t => {}
            _ => return false,
        }
    }
    topic_levels.next().is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_are_validated() {
        for ok in [
            "a", "a/b", "#", "+", "a/#", "a/+/c", "+/+", "/", "a//b", "$SYS/#",
        ] {
            assert!(valid_filter(ok), "{ok}");
        }
        for bad in ["", "a#", "a/#/b", "a+", "a/b+/c", "#/a", "a/##", "a\0b"] {
            assert!(!valid_filter(bad), "{bad}");
        }
    }

    #[test]
    fn shared_filters_are_parsed() {
        assert_eq!(
            parse_filter("$share/g/roasters/+/telemetry"),
            Some(Filter::Shared {
                filter: "roasters/+/telemetry"
            })
        );
        assert_eq!(parse_filter("$share/g"), None);
        assert_eq!(parse_filter("$share//a"), None);
        assert_eq!(parse_filter("$share/g+/a"), None);
        assert_eq!(parse_filter("$share/g/a#"), None);
        assert_eq!(parse_filter("a/+"), Some(Filter::Normal("a/+")));
    }

    #[test]
    fn topics_match_filters() {
        assert!(matches("a/b/c", "a/b/c"));
        assert!(matches("a/b/c", "a/+/c"));
        assert!(matches("a/b/c", "a/#"));
        assert!(matches("a", "a/#"));
        assert!(matches("a/b/c", "#"));
        assert!(matches("/x", "+/x"));
        assert!(!matches("a/b", "a/b/c"));
        assert!(!matches("a/b/c", "a/b"));
        assert!(!matches("a/b/c", "a/+"));
        assert!(!matches("a/b", "a/c"));
    }

    #[test]
    fn dollar_topics_skip_leading_wildcards_only() {
        assert!(!matches("$SYS/x", "#"));
        assert!(!matches("$SYS/x", "+/x"));
        assert!(matches("$SYS/x", "$SYS/#"));
        assert!(matches("$SYS/x", "$SYS/+"));
        assert!(matches("a/$x", "a/+"));
    }

    #[test]
    fn multibyte_topics_do_not_panic() {
        assert!(matches("é/x", "é/+"));
        assert!(matches("é/x", "#"));
        assert!(!matches("é", "e"));
    }
}
