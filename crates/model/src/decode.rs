//! Decoding untrusted payloads into validated [`Point`]s and [`SessionEvent`]s.
//!
//! Each point is decoded in one pass with a hand-written serde visitor rather than a derived
//! struct: a derived struct reports "invalid type: string, expected u64" without saying which
//! field, and an intermediate `serde_json::Value` would double the work on the hot path.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

use crate::reject::JsonKind;
use crate::{Channels, Point, Rejection, SessionEvent, SessionState, valid_id};

/// Bounds applied while decoding. The defaults suit real roasters (1–2 Hz, a handful of channels)
/// with generous headroom; all are configurable in the ingestion service.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// Largest accepted payload, in bytes.
    pub max_payload_bytes: usize,
    /// Largest number of points in one frame.
    pub max_frame_points: usize,
    /// Largest number of channels in one point.
    pub max_channels: usize,
    /// How far before the time of receipt `ts` may lie (devices buffer while offline).
    pub max_past_ms: i64,
    /// How far after the time of receipt `ts` may lie (clock skew).
    pub max_future_ms: i64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_payload_bytes: 256 * 1024,
            max_frame_points: 1000,
            max_channels: 64,
            max_past_ms: 7 * 24 * 3600 * 1000,
            max_future_ms: 5 * 60 * 1000,
        }
    }
}

/// The result of decoding a telemetry message that was at least well-formed JSON of the right
/// shape: the valid points, and each invalid point of a frame with its reason.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Decoded {
    pub points: Vec<Point>,
    pub rejected: Vec<RejectedPoint>,
}

/// One point of a frame that failed validation; the rest of the frame is still accepted.
#[derive(Debug, Clone, PartialEq)]
pub struct RejectedPoint {
    pub index: usize,
    /// The point's own JSON text, for the dead-letter table.
    pub raw: String,
    pub rejection: Rejection,
}

/// Decodes a telemetry payload from `roasters/{device_id}/telemetry`.
///
/// A single object is all-or-nothing: `Err` says why it was refused. A frame (an array) is
/// decoded point by point: malformed JSON or a bad frame shape refuses the whole message, but
/// one invalid point only refuses that point ([`Decoded::rejected`]) so that good readings are
/// never held hostage by a bad one.
pub fn decode_telemetry(
    device_id: &str,
    payload: &[u8],
    received_ms: i64,
    limits: &Limits,
) -> Result<Decoded, Rejection> {
    check_size(payload, limits)?;
    // A signature line is the receiver's to check (crate::signed).
    let payload = crate::signed::split(payload).0;
    let ctx = Ctx {
        device_id,
        received_ms,
        limits,
    };
    match payload.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'[') => {
            let elems: Vec<&RawValue> =
                serde_json::from_slice(payload).map_err(|e| json_error(&e, payload))?;
            if elems.is_empty() {
                return Err(Rejection::EmptyFrame);
            }
            if elems.len() > limits.max_frame_points {
                return Err(Rejection::FrameTooLarge {
                    count: elems.len(),
                    limit: limits.max_frame_points,
                });
            }
            let mut out = Decoded {
                points: Vec::with_capacity(elems.len()),
                rejected: Vec::new(),
            };
            for (index, raw) in elems.into_iter().enumerate() {
                match ctx.point(raw.get().as_bytes()) {
                    Ok(p) => out.points.push(p),
                    Err(rejection) => out.rejected.push(RejectedPoint {
                        index,
                        raw: raw.get().to_owned(),
                        rejection,
                    }),
                }
            }
            Ok(out)
        }
        _ => ctx.point(payload).map(|p| Decoded {
            points: vec![p],
            rejected: Vec::new(),
        }),
    }
}

