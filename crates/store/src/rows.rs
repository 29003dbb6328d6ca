//! Row shapes shared by both backends: what a write transaction contains, what the read queries
//! return and how those rows become model values, and the parsing of stored JSON.

use std::collections::BTreeMap;

use model::{Batch, Channels, DeadLetter, Point, RoastEvent, SessionEvent, SessionState};
use serde_json::value::RawValue;

use crate::error::{Backend, StoreError};
use crate::{DeadLetterRecord, SessionRecord, SessionSummary};

/// Everything one write transaction stores. Built from a [`Batch`], or from fallback rows when
/// they are replayed into PostgreSQL.
#[derive(Debug, Default)]
pub(crate) struct WriteSet<'a> {
    pub(crate) points: &'a [Point],
    pub(crate) sessions: Vec<SessionRow>,
    pub(crate) events: &'a [RoastEvent],
    pub(crate) dead_letters: Vec<DeadLetterRow<'a>>,
}

impl<'a> WriteSet<'a> {
    pub(crate) fn from_batch(batch: &'a Batch) -> Self {
        WriteSet {
            points: &batch.points,
            sessions: merge_session_events(&batch.sessions),
            events: &batch.events,
            dead_letters: batch.dead_letters.iter().map(DeadLetterRow::from).collect(),
        }
    }
}

/// What a write does to one `sessions` row; applied with the commutative upsert (first start
/// wins, first end wins, metadata merged, latest `updated`).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SessionRow {
    pub(crate) device_id: String,
    pub(crate) session: String,
    pub(crate) started_ms: Option<i64>,
    pub(crate) ended_ms: Option<i64>,
    pub(crate) metadata: serde_json::Map<String, serde_json::Value>,
    pub(crate) updated_ms: i64,
}

impl SessionRow {
    pub(crate) fn metadata_json(&self) -> String {
        serde_json::Value::Object(self.metadata.clone()).to_string()
    }

    /// Applies `later` on top of `self` with the same rules as the SQL upsert.
    fn absorb(&mut self, later: SessionRow) {
        self.started_ms = self.started_ms.or(later.started_ms);
        self.ended_ms = self.ended_ms.or(later.ended_ms);
        self.metadata.extend(later.metadata);
        self.updated_ms = self.updated_ms.max(later.updated_ms);
    }
}

impl From<&crate::SessionRecord> for SessionRow {
    fn from(r: &crate::SessionRecord) -> Self {
        SessionRow {
            device_id: r.device_id.clone(),
            session: r.session.clone(),
            started_ms: r.started_ms,
            ended_ms: r.ended_ms,
            metadata: r.metadata.clone(),
            updated_ms: r.updated_ms,
        }
    }
}

/// Folds a batch's session events into one row per (device, session), in order of first
/// appearance. PostgreSQL refuses an `ON CONFLICT DO UPDATE` that touches the same row twice in
/// one statement, and folding with the upsert's own rules gives the same result as applying the
/// events one by one.
pub(crate) fn merge_session_events(events: &[SessionEvent]) -> Vec<SessionRow> {
    let mut rows: Vec<SessionRow> = Vec::new();
    for e in events {
        let row = SessionRow {
            device_id: e.device_id.clone(),
            session: e.session.clone(),
            started_ms: (e.state == SessionState::Start).then_some(e.ts_ms),
            ended_ms: (e.state == SessionState::End).then_some(e.ts_ms),
            metadata: e.metadata.clone(),
            updated_ms: e.received_ms,
        };
        match rows
            .iter_mut()
            .find(|r| r.device_id == row.device_id && r.session == row.session)
        {
            Some(existing) => existing.absorb(row),
            None => rows.push(row),
        }
    }
    rows
}

/// Merges stored metadata with incoming metadata: keys of `incoming` win (PostgreSQL's
/// `jsonb || jsonb`, a shallow merge).
pub(crate) fn merge_metadata(
    stored: &str,
    incoming: &serde_json::Map<String, serde_json::Value>,
    backend: Backend,
) -> Result<String, StoreError> {
    let mut merged = parse_metadata(stored, backend)?;
    merged.extend(incoming.iter().map(|(k, v)| (k.clone(), v.clone())));
    Ok(serde_json::Value::Object(merged).to_string())
}

