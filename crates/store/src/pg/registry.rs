//! Which (device, session) pairs this process has already written to `device_sessions`.
//!
//! The table answers "where are a device's newest points" (see migration 0002); it needs one row
//! per pair, not one write per point. Remembering the pairs here keeps the steady-state write a
//! single INSERT of points: a pair costs one extra statement the first time a process writes it.

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, PoisonError};

use model::Point;

/// Forgetting everything beyond this many pairs bounds the memory of a long-running process; the
/// price is one re-registration (an idempotent upsert) per active session.
const MAX_REMEMBERED: usize = 100_000;

/// A pair to register: device, session and the earliest ts among the batch's points of it.
pub(crate) type NewPair<'p> = (&'p str, &'p str, i64);

#[derive(Debug, Default)]
pub(crate) struct Registry {
    inner: Mutex<Remembered>,
}

#[derive(Debug, Default)]
struct Remembered {
    // Nested so that lookups borrow the point's strings instead of allocating a key.
    sessions_by_device: HashMap<String, HashSet<String>>,
    len: usize,
}

impl Registry {
    /// The pairs among `points` not yet known to be registered.
    pub(crate) fn unregistered<'p>(&self, points: &'p [Point]) -> Vec<NewPair<'p>> {
        let known = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let mut new: HashMap<(&str, &str), i64> = HashMap::new();
        for p in points {
            let seen = known
                .sessions_by_device
                .get(p.device_id.as_str())
                .is_some_and(|s| s.contains(p.session.as_str()));
            if !seen {
                new.entry((&p.device_id, &p.session))
                    .and_modify(|ts| *ts = (*ts).min(p.ts_ms))
                    .or_insert(p.ts_ms);
            }
        }
        new.into_iter().map(|((d, s), ts)| (d, s, ts)).collect()
    }

    /// Records pairs whose registration has committed.
    pub(crate) fn remember(&self, pairs: &[NewPair<'_>]) {
        let mut known = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        if known.len + pairs.len() > MAX_REMEMBERED {
            *known = Remembered::default();
        }
        for (device, session, _) in pairs {
            let inserted = known
                .sessions_by_device
                .entry((*device).to_owned())
                .or_default()
                .insert((*session).to_owned());
            known.len += usize::from(inserted);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(device: &str, session: &str, ts_ms: i64) -> Point {
        Point {
            device_id: device.into(),
            session: session.into(),
            seq: 0,
            ts_ms,
            channels: Default::default(),
            received_ms: 0,
        }
    }

    #[test]
    fn each_pair_is_new_once_with_its_earliest_ts() {
        let registry = Registry::default();
        let batch = [
            point("a", "s1", 20),
            point("a", "s1", 10),
            point("b", "s1", 30),
        ];
        let mut new = registry.unregistered(&batch);
        new.sort_unstable();
        assert_eq!(new, vec![("a", "s1", 10), ("b", "s1", 30)]);

        registry.remember(&new);
        let later = [point("a", "s1", 40), point("a", "s2", 50)];
        assert_eq!(registry.unregistered(&later), vec![("a", "s2", 50)]);
    }

    #[test]
    fn an_unremembered_pair_stays_new() {
        // A failed write must not mark its pairs: the retry registers them.
        let registry = Registry::default();
        let batch = [point("a", "s1", 1)];
        let _ = registry.unregistered(&batch);
        assert_eq!(registry.unregistered(&batch), vec![("a", "s1", 1)]);
    }
}
