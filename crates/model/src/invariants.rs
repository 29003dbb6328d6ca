//! What every value the decoder accepts is guaranteed to satisfy, as executable checks.
//!
//! The rest of the platform relies on these guarantees without re-checking (the stores bind the
//! values as they are), so they are stated once here and asserted by the property tests and the
//! fuzz targets (`fuzz/`) on everything the decoder lets through, whatever the input was.

use crate::decode::{has_nul, valid_channel_name};
use crate::{Decoded, Limits, Point, SessionEvent, valid_id};

/// Checks an accepted telemetry decode: every point valid, every rejected point with a reason,
/// and every accepted point decoding to itself again from its own encoding.
pub fn check_decoded(
    device_id: &str,
    decoded: &Decoded,
    received_ms: i64,
    limits: &Limits,
) -> Result<(), String> {
    for p in &decoded.points {
        check_point(device_id, p, received_ms, limits)?;
        let again = crate::decode_telemetry(device_id, &p.to_json(), received_ms, limits)
            .map_err(|r| format!("an accepted point is refused once re-encoded: {r}"))?;
        if again.points.as_slice() != std::slice::from_ref(p) {
            return Err(format!("re-encoding changes the point: {p:?} -> {again:?}"));
        }
    }
    for r in &decoded.rejected {
        if r.rejection.code().is_empty() || r.rejection.to_string().is_empty() {
            return Err(format!("a point was rejected without a reason: {r:?}"));
        }
    }
    Ok(())
}

/// Checks one accepted point against the contract's guarantees.
pub fn check_point(
    device_id: &str,
    p: &Point,
    received_ms: i64,
    limits: &Limits,
) -> Result<(), String> {
    if p.device_id != device_id {
        return Err(format!("device id {:?} is not the topic's", p.device_id));
    }
    if !valid_id(&p.session) {
        return Err(format!("invalid session id {:?} accepted", p.session));
    }
    if p.seq > i64::MAX as u64 {
        return Err(format!("seq {} does not fit a bigint", p.seq));
    }
    check_ts(p.ts_ms, received_ms, limits)?;
    let c = &p.channels;
    if c.is_empty() || c.len() > limits.max_channels {
        return Err(format!("{} channels accepted", c.len()));
    }
    let named = [c.bt, c.et, c.gas, c.air, c.drum];
    if let Some(v) = named
        .iter()
        .flatten()
        .chain(c.extra.values())
        .find(|v| !v.is_finite())
    {
        return Err(format!("non-finite reading {v} accepted"));
    }
    if let Some(name) = c.extra.keys().find(|n| !valid_channel_name(n)) {
        return Err(format!("invalid channel name {name:?} accepted"));
    }
    Ok(())
}

/// Checks an accepted session event.
pub fn check_session(
    device_id: &str,
    e: &SessionEvent,
    received_ms: i64,
    limits: &Limits,
) -> Result<(), String> {
    if e.device_id != device_id || !valid_id(&e.session) {
        return Err(format!("invalid ids accepted: {e:?}"));
    }
    check_ts(e.ts_ms, received_ms, limits)?;
    // PostgreSQL refuses U+0000 in text and jsonb; a batch carrying one could never commit.
    if e.metadata.iter().any(|(k, v)| has_nul(k, v)) {
        return Err("a NUL character in session metadata accepted".into());
    }
    Ok(())
}

fn check_ts(ts: i64, received_ms: i64, limits: &Limits) -> Result<(), String> {
    let age = received_ms.saturating_sub(ts);
    if age > limits.max_past_ms || -age > limits.max_future_ms {
        return Err(format!("ts {ts} outside the window around {received_ms}"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by fuzzing: the text `\u0000` (a backslash, then `u0000`) is not a NUL character,
    /// and an earlier check that searched the serialized metadata mistook it for one.
    #[test]
    fn an_escaped_backslash_before_u0000_is_not_a_nul() {
        let payload =
            br#"{"session":"s-1","state":"start","ts":1795000000000,"a\\u0000b":"c\\u0000"}"#;
        let limits = Limits::default();
        let event = crate::decode_session("r-1", payload, 1_795_000_000_000, &limits).unwrap();
        assert_eq!(event.metadata["a\\u0000b"], "c\\u0000");
        check_session("r-1", &event, 1_795_000_000_000, &limits).unwrap();
    }
}
