use std::fmt;

/// Why a message, or one point of a frame, was refused.
///
/// `code()` is stable (metric labels, the dead-letter table's `reason_code`); the `Display` text
/// is for humans and may change.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Rejection {
    #[error(
        "topic {0:?} is not part of the device contract (roasters/{{device_id}}/telemetry|session|events)"
    )]
    BadTopic(String),
    #[error("invalid {what} {value:?}: expected 1-64 characters of [A-Za-z0-9._:-]")]
    BadId { what: &'static str, value: String },
    #[error("payload is {size} bytes, over the {limit}-byte limit")]
    PayloadTooLarge { size: usize, limit: usize },
    #[error("payload is not valid JSON: {0}")]
    MalformedJson(String),
    #[error("payload must be a JSON object or an array of objects, found {0}")]
    NotAnObject(JsonKind),
    #[error("frame is an empty array")]
    EmptyFrame,
    #[error("frame has {count} points, over the {limit}-point limit")]
    FrameTooLarge { count: usize, limit: usize },
    #[error("missing field `{0}`")]
    MissingField(&'static str),
    #[error("field `{field}` must be {expected}, found {found}")]
    WrongType {
        field: String,
        expected: &'static str,
        found: JsonKind,
    },
    #[error("{0} is not a finite number (NaN and Infinity are not allowed)")]
    NotFinite(String),
    #[error("field `seq` is {0}, above the largest storable value 9223372036854775807")]
    SeqOutOfRange(u64),
    #[error("ts {ts} is {age_s} s before the time of receipt; the limit is {limit_s} s")]
    TsTooOld { ts: i64, age_s: i64, limit_s: i64 },
    #[error("ts {ts} is {ahead_s} s after the time of receipt; the limit is {limit_s} s")]
    TsInFuture { ts: i64, ahead_s: i64, limit_s: i64 },
    #[error("point has no channel readings")]
    NoChannels,
    #[error("point has {count} channels, over the {limit}-channel limit")]
    TooManyChannels { count: usize, limit: usize },
    #[error("invalid channel name {0:?}: expected 1-32 characters of [a-z0-9_]")]
    BadChannelName(String),
    #[error("field `state` is {0:?}; expected \"start\" or \"end\"")]
    BadSessionState(String),
    #[error(
        "field `kind` is {0:?}; expected one of charge, turning_point, dry_end, fc_start, fc_end, drop"
    )]
    BadEventKind(String),
    #[error("field `{field}` is {value}; {rule}")]
    OutOfRange {
        field: &'static str,
        value: String,
        rule: &'static str,
    },
    #[error("{0} contains a NUL character (\\u0000), which cannot be stored")]
    NulCharacter(String),
    #[error(
        "device is over its limit of {points_per_sec} points/s: its messages are shed until it slows down"
    )]
    RateLimited { points_per_sec: u32 },
    #[error("the message is not signed; this platform requires its devices to sign {0} messages")]
    Unsigned(&'static str),
    #[error("signature refused: {0}")]
    BadSignature(String),
}

impl Rejection {
    /// A stable snake_case identifier for this kind of rejection.
    pub fn code(&self) -> &'static str {
        match self {
            Rejection::BadTopic(_) => "bad_topic",
            Rejection::BadId { .. } => "bad_id",
            Rejection::PayloadTooLarge { .. } => "payload_too_large",
            Rejection::MalformedJson(_) => "malformed_json",
            Rejection::NotAnObject(_) => "not_an_object",
            Rejection::EmptyFrame => "empty_frame",
            Rejection::FrameTooLarge { .. } => "frame_too_large",
            Rejection::MissingField(_) => "missing_field",
            Rejection::WrongType { .. } => "wrong_type",
            Rejection::NotFinite(_) => "not_finite",
            Rejection::SeqOutOfRange(_) => "seq_out_of_range",
            Rejection::TsTooOld { .. } => "ts_too_old",
            Rejection::TsInFuture { .. } => "ts_in_future",
            Rejection::NoChannels => "no_channels",
            Rejection::TooManyChannels { .. } => "too_many_channels",
            Rejection::BadChannelName(_) => "bad_channel_name",
            Rejection::BadSessionState(_) => "bad_session_state",
            Rejection::BadEventKind(_) => "bad_event_kind",
            Rejection::OutOfRange { .. } => "out_of_range",
            Rejection::NulCharacter(_) => "nul_character",
            Rejection::RateLimited { .. } => "rate_limited",
            Rejection::Unsigned(_) => "unsigned",
            Rejection::BadSignature(_) => "bad_signature",
        }
    }

    /// Every code, for pre-registering metric series and documenting them.
    pub const CODES: &'static [&'static str] = &[
        "bad_topic",
        "bad_id",
        "payload_too_large",
        "malformed_json",
        "not_an_object",
        "empty_frame",
        "frame_too_large",
        "missing_field",
        "wrong_type",
        "not_finite",
        "seq_out_of_range",
        "ts_too_old",
        "ts_in_future",
        "no_channels",
        "too_many_channels",
        "bad_channel_name",
        "bad_session_state",
        "bad_event_kind",
        "out_of_range",
        "nul_character",
        "rate_limited",
        "unsigned",
        "bad_signature",
    ];
}

/// The JSON type that was found where another was expected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JsonKind {
    Null,
    Bool,
    Number,
    String,
    Array,
    Object,
}

impl fmt::Display for JsonKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            JsonKind::Null => "null",
            JsonKind::Bool => "a boolean",
            JsonKind::Number => "a number",
            JsonKind::String => "a string",
            JsonKind::Array => "an array",
            JsonKind::Object => "an object",
        })
    }
}
