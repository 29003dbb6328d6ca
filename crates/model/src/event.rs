//! Roast events on `roasters/{device_id}/events`: what event-inference says about a session,
//! for ingestion to store and anyone to follow.
//!
//! ```json
//! {"session": "roast-0042", "kind": "fc_start", "ts": 1795448417111,
//!  "detected_ts": 1795448428000, "bt": 197.8, "et": 221.0, "ror": 6.2,
//!  "method": "bt_prior", "confidence": 0.6}
//! ```
//!
//! An event is identified by `(device_id, session, kind)`: a session has each kind at most
//! once, events are never revised, and a copy (a QoS 1 redelivery, the same event detected
//! again after event-inference restarted) is stored once — the first wins.

use roast::EventKind;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::decode::{check_size, check_ts, json_error};
use crate::reject::JsonKind;
use crate::{Limits, Rejection, valid_id};

/// One roast event, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct RoastEvent {
    pub device_id: String,
    pub session: String,
    pub kind: EventKind,
    /// Device time of the reading the event belongs to, epoch ms.
    pub ts_ms: i64,
    /// When the event was detected (the detector's clock), epoch ms.
    pub detected_ms: i64,
    pub bt: Option<f64>,
    pub et: Option<f64>,
    /// BT's rate of rise when the event was detected, °C/min.
    pub ror: Option<f64>,
    /// How it was found (`bt_break`, `bt_minimum`, `bt_prior`, `session_end`, …).
    pub method: String,
    /// 0–1.
    pub confidence: f64,
    /// When ingestion received it (epoch ms); not part of the wire form.
    pub received_ms: i64,
}

#[derive(Serialize)]
struct Wire<'a> {
    session: &'a str,
    kind: EventKind,
    ts: i64,
    detected_ts: i64,
    bt: Option<f64>,
    et: Option<f64>,
    ror: Option<f64>,
    method: &'a str,
    confidence: f64,
}

impl RoastEvent {
    /// The wire form, as published on `roasters/{device_id}/events`.
    pub fn to_json(&self) -> Vec<u8> {
        let wire = Wire {
            session: &self.session,
            kind: self.kind,
            ts: self.ts_ms,
            detected_ts: self.detected_ms,
            bt: self.bt,
            et: self.et,
            ror: self.ror,
            method: &self.method,
            confidence: self.confidence,
        };
        // Serializing a struct of strings and finite numbers cannot fail.
        serde_json::to_vec(&wire).unwrap_or_default()
    }
}

/// Decodes an event payload from `roasters/{device_id}/events`.
pub fn decode_event(
    device_id: &str,
    payload: &[u8],
    received_ms: i64,
    limits: &Limits,
) -> Result<RoastEvent, Rejection> {
    check_size(payload, limits)?;
    let value: Value = serde_json::from_slice(payload).map_err(|e| json_error(&e, payload))?;
    let Value::Object(fields) = value else {
        return Err(Rejection::NotAnObject(kind_of(&value)));
    };
    let session = match fields.get("session") {
        None => return Err(Rejection::MissingField("session")),
        Some(Value::String(s)) if valid_id(s) => s.clone(),
        Some(Value::String(s)) => {
            return Err(Rejection::BadId {
                what: "session",
                value: s.chars().take(80).collect(),
            });
        }
        Some(other) => return Err(wrong_type("session", "a string", other)),
    };
    let kind = match fields.get("kind") {
        None => return Err(Rejection::MissingField("kind")),
        Some(Value::String(s)) => EventKind::parse(s)
            .ok_or_else(|| Rejection::BadEventKind(s.chars().take(40).collect()))?,
        Some(other) => return Err(wrong_type("kind", "a string", other)),
    };
    let ts_ms = check_ts(epoch_ms(&fields, "ts")?, received_ms, limits)?;
    let detected_ms = check_ts(epoch_ms(&fields, "detected_ts")?, received_ms, limits)?;
    let method = match fields.get("method") {
        None => return Err(Rejection::MissingField("method")),
        Some(Value::String(s))
            if (1..=32).contains(&s.len())
                && s.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_') =>
        {
            s.clone()
        }
        Some(Value::String(s)) => {
            return Err(Rejection::OutOfRange {
                field: "method",
                value: format!("{:?}", s.chars().take(40).collect::<String>()),
                rule: "expected 1-32 characters of [a-z0-9_]",
            });
        }
        Some(other) => return Err(wrong_type("method", "a string", other)),
    };
    let confidence = number(&fields, "confidence")?.ok_or(Rejection::MissingField("confidence"))?;
    if !(0.0..=1.0).contains(&confidence) {
        return Err(Rejection::OutOfRange {
            field: "confidence",
            value: confidence.to_string(),
            rule: "expected 0 to 1",
        });
    }
    Ok(RoastEvent {
        device_id: device_id.to_owned(),
        session,
        kind,
        ts_ms,
        detected_ms,
        bt: number(&fields, "bt")?,
        et: number(&fields, "et")?,
        ror: number(&fields, "ror")?,
        method,
        confidence,
        received_ms,
    })
}