/// Decodes a session lifecycle payload from `roasters/{device_id}/session`.
pub fn decode_session(
    device_id: &str,
    payload: &[u8],
    received_ms: i64,
    limits: &Limits,
) -> Result<SessionEvent, Rejection> {
    check_size(payload, limits)?;
    let payload = crate::signed::split(payload).0;
    let ctx = Ctx {
        device_id,
        received_ms,
        limits,
    };
    let mut de = serde_json::Deserializer::from_slice(payload);
    let parsed = de
        .deserialize_any(SessionVisitor)
        .and_then(|v| de.end().map(|()| v));
    let raw = parsed.map_err(|e| json_error(&e, payload))??;
    let session = ctx.session_id(raw.session)?;
    let state = match raw.state {
        None => return Err(Rejection::MissingField("state")),
        Some(Any::Str(s)) if s == "start" => SessionState::Start,
        Some(Any::Str(s)) if s == "end" => SessionState::End,
        Some(Any::Str(s)) => return Err(Rejection::BadSessionState(s.chars().take(40).collect())),
        Some(other) => return Err(wrong_type("state", "a string", other.kind())),
    };
    let ts_ms = ctx.ts(raw.ts)?;
    // PostgreSQL refuses U+0000 in text and jsonb: let it through and the batch carrying it
    // could never be committed, stalling everything behind it.
    if let Some(key) = raw
        .metadata
        .iter()
        .find_map(|(k, v)| has_nul(k, v).then_some(k))
    {
        return Err(Rejection::NulCharacter(format!(
            "metadata field `{}`",
            key.replace('\0', "")
        )));
    }
    Ok(SessionEvent {
        device_id: device_id.to_owned(),
        session,
        state,
        ts_ms,
        metadata: raw.metadata,
        received_ms,
    })
}

pub(crate) fn has_nul(key: &str, value: &serde_json::Value) -> bool {
    fn walk(v: &serde_json::Value) -> bool {
        match v {
            serde_json::Value::String(s) => s.contains('\0'),
            serde_json::Value::Array(a) => a.iter().any(walk),
            serde_json::Value::Object(o) => o.iter().any(|(k, v)| k.contains('\0') || walk(v)),
            _ => false,
        }
    }
    key.contains('\0') || walk(value)
}

pub(crate) fn check_size(payload: &[u8], limits: &Limits) -> Result<(), Rejection> {
    if payload.len() > limits.max_payload_bytes {
        return Err(Rejection::PayloadTooLarge {
            size: payload.len(),
            limit: limits.max_payload_bytes,
        });
    }
    Ok(())
}

struct Ctx<'a> {
    device_id: &'a str,
    received_ms: i64,
    limits: &'a Limits,
}

impl Ctx<'_> {
    fn point(&self, bytes: &[u8]) -> Result<Point, Rejection> {
        let mut de = serde_json::Deserializer::from_slice(bytes);
        let parsed = de
            .deserialize_any(PointVisitor {
                max_channels: self.limits.max_channels,
            })
            .and_then(|v| de.end().map(|()| v));
        let raw = parsed.map_err(|e| json_error(&e, bytes))??;
        let session = self.session_id(raw.session)?;
        let seq = match raw.seq {
            None => return Err(Rejection::MissingField("seq")),
            Some(Any::U64(v)) if v <= i64::MAX as u64 => v,
            Some(Any::U64(v)) => return Err(Rejection::SeqOutOfRange(v)),
            Some(other) => {
                return Err(wrong_type("seq", "an unsigned integer", other.kind()));
            }
        };
        let ts_ms = self.ts(raw.ts)?;
        let channels = raw.channels.ok_or(Rejection::MissingField("channels"))?;
        if channels.is_empty() {
            return Err(Rejection::NoChannels);
        }
        Ok(Point {
            device_id: self.device_id.to_owned(),
            session,
            seq,
            ts_ms,
            channels,
            received_ms: self.received_ms,
        })
    }

    fn session_id(&self, raw: Option<Any<'_>>) -> Result<String, Rejection> {
        match raw {
            None => Err(Rejection::MissingField("session")),
            Some(Any::Str(s)) if valid_id(&s) => Ok(s.into_owned()),
            Some(Any::Str(s)) => Err(Rejection::BadId {
                what: "session",
                value: s.chars().take(80).collect(),
            }),
            Some(other) => Err(wrong_type("session", "a string", other.kind())),
        }
    }

    fn ts(&self, raw: Option<Any<'_>>) -> Result<i64, Rejection> {
        let ts = match raw {
            None => return Err(Rejection::MissingField("ts")),
            Some(Any::U64(v)) => i64::try_from(v).unwrap_or(i64::MAX),
            Some(Any::I64(v)) => v,
            Some(other) => {
                return Err(wrong_type(
                    "ts",
                    "an integer (Unix epoch milliseconds)",
                    other.kind(),
                ));
            }
        };
        check_ts(ts, self.received_ms, self.limits)
    }
}