/// A dead letter as written: borrowed from a [`DeadLetter`] or a [`DeadLetterRecord`].
#[derive(Debug, Clone)]
pub(crate) struct DeadLetterRow<'a> {
    pub(crate) received_ms: i64,
    pub(crate) topic: &'a str,
    pub(crate) device_id: Option<&'a str>,
    pub(crate) payload: &'a [u8],
    pub(crate) payload_bytes: i32,
    pub(crate) frame_index: Option<i32>,
    pub(crate) reason_code: &'a str,
    pub(crate) reason: &'a str,
}

impl<'a> From<&'a DeadLetter> for DeadLetterRow<'a> {
    fn from(d: &'a DeadLetter) -> Self {
        DeadLetterRow {
            received_ms: d.received_ms,
            topic: &d.topic,
            device_id: d.device_id.as_deref(),
            payload: &d.payload,
            payload_bytes: clamp_i32(d.payload_bytes),
            frame_index: d.frame_index.map(clamp_i32),
            reason_code: d.reason_code,
            reason: &d.reason,
        }
    }
}

impl<'a> From<&'a DeadLetterRecord> for DeadLetterRow<'a> {
    fn from(d: &'a DeadLetterRecord) -> Self {
        DeadLetterRow {
            received_ms: d.received_ms,
            topic: &d.topic,
            device_id: d.device_id.as_deref(),
            payload: &d.payload,
            payload_bytes: clamp_i32(d.payload_bytes),
            frame_index: d.frame_index.map(clamp_i32),
            reason_code: &d.reason_code,
            reason: &d.reason,
        }
    }
}

fn clamp_i32(v: usize) -> i32 {
    i32::try_from(v).unwrap_or(i32::MAX)
}

// What the read queries return. Both backends select columns under these names, with times as
// epoch ms and JSON as text, so each shape decodes from either database and is converted here
// once.

/// A `telemetry` row.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct PointRow {
    device_id: String,
    session: String,
    seq: i64,
    ts_ms: i64,
    bt: Option<f64>,
    et: Option<f64>,
    gas: Option<f64>,
    air: Option<f64>,
    drum: Option<f64>,
    extra: Option<String>,
    received_ms: i64,
}

impl PointRow {
    pub(crate) fn into_point(self, backend: Backend) -> Result<Point, StoreError> {
        Ok(Point {
            device_id: self.device_id,
            session: self.session,
            seq: seq_from_sql(self.seq, backend)?,
            ts_ms: self.ts_ms,
            channels: Channels {
                bt: self.bt,
                et: self.et,
                gas: self.gas,
                air: self.air,
                drum: self.drum,
                extra: parse_extra(self.extra.as_deref(), backend)?,
            },
            received_ms: self.received_ms,
        })
    }
}

/// A `sessions` row.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct SessionRecordRow {
    device_id: String,
    session: String,
    started_ms: Option<i64>,
    ended_ms: Option<i64>,
    /// As stored: the fallback's replay compares it to delete only rows still unchanged.
    pub(crate) metadata: String,
    updated_ms: i64,
}

impl SessionRecordRow {
    pub(crate) fn into_record(self, backend: Backend) -> Result<SessionRecord, StoreError> {
        Ok(SessionRecord {
            metadata: parse_metadata(&self.metadata, backend)?,
            device_id: self.device_id,
            session: self.session,
            started_ms: self.started_ms,
            ended_ms: self.ended_ms,
            updated_ms: self.updated_ms,
        })
    }
}

/// One device's row of the session summary: its `sessions` row, if any (`has_record`; the
/// record's columns are NULL otherwise), and aggregates of its points.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct SessionSummaryRow {
    device_id: String,
    has_record: bool,
    started_ms: Option<i64>,
    ended_ms: Option<i64>,
    metadata: Option<String>,
    updated_ms: Option<i64>,
    points: i64,
    first_ts_ms: Option<i64>,
    last_ts_ms: Option<i64>,
    max_seq: Option<i64>,
}