fn epoch_ms(fields: &Map<String, Value>, field: &'static str) -> Result<i64, Rejection> {
    match fields.get(field) {
        None => Err(Rejection::MissingField(field)),
        Some(Value::Number(n)) if n.is_i64() || n.is_u64() => Ok(n.as_i64().unwrap_or(i64::MAX)),
        Some(other) => Err(wrong_type(
            field,
            "an integer (Unix epoch milliseconds)",
            other,
        )),
    }
}

/// An optional finite number (`null` or absent is `None`).
fn number(fields: &Map<String, Value>, field: &'static str) -> Result<Option<f64>, Rejection> {
    match fields.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => match n.as_f64() {
            Some(v) if v.is_finite() => Ok(Some(v)),
            _ => Err(Rejection::NotFinite(format!("field `{field}`"))),
        },
        Some(other) => Err(wrong_type(field, "a number", other)),
    }
}

fn wrong_type(field: &str, expected: &'static str, found: &Value) -> Rejection {
    Rejection::WrongType {
        field: field.to_owned(),
        expected,
        found: kind_of(found),
    }
}

fn kind_of(value: &Value) -> JsonKind {
    match value {
        Value::Null => JsonKind::Null,
        Value::Bool(_) => JsonKind::Bool,
        Value::Number(_) => JsonKind::Number,
        Value::String(_) => JsonKind::String,
        Value::Array(_) => JsonKind::Array,
        Value::Object(_) => JsonKind::Object,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_795_448_500_000;

    fn event() -> RoastEvent {
        RoastEvent {
            device_id: "r-1".into(),
            session: "roast-0042".into(),
            kind: EventKind::FcStart,
            ts_ms: NOW - 12_000,
            detected_ms: NOW - 1_000,
            bt: Some(197.8),
            et: None,
            ror: Some(6.25),
            method: "bt_prior".into(),
            confidence: 0.6,
            received_ms: NOW,
        }
    }

    #[test]
    fn an_event_round_trips_through_its_wire_form() {
        let e = event();
        let json = e.to_json();
        let text = String::from_utf8(json.clone()).unwrap();
        assert!(text.contains(r#""kind":"fc_start""#), "{text}");
        assert!(text.contains(r#""detected_ts":"#), "{text}");
        assert_eq!(decode_event("r-1", &json, NOW, &Limits::default()), Ok(e));
    }

    #[test]
    fn bad_events_are_refused_with_a_stable_code() {
        let ok = String::from_utf8(event().to_json()).unwrap();
        let cases = [
            (ok.replace("fc_start", "first_crack"), "bad_event_kind"),
            (ok.replace("roast-0042", "a/b"), "bad_id"),
            (
                ok.replace(r#""confidence":0.6"#, r#""confidence":1.5"#),
                "out_of_range",
            ),
            (
                ok.replace(r#""method":"bt_prior""#, r#""method":"BT prior""#),
                "out_of_range",
            ),
            (ok.replace(r#""bt":197.8"#, r#""bt":"hot""#), "wrong_type"),
            (ok.replace(r#""ts":"#, r#""ts_":"#), "missing_field"),
            (
                ok.replace(&(NOW - 12_000).to_string(), "1000"),
                "ts_too_old",
            ),
            (ok.replace(r#""bt":197.8"#, r#""bt":1e999"#), "not_finite"),
            ("[1]".into(), "not_an_object"),
            ("{".into(), "malformed_json"),
        ];
        for (payload, code) in cases {
            let got = decode_event("r-1", payload.as_bytes(), NOW, &Limits::default());
            assert_eq!(got.map_err(|r| r.code()), Err(code), "{payload}");
        }
    }
}
