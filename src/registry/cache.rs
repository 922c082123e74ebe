//! The answers of the SQL registry, kept for a short time: bindings for `cache_ttl`, "not bound"
//! for `unbound_ttl`. An expired binding is kept (up to the size cap) so that it can still be
//! served while the database is unavailable.

use std::collections::HashMap;
use std::time::Duration;

use tokio::time::Instant;

use crate::domain::WorkspaceId;

/// The most serial numbers remembered. Requests arrive on topics any connected client can
/// publish to, so the map must not grow with every made-up serial number.
const MAX_ENTRIES: usize = 100_000;

/// What the cache knows about a gateway.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Cached {
    /// A fresh answer: bound to this workspace, or (`None`) not bound.
    Fresh(Option<WorkspaceId>),
    /// An expired binding, usable only when the database cannot be asked.
    Stale(WorkspaceId),
    /// Nothing usable.
    Unknown,
}

#[derive(Debug)]
struct Entry {
    workspace: Option<WorkspaceId>,
    at: Instant,
}

/// Serial number (upper case) → last answer.
#[derive(Debug)]
pub struct Answers {
    entries: HashMap<String, Entry>,
    ttl: Duration,
    unbound_ttl: Duration,
    /// When a full map holding only fresh bindings may next have room: until then a new serial
    /// number is not remembered and the map is not walked again. (A fleet of more than
    /// [`MAX_ENTRIES`] bound docks walked all of them with every new dock's request.)
    full_until: Option<Instant>,
    /// Walks of the whole map so far.
    walks: u64,
}

// === impl Answers ===

impl Answers {
    /// An empty cache.
    pub fn new(ttl: Duration, unbound_ttl: Duration) -> Self {
        Self {
            entries: HashMap::new(),
            ttl,
            unbound_ttl,
            full_until: None,
            walks: 0,
        }
    }

    /// What is known about `sn` now.
    pub fn get(&self, sn: &str) -> Cached {
        let Some(entry) = self.entries.get(&key(sn)) else {
            return Cached::Unknown;
        };
        let ttl = if entry.workspace.is_some() {
            self.ttl
        } else {
            self.unbound_ttl
        };
        match &entry.workspace {
            _ if entry.at.elapsed() < ttl => Cached::Fresh(entry.workspace.clone()),
            Some(ws) => Cached::Stale(ws.clone()),
            None => Cached::Unknown,
        }
    }

    /// Remembers the database's answer for `sn`.
    pub fn put(&mut self, sn: &str, workspace: Option<WorkspaceId>) {
        if self.entries.len() >= MAX_ENTRIES && !self.entries.contains_key(&key(sn)) {
            if self.full_until.is_some_and(|until| Instant::now() < until) {
                return;
            }
            self.evict();
            if self.entries.len() >= MAX_ENTRIES {
                return;
            }
        }
        let at = Instant::now();
        self.entries.insert(key(sn), Entry { workspace, at });
    }

    /// Makes room: drops "not bound" answers, then expired bindings; when every entry is a
    /// fresh binding, notes when the first of them expires.
    fn evict(&mut self) {
        self.walks += 1;
        self.full_until = None;
        self.entries.retain(|_, e| e.workspace.is_some());
        if self.entries.len() >= MAX_ENTRIES {
            let ttl = self.ttl;
            self.walks += 1;
            self.entries.retain(|_, e| e.at.elapsed() < ttl);
        }
        if self.entries.len() >= MAX_ENTRIES {
            self.full_until = self.entries.values().map(|e| e.at + self.ttl).min();
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.len()
    }
}

fn key(sn: &str) -> String {
    sn.to_ascii_uppercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ws(s: &str) -> WorkspaceId {
        WorkspaceId::parse(s).unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn bindings_go_stale_and_unbound_answers_are_forgotten() {
        let mut a = Answers::new(Duration::from_secs(60), Duration::from_secs(10));
        assert_eq!(a.get("GW1"), Cached::Unknown);
        a.put("GW1", Some(ws("ws-a")));
        a.put("GW2", None);
        assert_eq!(a.get("gw1"), Cached::Fresh(Some(ws("ws-a"))));
        assert_eq!(a.get("GW2"), Cached::Fresh(None));

        tokio::time::advance(Duration::from_secs(11)).await;
        assert_eq!(a.get("GW1"), Cached::Fresh(Some(ws("ws-a"))));
        assert_eq!(a.get("GW2"), Cached::Unknown, "not bound is kept shorter");

        tokio::time::advance(Duration::from_secs(50)).await;
        assert_eq!(a.get("GW1"), Cached::Stale(ws("ws-a")));

        a.put("GW1", Some(ws("ws-b")));
        assert_eq!(a.get("GW1"), Cached::Fresh(Some(ws("ws-b"))));
    }

    #[tokio::test(start_paused = true)]
    async fn the_cache_stays_bounded_and_keeps_bindings_first() {
        let mut a = Answers::new(Duration::from_secs(60), Duration::from_secs(10));
        a.put("BOUND", Some(ws("ws-a")));
        for i in 1..MAX_ENTRIES {
            a.put(&format!("NOBODY{i}"), None);
        }
        assert_eq!(a.len(), MAX_ENTRIES);
        a.put("ANOTHER", Some(ws("ws-b")));
        assert_eq!(a.len(), 2, "unbound answers made room");
        assert_eq!(a.get("BOUND"), Cached::Fresh(Some(ws("ws-a"))));
        assert_eq!(a.get("ANOTHER"), Cached::Fresh(Some(ws("ws-b"))));
    }

    /// A fleet of more bound docks than the map holds: a new dock is not remembered, and the map
    /// is walked once, not with every new dock's request, until its first binding expires.
    #[tokio::test(start_paused = true)]
    async fn a_map_full_of_fresh_bindings_is_not_walked_for_each_new_dock() {
        let mut a = Answers::new(Duration::from_secs(60), Duration::from_secs(10));
        for i in 0..MAX_ENTRIES {
            a.put(&format!("DOCK{i}"), Some(ws("ws-a")));
            if i == 0 {
                tokio::time::advance(Duration::from_secs(1)).await;
            }
        }
        for i in 0..1_000 {
            a.put(&format!("NEW{i}"), Some(ws("ws-b")));
        }
        assert!(a.walks <= 3, "{} walks for 1,000 new docks", a.walks);
        assert_eq!(a.get("NEW7"), Cached::Unknown);
        assert_eq!(a.get("DOCK5"), Cached::Fresh(Some(ws("ws-a"))));
        // The first binding expires: its place is taken by the next new dock.
        tokio::time::advance(Duration::from_secs(59)).await;
        a.put("LATE", Some(ws("ws-b")));
        assert_eq!(a.get("LATE"), Cached::Fresh(Some(ws("ws-b"))));
        assert_eq!(a.get("DOCK0"), Cached::Unknown);
        assert_eq!(a.len(), MAX_ENTRIES);
    }
}
