use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use model::Point;

use crate::{ActiveSession, Update, session_effect};

/// The in-process cache of `simcorp up` and of deployments without Redis.
#[derive(Debug, Clone, Default)]
pub struct MemoryCache {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Debug, Default)]
struct Inner {
    latest: HashMap<String, Point>,
    sessions: HashMap<String, ActiveSession>,
}

impl MemoryCache {
    pub(crate) fn apply(&self, update: &Update) {
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        for p in &update.latest {
            let newer = inner
                .latest
                .get(&p.device_id)
                .is_none_or(|cur| (p.ts_ms, p.seq) >= (cur.ts_ms, cur.seq));
            if newer {
                inner.latest.insert(p.device_id.clone(), p.clone());
            }
        }
        for event in &update.sessions {
            match session_effect(event) {
                Some(active) => {
                    inner.sessions.insert(event.device_id.clone(), active);
                }
                None => {
                    if inner
                        .sessions
                        .get(&event.device_id)
                        .is_some_and(|a| a.session == event.session)
                    {
                        inner.sessions.remove(&event.device_id);
                    }
                }
            }
        }
    }

    pub(crate) fn latest(&self, device_id: &str) -> Option<Point> {
        self.inner.lock().ok()?.latest.get(device_id).cloned()
    }

    pub(crate) fn active_session(&self, device_id: &str) -> Option<ActiveSession> {
        self.inner.lock().ok()?.sessions.get(device_id).cloned()
    }
}