impl SessionSummaryRow {
    pub(crate) fn into_summary(
        self,
        session: &str,
        backend: Backend,
    ) -> Result<SessionSummary, StoreError> {
        let record = if self.has_record {
            let (Some(metadata), Some(updated_ms)) = (self.metadata, self.updated_ms) else {
                return Err(StoreError::corrupt(
                    backend,
                    "session row without metadata or updated_at",
                ));
            };
            Some(SessionRecord {
                device_id: self.device_id.clone(),
                session: session.to_owned(),
                started_ms: self.started_ms,
                ended_ms: self.ended_ms,
                metadata: parse_metadata(&metadata, backend)?,
                updated_ms,
            })
        } else {
            None
        };
        Ok(SessionSummary {
            device_id: self.device_id,
            session: session.to_owned(),
            record,
            points: count_from_sql(self.points),
            first_ts_ms: self.first_ts_ms,
            last_ts_ms: self.last_ts_ms,
            max_seq: self.max_seq.map(|s| seq_from_sql(s, backend)).transpose()?,
        })
    }
}

/// A `dead_letters` row. PostgreSQL's int4 columns are selected as int8, which SQLite's integers
/// decode as too.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct DeadLetterRecordRow {
    id: i64,
    received_ms: i64,
    topic: String,
    device_id: Option<String>,
    payload: Vec<u8>,
    payload_bytes: i64,
    frame_index: Option<i64>,
    reason_code: String,
    reason: String,
}

impl DeadLetterRecordRow {
    pub(crate) fn into_record(self) -> DeadLetterRecord {
        DeadLetterRecord {
            id: self.id,
            received_ms: self.received_ms,
            topic: self.topic,
            device_id: self.device_id,
            payload: self.payload,
            payload_bytes: usize::try_from(self.payload_bytes).unwrap_or(0),
            frame_index: self.frame_index.and_then(|i| usize::try_from(i).ok()),
            reason_code: self.reason_code,
            reason: self.reason,
        }
    }
}

/// A `roast_events` row as both backends select it (times in epoch ms).
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct EventRow {
    device_id: String,
    session: String,
    kind: String,
    ts_ms: i64,
    detected_ms: i64,
    bt: Option<f64>,
    et: Option<f64>,
    ror: Option<f64>,
    method: String,
    confidence: f64,
    received_ms: i64,
}

impl EventRow {
    pub(crate) fn into_event(self, backend: Backend) -> Result<RoastEvent, StoreError> {
        let kind = roast::EventKind::parse(&self.kind).ok_or_else(|| {
            StoreError::corrupt(backend, format!("roast_events.kind {:?}", self.kind))
        })?;
        Ok(RoastEvent {
            device_id: self.device_id,
            session: self.session,
            kind,
            ts_ms: self.ts_ms,
            detected_ms: self.detected_ms,
            bt: self.bt,
            et: self.et,
            ror: self.ror,
            method: self.method,
            confidence: self.confidence,
            received_ms: self.received_ms,
        })
    }
}

/// `seq` as stored. The model guarantees `seq <= i64::MAX`; anything else becomes -1, which the
/// tables' `CHECK (seq >= 0)` refuses, so an out-of-contract value fails loudly instead of being
/// stored altered.
pub(crate) fn seq_to_sql(seq: u64) -> i64 {
    i64::try_from(seq).unwrap_or(-1)
}

pub(crate) fn seq_from_sql(seq: i64, backend: Backend) -> Result<u64, StoreError> {
    u64::try_from(seq).map_err(|_| StoreError::corrupt(backend, format!("negative seq {seq}")))
}

