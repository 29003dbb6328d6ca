//! The two wire forms of a batch of points for PostgreSQL, public so that benchmarks can measure
//! encoding apart from the round trip.

use bytes::{BufMut, BytesMut};
use model::Point;

use crate::rows::{extra_json, seq_to_sql, write_extra_json};

/// Microseconds between the Unix epoch and PostgreSQL's epoch (2000-01-01 UTC).
const PG_EPOCH_OFFSET_US: i64 = 946_684_800_000_000;

/// Columns of the staging table and of every telemetry insert, in this order.
pub(crate) const FIELDS: i16 = 11;

/// Encodes points as a `COPY ... FROM STDIN (FORMAT binary)` stream for the staging table
/// (device_id, session, seq, ts, bt, et, gas, air, drum, extra, received_at).
pub fn copy_binary(points: &[Point]) -> BytesMut {
    // Fixed part per tuple: field count, 11 length words, 3 int8 and 5 float8 values.
    let mut buf = BytesMut::with_capacity(19 + points.len() * 160);
    buf.put_slice(b"PGCOPY\n\xff\r\n\0");
    buf.put_i32(0); // flags: no OIDs
    buf.put_i32(0); // header extension length
    for p in points {
        buf.put_i16(FIELDS);
        put_text(&mut buf, &p.device_id);
        put_text(&mut buf, &p.session);
        put_i64(&mut buf, seq_to_sql(p.seq));
        put_i64(&mut buf, timestamptz(p.ts_ms));
        for v in [
            p.channels.bt,
            p.channels.et,
            p.channels.gas,
            p.channels.air,
            p.channels.drum,
        ] {
            match v {
                Some(v) => {
                    buf.put_i32(8);
                    buf.put_f64(v);
                }
                None => buf.put_i32(-1),
            }
        }
        if p.channels.extra.is_empty() {
            buf.put_i32(-1);
        } else {
            // Length is known only after serializing: reserve it and patch it afterwards.
            let at = buf.len();
            buf.put_i32(0);
            buf.put_u8(1); // jsonb binary format version
            write_extra_json(&p.channels.extra, &mut (&mut buf).writer());
            let len = i32::try_from(buf.len() - at - 4).unwrap_or(i32::MAX);
            buf[at..at + 4].copy_from_slice(&len.to_be_bytes());
        }
        put_i64(&mut buf, timestamptz(p.received_ms));
    }
    buf.put_i16(-1);
    buf
}

fn put_text(buf: &mut BytesMut, s: &str) {
    buf.put_i32(i32::try_from(s.len()).unwrap_or(i32::MAX));
    buf.put_slice(s.as_bytes());
}

fn put_i64(buf: &mut BytesMut, v: i64) {
    buf.put_i32(8);
    buf.put_i64(v);
}

/// Epoch milliseconds as PostgreSQL's binary timestamptz: microseconds since 2000-01-01 UTC.
fn timestamptz(ms: i64) -> i64 {
    ms.saturating_mul(1000).saturating_sub(PG_EPOCH_OFFSET_US)
}

/// A batch of points as one array per column, the parameters of the `unnest` insert.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct UnnestColumns<'a> {
    pub device_id: Vec<&'a str>,
    pub session: Vec<&'a str>,
    pub seq: Vec<i64>,
    pub ts_ms: Vec<i64>,
    pub bt: Vec<Option<f64>>,
    pub et: Vec<Option<f64>>,
    pub gas: Vec<Option<f64>>,
    pub air: Vec<Option<f64>>,
    pub drum: Vec<Option<f64>>,
    /// JSON object text, cast to jsonb in SQL.
    pub extra: Vec<Option<String>>,
    pub received_ms: Vec<i64>,
}

impl<'a> From<&'a [Point]> for UnnestColumns<'a> {
    fn from(points: &'a [Point]) -> Self {
        let n = points.len();
        let mut c = UnnestColumns {
            device_id: Vec::with_capacity(n),
            session: Vec::with_capacity(n),
            seq: Vec::with_capacity(n),
            ts_ms: Vec::with_capacity(n),
            bt: Vec::with_capacity(n),
            et: Vec::with_capacity(n),
            gas: Vec::with_capacity(n),
            air: Vec::with_capacity(n),
            drum: Vec::with_capacity(n),
            extra: Vec::with_capacity(n),
            received_ms: Vec::with_capacity(n),
        };
        for p in points {
            c.device_id.push(&p.device_id);
            c.session.push(&p.session);
            c.seq.push(seq_to_sql(p.seq));
            c.ts_ms.push(p.ts_ms);
            c.bt.push(p.channels.bt);
            c.et.push(p.channels.et);
            c.gas.push(p.channels.gas);
            c.air.push(p.channels.air);
            c.drum.push(p.channels.drum);
            c.extra.push(extra_json(&p.channels.extra));
            c.received_ms.push(p.received_ms);
        }
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use model::Channels;

    #[test]
    fn copy_binary_layout() {
        let mut channels = Channels {
            bt: Some(1.5),
            ..Channels::default()
        };
        channels.extra.insert("x".into(), 2.0);
        let p = Point {
            device_id: "d".into(),
            session: "s".into(),
            seq: 7,
            ts_ms: 946_684_800_001,
            channels,
            received_ms: 946_684_800_000,
        };
        let buf = copy_binary(std::slice::from_ref(&p));
        let mut want = Vec::new();
        want.extend_from_slice(b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0");
        want.extend_from_slice(&11i16.to_be_bytes());
        want.extend_from_slice(&[0, 0, 0, 1, b'd', 0, 0, 0, 1, b's']);
        want.extend_from_slice(&[0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 7]);
        want.extend_from_slice(&[0, 0, 0, 8]);
        want.extend_from_slice(&1000i64.to_be_bytes());
        want.extend_from_slice(&[0, 0, 0, 8]);
        want.extend_from_slice(&1.5f64.to_be_bytes());
        for _ in 0..4 {
            want.extend_from_slice(&(-1i32).to_be_bytes());
        }
        let json = br#"{"x":2.0}"#;
        want.extend_from_slice(&(json.len() as i32 + 1).to_be_bytes());
        want.push(1);
        want.extend_from_slice(json);
        want.extend_from_slice(&[0, 0, 0, 8]);
        want.extend_from_slice(&0i64.to_be_bytes());
        want.extend_from_slice(&(-1i16).to_be_bytes());
        assert_eq!(&buf[..], &want[..]);
    }
}