/// Whether `ts` lies within the window around the time of receipt that `limits` allow.
pub(crate) fn check_ts(ts: i64, received_ms: i64, limits: &Limits) -> Result<i64, Rejection> {
    let age = received_ms.saturating_sub(ts);
    if age > limits.max_past_ms {
        return Err(Rejection::TsTooOld {
            ts,
            age_s: age / 1000,
            limit_s: limits.max_past_ms / 1000,
        });
    }
    if -age > limits.max_future_ms {
        return Err(Rejection::TsInFuture {
            ts,
            ahead_s: -age / 1000,
            limit_s: limits.max_future_ms / 1000,
        });
    }
    Ok(ts)
}

fn wrong_type(field: &str, expected: &'static str, found: JsonKind) -> Rejection {
    Rejection::WrongType {
        field: field.to_owned(),
        expected,
        found,
    }
}

/// Maps a serde_json syntax error to a rejection. JSON has no NaN or Infinity, so a device that
/// sends them produces a syntax error; it is reported as `not_finite`, which is what happened.
pub(crate) fn json_error(e: &serde_json::Error, payload: &[u8]) -> Rejection {
    let text = e.to_string();
    if text.contains("number out of range") || contains_non_finite_literal(payload) {
        Rejection::NotFinite("a number in the payload".into())
    } else {
        Rejection::MalformedJson(text)
    }
}

/// Whether a bare `NaN` or `Infinity` token appears outside string literals.
fn contains_non_finite_literal(payload: &[u8]) -> bool {
    let mut in_string = false;
    let mut escaped = false;
    for (i, &b) in payload.iter().enumerate() {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'N' if payload[i..].starts_with(b"NaN") => return true,
            b'I' if payload[i..].starts_with(b"Infinity") => return true,
            _ => {}
        }
    }
    false
}

/// Any JSON value, keeping only what validation needs (nested containers are skipped).
enum Any<'a> {
    Null,
    Bool,
    U64(u64),
    I64(i64),
    F64(f64),
    Str(Cow<'a, str>),
    Array,
    Object,
}

impl Any<'_> {
    fn kind(&self) -> JsonKind {
        match self {
            Any::Null => JsonKind::Null,
            Any::Bool => JsonKind::Bool,
            Any::U64(_) | Any::I64(_) | Any::F64(_) => JsonKind::Number,
            Any::Str(_) => JsonKind::String,
            Any::Array => JsonKind::Array,
            Any::Object => JsonKind::Object,
        }
    }
}

impl<'de> de::Deserialize<'de> for Any<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Any<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(Any::Null)
            }
            fn visit_none<E>(self) -> Result<Self::Value, E> {
                Ok(Any::Null)
            }
            fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
                Ok(Any::Bool)
            }
            fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
                Ok(Any::U64(v))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
                Ok(Any::I64(v))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
                Ok(Any::F64(v))
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Any::Str(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Any::Str(Cow::Owned(v.to_owned())))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Any::Array)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Any::Object)
            }
        }
        d.deserialize_any(V)
    }
}

