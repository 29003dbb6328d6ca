use std::collections::BTreeMap;

use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};

/// One telemetry sample of one device, validated.
///
/// Identity is `(device_id, session, seq)`: the same point delivered twice is stored once.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    pub device_id: String,
    pub session: String,
    /// Increasing within the session; at most `i64::MAX` so it fits a PostgreSQL `bigint`.
    pub seq: u64,
    /// Device time of the sample, Unix epoch milliseconds.
    pub ts_ms: i64,
    pub channels: Channels,
    /// When ingestion received the message carrying this point (epoch ms). Not part of the wire
    /// form: set by the decoder from the caller's clock, stored for operators and latency checks.
    pub received_ms: i64,
}

/// Channel readings of a point. The five named channels are the contract's; any further numeric
/// channels land in `extra`. All values are finite.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Channels {
    /// Bean temperature, °C.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bt: Option<f64>,
    /// Environment (exhaust/drum air) temperature, °C.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub et: Option<f64>,
    /// Burner output, % of range.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gas: Option<f64>,
    /// Airflow, % of range.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub air: Option<f64>,
    /// Drum speed, % of range.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drum: Option<f64>,
    /// Channels beyond the five named ones, by name.
    #[serde(flatten)]
    pub extra: BTreeMap<String, f64>,
}

impl Channels {
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Number of readings present.
    pub fn len(&self) -> usize {
        [self.bt, self.et, self.gas, self.air, self.drum]
            .iter()
            .filter(|v| v.is_some())
            .count()
            + self.extra.len()
    }

    /// Extra channels as a JSON object text, or `None` when there are none (stored as SQL NULL).
    pub fn extra_json(&self) -> Option<String> {
        (!self.extra.is_empty()).then(|| serde_json::to_string(&self.extra).unwrap_or_default())
    }
}

/// The wire form of a point: `{"session","seq","ts","channels"}`, as devices publish it.
impl Serialize for Point {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(4))?;
        map.serialize_entry("session", &self.session)?;
        map.serialize_entry("seq", &self.seq)?;
        map.serialize_entry("ts", &self.ts_ms)?;
        map.serialize_entry("channels", &self.channels)?;
        map.end()
    }
}

impl Point {
    /// The point as one telemetry message payload.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Several points as one frame payload (a JSON array).
    pub fn frame_json(points: &[Point]) -> Vec<u8> {
        serde_json::to_vec(points).unwrap_or_default()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SessionState {
    Start,
    End,
}

impl SessionState {
    pub fn as_str(self) -> &'static str {
        match self {
            SessionState::Start => "start",
            SessionState::End => "end",
        }
    }
}

/// A session lifecycle message from `roasters/{device_id}/session`.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionEvent {
    pub device_id: String,
    pub session: String,
    pub state: SessionState,
    pub ts_ms: i64,
    /// Any further fields of the message (bean, batch size, profile …), kept as given.
    pub metadata: serde_json::Map<String, serde_json::Value>,
    pub received_ms: i64,
}

impl SessionEvent {
    /// The wire form, as devices publish it.
    pub fn to_json(&self) -> Vec<u8> {
        let mut obj = self.metadata.clone();
        obj.insert("session".into(), self.session.clone().into());
        obj.insert("state".into(), self.state.as_str().into());
        obj.insert("ts".into(), self.ts_ms.into());
        serde_json::to_vec(&obj).unwrap_or_default()
    }
}

/// A message (or one point of a frame) that was refused, kept for inspection.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter {
    pub topic: String,
    /// The device id from the topic, when the topic was well-formed.
    pub device_id: Option<String>,
    /// The offending payload, truncated to the configured limit.
    pub payload: Vec<u8>,
    /// Size of the payload as received, before truncation.
    pub payload_bytes: usize,
    /// For one bad point inside a frame: its index in the array.
    pub frame_index: Option<usize>,
    /// [`crate::Rejection::code`].
    pub reason_code: &'static str,
    /// [`crate::Rejection`]'s human-readable text.
    pub reason: String,
    pub received_ms: i64,
}

impl DeadLetter {
    /// Builds a dead letter, truncating the payload to `max_payload` bytes.
    pub fn new(
        topic: &str,
        device_id: Option<&str>,
        payload: &[u8],
        frame_index: Option<usize>,
        rejection: &crate::Rejection,
        received_ms: i64,
        max_payload: usize,
    ) -> Self {
        // Text columns refuse U+0000; a rejection may quote what the device sent.
        let storable = |s: &str| s.replace('\0', "\u{FFFD}");
        DeadLetter {
            topic: storable(&topic.chars().take(512).collect::<String>()),
            device_id: device_id.map(str::to_owned),
            payload: payload[..payload.len().min(max_payload)].to_vec(),
            payload_bytes: payload.len(),
            frame_index,
            reason_code: rejection.code(),
            reason: storable(&rejection.to_string()),
            received_ms,
        }
    }
}

/// Everything one storage transaction writes: the unit the pipeline hands to a store, and the
/// unit that is acknowledged to the broker once committed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Batch {
    pub points: Vec<Point>,
    pub sessions: Vec<SessionEvent>,
    pub events: Vec<crate::RoastEvent>,
    pub dead_letters: Vec<DeadLetter>,
}

impl Batch {
    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
            && self.sessions.is_empty()
            && self.events.is_empty()
            && self.dead_letters.is_empty()
    }

    /// Records in the batch, of all kinds.
    pub fn len(&self) -> usize {
        self.points.len() + self.sessions.len() + self.events.len() + self.dead_letters.len()
    }

    pub fn clear(&mut self) {
        self.points.clear();
        self.sessions.clear();
        self.events.clear();
        self.dead_letters.clear();
    }
}
