//! A batch of points as the parameters of PostgreSQL's `unnest` insert, public so that
//! benchmarks can measure encoding apart from the round trip.

use model::Point;

use crate::rows::{extra_json, seq_to_sql};

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