/// A top-level value that was not an object; visiting it yields `NotAnObject`.
macro_rules! not_an_object {
    () => {
        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok(Err(Rejection::NotAnObject(JsonKind::Null)))
        }
        fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
            Ok(Err(Rejection::NotAnObject(JsonKind::Bool)))
        }
        fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
            Ok(Err(Rejection::NotAnObject(JsonKind::Number)))
        }
        fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
            Ok(Err(Rejection::NotAnObject(JsonKind::Number)))
        }
        fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
            Ok(Err(Rejection::NotAnObject(JsonKind::Number)))
        }
        fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
            Ok(Err(Rejection::NotAnObject(JsonKind::String)))
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            Ok(Err(Rejection::NotAnObject(JsonKind::Array)))
        }
    };
}

struct RawPoint<'a> {
    session: Option<Any<'a>>,
    seq: Option<Any<'a>>,
    ts: Option<Any<'a>>,
    channels: Option<Channels>,
}

struct PointVisitor {
    max_channels: usize,
}

impl<'de> Visitor<'de> for PointVisitor {
    type Value = Result<RawPoint<'de>, Rejection>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a telemetry point object")
    }

    not_an_object!();

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut raw = RawPoint {
            session: None,
            seq: None,
            ts: None,
            channels: None,
        };
        let mut failure = None;
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            if failure.is_some() {
                // Keep consuming so that a syntax error later in the payload still wins.
                map.next_value::<IgnoredAny>()?;
                continue;
            }
            match key.as_ref() {
                "session" => raw.session = Some(map.next_value()?),
                "seq" => raw.seq = Some(map.next_value()?),
                "ts" => raw.ts = Some(map.next_value()?),
                "channels" => match map.next_value_seed(ChannelsSeed(self.max_channels))? {
                    Ok(c) => raw.channels = Some(c),
                    Err(r) => failure = Some(r),
                },
                // Unknown fields are ignored so that devices may add fields without breaking
                // older ingestion (see docs/protocol.md, "Compatibility").
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(match failure {
            Some(r) => Err(r),
            None => Ok(raw),
        })
    }
}

struct ChannelsSeed(usize);

impl<'de> DeserializeSeed<'de> for ChannelsSeed {
    type Value = Result<Channels, Rejection>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ChannelsSeed {
    type Value = Result<Channels, Rejection>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object of channel readings")
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Err(wrong_type("channels", "an object", JsonKind::Null)))
    }
    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Err(wrong_type("channels", "an object", JsonKind::Bool)))
    }
    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(Err(wrong_type("channels", "an object", JsonKind::Number)))
    }
    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(Err(wrong_type("channels", "an object", JsonKind::Number)))
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(Err(wrong_type("channels", "an object", JsonKind::Number)))
    }
    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(Err(wrong_type("channels", "an object", JsonKind::String)))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Err(wrong_type("channels", "an object", JsonKind::Array)))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut channels = Channels::default();
        let mut count = 0usize;
        let mut failure = None;
        while let Some(name) = map.next_key::<Cow<'de, str>>()? {
            if failure.is_some() {
                map.next_value::<IgnoredAny>()?;
                continue;
            }
            count += 1;
            if count > self.0 {
                failure = Some(Rejection::TooManyChannels {
                    count,
                    limit: self.0,
                });
                map.next_value::<IgnoredAny>()?;
                continue;
            }
            let value = match map.next_value::<Any<'de>>()? {
                Any::U64(v) => v as f64,
                Any::I64(v) => v as f64,
                Any::F64(v) if v.is_finite() => v,
                Any::F64(_) => {
                    failure = Some(Rejection::NotFinite(format!("channel `{name}`")));
                    continue;
                }
                // A null reading means "no value" (e.g. a disconnected probe), not an error.
                Any::Null => {
                    count -= 1;
                    continue;
                }
                other => {
                    failure = Some(wrong_type(
                        &format!("channels.{name}"),
                        "a number",
                        other.kind(),
                    ));
                    continue;
                }
            };
            match name.as_ref() {
                "bt" => channels.bt = Some(value),
                "et" => channels.et = Some(value),
                "gas" => channels.gas = Some(value),
                "air" => channels.air = Some(value),
                "drum" => channels.drum = Some(value),
                other if valid_channel_name(other) => {
                    channels.extra.insert(other.to_owned(), value);
                }
                other => {
                    failure = Some(Rejection::BadChannelName(other.chars().take(40).collect()))
                }
            }
        }
        if failure.is_none() && count > self.0 {
            failure = Some(Rejection::TooManyChannels {
                count,
                limit: self.0,
            });
        }
        Ok(match failure {
            Some(r) => Err(r),
            None => Ok(channels),
        })
    }
}