pub(crate) fn usize_to_sql(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

pub(crate) fn count_from_sql(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

/// Parses stored extra channels. Numbers are read from their JSON text with Rust's correctly
/// rounded float parser, so a value comes back bit-for-bit as written whichever way the database
/// reformatted it (jsonb keeps numbers as decimals).
pub(crate) fn parse_extra(
    text: Option<&str>,
    backend: Backend,
) -> Result<BTreeMap<String, f64>, StoreError> {
    let Some(text) = text else {
        return Ok(BTreeMap::new());
    };
    let raw: BTreeMap<String, &RawValue> = serde_json::from_str(text)
        .map_err(|e| StoreError::corrupt(backend, format!("extra is not a JSON object: {e}")))?;
    raw.into_iter()
        .map(|(k, v)| match v.get().parse::<f64>() {
            Ok(f) if f.is_finite() => Ok((k, f)),
            _ => Err(StoreError::corrupt(
                backend,
                format!("extra channel {k:?} is not a finite number: {}", v.get()),
            )),
        })
        .collect()
}

pub(crate) fn parse_metadata(
    text: &str,
    backend: Backend,
) -> Result<serde_json::Map<String, serde_json::Value>, StoreError> {
    match serde_json::from_str(text) {
        Ok(serde_json::Value::Object(map)) => Ok(map),
        Ok(_) => Err(StoreError::corrupt(
            backend,
            "session metadata is not an object",
        )),
        Err(e) => Err(StoreError::corrupt(
            backend,
            format!("session metadata is not JSON: {e}"),
        )),
    }
}

/// Writes the extra channels as a JSON object into `out`; nothing for none.
fn write_extra_json(extra: &BTreeMap<String, f64>, out: &mut impl std::io::Write) {
    // Serializing string keys and finite floats into an in-memory writer cannot fail.
    let _ = serde_json::to_writer(out, extra);
}

pub(crate) fn extra_json(extra: &BTreeMap<String, f64>) -> Option<String> {
    if extra.is_empty() {
        return None;
    }
    let mut out = Vec::with_capacity(16 * extra.len());
    write_extra_json(extra, &mut out);
    String::from_utf8(out).ok()
}

/// The UTC calendar date of a day number (days since 1970-01-01), proleptic Gregorian.
/// Howard Hinnant's `civil_from_days`.
pub(crate) fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(20_454), (2026, 1, 1));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
    }

    #[test]
    fn extra_round_trips_exactly() {
        let mut extra = BTreeMap::new();
        extra.insert("a".to_owned(), 0.1 + 0.2);
        extra.insert("b".to_owned(), -1e-300);
        extra.insert("c".to_owned(), 123_456_789.123_456_78);
        let text = extra_json(&extra).unwrap();
        assert_eq!(parse_extra(Some(&text), Backend::Sqlite).unwrap(), extra);
        // jsonb may print a number differently from serde_json; the value must not change.
        assert_eq!(
            parse_extra(Some(r#"{"a": 0.30000000000000004000}"#), Backend::Postgres).unwrap()["a"],
            0.1 + 0.2
        );
        assert!(parse_extra(Some(r#"{"a": "x"}"#), Backend::Sqlite).is_err());
        assert!(parse_extra(None, Backend::Sqlite).unwrap().is_empty());
    }

    #[test]
    fn session_events_fold_like_the_upsert() {
        let ev = |state, ts, meta: serde_json::Value| SessionEvent {
            device_id: "d".into(),
            session: "s".into(),
            state,
            ts_ms: ts,
            metadata: meta.as_object().cloned().unwrap_or_default(),
            received_ms: ts + 1,
        };
        let rows = merge_session_events(&[
            ev(SessionState::End, 50, serde_json::json!({"a": 1})),
            ev(SessionState::Start, 10, serde_json::json!({"a": 2, "b": 1})),
            ev(SessionState::Start, 20, serde_json::json!({})),
            ev(SessionState::End, 60, serde_json::json!({})),
        ]);
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].started_ms, Some(10));
        assert_eq!(rows[0].ended_ms, Some(50));
        assert_eq!(
            serde_json::Value::Object(rows[0].metadata.clone()),
            serde_json::json!({"a": 2, "b": 1})
        );
        assert_eq!(rows[0].updated_ms, 61);
    }
}