pub(crate) fn valid_channel_name(name: &str) -> bool {
    (1..=32).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

struct RawSession<'a> {
    session: Option<Any<'a>>,
    state: Option<Any<'a>>,
    ts: Option<Any<'a>>,
    metadata: serde_json::Map<String, serde_json::Value>,
}

struct SessionVisitor;

impl<'de> Visitor<'de> for SessionVisitor {
    type Value = Result<RawSession<'de>, Rejection>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a session object")
    }

    not_an_object!();

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut raw = RawSession {
            session: None,
            state: None,
            ts: None,
            metadata: serde_json::Map::new(),
        };
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            match key.as_ref() {
                "session" => raw.session = Some(map.next_value()?),
                "state" => raw.state = Some(map.next_value()?),
                "ts" => raw.ts = Some(map.next_value()?),
                _ => {
                    let value: serde_json::Value = map.next_value()?;
                    raw.metadata.insert(key.into_owned(), value);
                }
            }
        }
        Ok(Ok(raw))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_780_000_000_000;

    fn telemetry(payload: &str) -> Result<Decoded, Rejection> {
        decode_telemetry("r-1", payload.as_bytes(), NOW, &Limits::default())
    }

    /// Checks that a single-point payload is refused with `code`.
    fn check_rejected(payload: &str, code: &str) {
        match telemetry(payload) {
            Err(r) => assert_eq!(r.code(), code, "{payload}: {r}"),
            Ok(d) => panic!("{payload}: accepted {d:?}, expected {code}"),
        }
    }

    #[test]
    fn decodes_a_contract_point() {
        let d = telemetry(&format!(
            r#"{{"session":"s-1","seq":7,"ts":{NOW},"channels":{{"bt":201.3,"et":240,"gas":70.0,"air":35,"drum":60,"ror":9.5}}}}"#
        ))
        .unwrap();
        assert_eq!(d.rejected, vec![]);
        let p = &d.points[0];
        assert_eq!(
            (p.device_id.as_str(), p.session.as_str(), p.seq, p.ts_ms),
            ("r-1", "s-1", 7, NOW)
        );
        assert_eq!(p.channels.bt, Some(201.3));
        assert_eq!(p.channels.et, Some(240.0));
        assert_eq!(p.channels.extra.get("ror"), Some(&9.5));
        assert_eq!(p.received_ms, NOW);
    }

    #[test]
    fn round_trips_through_the_wire_form() {
        let p = Point {
            device_id: "r-1".into(),
            session: "s".into(),
            seq: 3,
            ts_ms: NOW,
            channels: Channels {
                bt: Some(1.5),
                extra: [("x1".to_string(), -2.0)].into(),
                ..Channels::default()
            },
            received_ms: NOW,
        };
        let d = decode_telemetry("r-1", &p.to_json(), NOW, &Limits::default()).unwrap();
        assert_eq!(d.points, vec![p.clone()]);
        let frame = Point::frame_json(&[p.clone(), p.clone()]);
        let d = decode_telemetry("r-1", &frame, NOW, &Limits::default()).unwrap();
        assert_eq!(d.points, vec![p.clone(), p]);
    }

    #[test]
    fn refuses_bad_points_with_a_reason() {
        let ok_rest = format!(r#""ts":{NOW},"channels":{{"bt":1}}"#);
        check_rejected("{", "malformed_json");
        check_rejected("not json", "malformed_json");
        check_rejected(r#"{"session":"s","seq":1}}"#, "malformed_json");
        check_rejected("42", "not_an_object");
        check_rejected(r#""text""#, "not_an_object");
        check_rejected("null", "not_an_object");
        check_rejected(&format!(r#"{{"seq":1,{ok_rest}}}"#), "missing_field");
        check_rejected(&format!(r#"{{"session":"s",{ok_rest}}}"#), "missing_field");
        check_rejected(
            r#"{"session":"s","seq":1,"channels":{"bt":1}}"#,
            "missing_field",
        );
        check_rejected(
            &format!(r#"{{"session":"s","seq":1,"ts":{NOW}}}"#),
            "missing_field",
        );
        check_rejected(
            &format!(r#"{{"session":5,"seq":1,{ok_rest}}}"#),
            "wrong_type",
        );
        check_rejected(
            &format!(r#"{{"session":"s","seq":"1",{ok_rest}}}"#),
            "wrong_type",
        );
        check_rejected(
            &format!(r#"{{"session":"s","seq":-1,{ok_rest}}}"#),
            "wrong_type",
        );
        check_rejected(
            &format!(r#"{{"session":"s","seq":1.5,{ok_rest}}}"#),
            "wrong_type",
        );
        check_rejected(
            r#"{"session":"s","seq":1,"ts":"now","channels":{"bt":1}}"#,
            "wrong_type",
        );
        check_rejected(
            &format!(r#"{{"session":"s","seq":1,"ts":{NOW},"channels":[1]}}"#),
            "wrong_type",
        );
        check_rejected(
            &format!(r#"{{"session":"s","seq":1,"ts":{NOW},"channels":{{"bt":"hot"}}}}"#),
            "wrong_type",
        );
        check_rejected(
            &format!(r#"{{"session":"s","seq":1,"ts":{NOW},"channels":{{"bt":NaN}}}}"#),
            "not_finite",
        );
        check_rejected(
            &format!(r#"{{"session":"s","seq":1,"ts":{NOW},"channels":{{"bt":Infinity}}}}"#),
            "not_finite",
        );
        check_rejected(
            &format!(r#"{{"session":"s","seq":1,"ts":{NOW},"channels":{{"bt":-Infinity}}}}"#),
            "not_finite",
        );
        check_rejected(
            &format!(r#"{{"session":"s","seq":1,"ts":{NOW},"channels":{{"bt":1e999}}}}"#),
            "not_finite",
        );
        check_rejected(
            &format!(r#"{{"session":"s","seq":9223372036854775808,{ok_rest}}}"#),
            "seq_out_of_range",
        );
        check_rejected(
            r#"{"session":"s","seq":1,"ts":1000,"channels":{"bt":1}}"#,
            "ts_too_old",
        );
        check_rejected(
            r#"{"session":"s","seq":1,"ts":-5,"channels":{"bt":1}}"#,
            "ts_too_old",
        );
        check_rejected(
            &format!(
                r#"{{"session":"s","seq":1,"ts":{},"channels":{{"bt":1}}}}"#,
                NOW + 3_600_000
            ),
            "ts_in_future",
        );
        check_rejected(
            &format!(r#"{{"session":"s","seq":1,"ts":{NOW},"channels":{{}}}}"#),
            "no_channels",
        );
        check_rejected(
            &format!(r#"{{"session":"s","seq":1,"ts":{NOW},"channels":{{"bt":null}}}}"#),
            "no_channels",
        );
        check_rejected(
            &format!(r#"{{"session":"s","seq":1,"ts":{NOW},"channels":{{"Bad Name":1}}}}"#),
            "bad_channel_name",
        );
        check_rejected(
            &format!(r#"{{"session":"a/b","seq":1,{ok_rest}}}"#),
            "bad_id",
        );
        check_rejected(&format!(r#"{{"session":"","seq":1,{ok_rest}}}"#), "bad_id");
        let many: Vec<String> = (0..65).map(|i| format!(r#""c{i}":1"#)).collect();
        check_rejected(
            &format!(
                r#"{{"session":"s","seq":1,"ts":{NOW},"channels":{{{}}}}}"#,
                many.join(",")
            ),
            "too_many_channels",
        );
        check_rejected("[]", "empty_frame");
        check_rejected(
            &format!("[{}]", vec!["{}"; 1001].join(",")),
            "frame_too_large",
        );
        check_rejected(&" ".repeat(256 * 1024 + 1), "payload_too_large");
    }

    #[test]
    fn strings_containing_nan_are_not_mistaken_for_literals() {
        check_rejected(r#"{"session":"NaN","seq":1,"ts":"Infinity"}"#, "wrong_type");
    }

    #[test]
    fn unknown_fields_are_ignored() {
        let d = telemetry(&format!(
            r#"{{"v":2,"session":"s","seq":1,"ts":{NOW},"channels":{{"bt":1}},"fw":{{"a":[1,2]}}}}"#
        ))
        .unwrap();
        assert_eq!(d.points.len(), 1);
    }

    #[test]
    fn a_bad_point_in_a_frame_refuses_only_that_point() {
        let d = telemetry(&format!(
            r#"[{{"session":"s","seq":1,"ts":{NOW},"channels":{{"bt":1}}}},{{"session":"s","seq":2}},7,{{"session":"s","seq":3,"ts":{NOW},"channels":{{"bt":3}}}}]"#
        ))
        .unwrap();
        assert_eq!(
            d.points.iter().map(|p| p.seq).collect::<Vec<_>>(),
            vec![1, 3]
        );
        let codes: Vec<_> = d
            .rejected
            .iter()
            .map(|r| (r.index, r.rejection.code()))
            .collect();
        assert_eq!(codes, vec![(1, "missing_field"), (2, "not_an_object")]);
        assert_eq!(d.rejected[0].raw, r#"{"session":"s","seq":2}"#);
    }

    #[test]
    fn decodes_sessions_with_metadata() {
        let s = decode_session(
            "r-1",
            format!(
                r#"{{"session":"s-1","state":"start","ts":{NOW},"bean":"kenya","batch_g":250}}"#
            )
            .as_bytes(),
            NOW,
            &Limits::default(),
        )
        .unwrap();
        assert_eq!(s.state, SessionState::Start);
        assert_eq!(s.metadata["bean"], "kenya");
        let back = decode_session("r-1", &s.to_json(), NOW, &Limits::default()).unwrap();
        assert_eq!(back, s);
    }

    #[test]
    fn refuses_bad_sessions() {
        let check = |payload: String, code: &str| {
            let got = decode_session("r-1", payload.as_bytes(), NOW, &Limits::default());
            assert_eq!(got.err().map(|r| r.code()), Some(code), "{payload}");
        };
        check(
            format!(r#"{{"session":"s","state":"paused","ts":{NOW}}}"#),
            "bad_session_state",
        );
        check(
            format!(r#"{{"session":"s","state":1,"ts":{NOW}}}"#),
            "wrong_type",
        );
        check(format!(r#"{{"session":"s","ts":{NOW}}}"#), "missing_field");
        check(r#"{"session":"s","state":"end"}"#.into(), "missing_field");
        check("[1]".into(), "not_an_object");
        check("{".into(), "malformed_json");
    }
}

#[cfg(test)]
mod float_tests {
    use super::*;

    /// serde_json's default float parser can be one ULP off; readings must survive exactly.
    #[test]
    fn channel_values_round_trip_bit_for_bit() {
        let now = 1_780_000_000_000;
        for v in [
            90.71428571428571_f64,
            0.1,
            1.0 / 3.0,
            201.29999999999998,
            5e-324,
            1.7976931348623157e308,
        ] {
            let payload =
                format!(r#"{{"session":"s","seq":1,"ts":{now},"channels":{{"ror":{v:?}}}}}"#);
            let d = decode_telemetry("r", payload.as_bytes(), now, &Limits::default()).unwrap();
            assert_eq!(
                d.points[0].channels.extra["ror"].to_bits(),
                v.to_bits(),
                "{v:?}"
            );
        }
    }
}
