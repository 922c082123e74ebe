//! The memory of verified tokens: a table of fixed size, [`BYTES`], allocated once (its pages
//! are taken from the system as they are first written), where each remembered token costs 32
//! bytes and nothing else — no per-entry allocation, no list links, no ghost entries.
//!
//! Why not a cache crate: quick_cache (which held this memory until issue 21) keeps, beside each
//! entry, its slab links, a hash-table slot and a ghost entry of the entry's full size for the
//! eviction policy's history, some 100 bytes a token before its value; moka and mini-moka more.
//! Nothing here needs a general policy: every entry is worthless after [`super::VERIFIED_FOR`]
//! (it is verified again then), so "forget the stalest" is the whole policy, and a fixed table
//! of 32-byte slots is what lets 16 MiB hold 200,000 pilots with room to spare.
//!
//! The table is split into [`SHARDS`] shards, each behind its own lock, each of sets of
//! [`WAYS`] slots. A key may live in one of two sets of its shard (chosen by its two halves) and
//! is placed in the one with more free slots: with two choices, the fullest set of a table a
//! third full holds some six keys of eight, where with one choice a few sets would overflow and
//! lose pilots at a fraction of the table's size.

use std::sync::{Mutex, PoisonError};

/// What the memory may hold, in bytes; all of it is the table.
pub const BYTES: usize = 16 << 20;
/// Slots of a set.
const WAYS: usize = 8;
/// A set: the first halves of its keys (one cache line to scan), then for each slot the second
/// half, the times and the spans.
const SET_WORDS: usize = WAYS * 4;
/// Shards, each behind its own lock (a power of two).
const SHARDS: usize = 64;
/// Sets in a shard (a power of two).
const SETS: usize = BYTES / (SET_WORDS * 8) / SHARDS;
/// How many pilots the memory holds without loss: half its slots, where two choices still place
/// every key (see the module's comment); more are held, at some loss, up to every slot.
#[cfg(test)]
const PILOTS: usize = SHARDS * SETS * WAYS / 2;

/// What is kept of a verified token beside its key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Its expiry, seconds since the Unix epoch (one past 2106 is kept as 2106).
    pub exp: u32,
    /// When it was verified, in the verifier's seconds.
    pub verified_at: u32,
    /// Where its workspace and subject are.
    pub spans: Spans,
}

/// Where a verified token's workspace and subject are in its decoded payload, so that a later
/// request with the same token reads them without parsing the claims again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Spans {
    /// Byte ranges (start, length) of the decoded payload; no subject reads as `-`.
    At {
        /// The workspace id's bytes.
        workspace: (u16, u16),
        /// The subject's bytes, if the token names one.
        subject: Option<(u16, u16)>,
    },
    /// The payload must be parsed again: a value with escapes, a subject that is cut, a number
    /// written otherwise than it reads, or a payload of more than 64 KiB.
    Parse,
}

/// A shard's sets.
type Shard = Box<[[u64; SET_WORDS]]>;

/// The memory; see the module's comment.
pub struct Memory {
    shards: Box<[Mutex<Shard>]>,
    /// How long an entry is worth keeping, in seconds: older ones are free slots.
    fresh_for: u32,
}

// === impl Spans ===

/// A span's half that marks "none" (no subject) or "parse" (in the workspace's place).
const NONE: u32 = u32::MAX;

impl Spans {
    fn pack(self) -> u64 {
        let half = |span: Option<(u16, u16)>| {
            span.map_or(NONE, |(start, len)| {
                (u32::from(start) << 16) | u32::from(len)
            })
        };
        match self {
            Self::At { workspace, subject } => {
                (u64::from(half(Some(workspace))) << 32) | u64::from(half(subject))
            }
            Self::Parse => u64::MAX,
        }
    }

    fn unpack(word: u64) -> Self {
        let half =
            |bits: u32| (bits != NONE).then_some(((bits >> 16) as u16, (bits & 0xFFFF) as u16));
        match half((word >> 32) as u32) {
            Some(workspace) => Self::At {
                workspace,
                subject: half(word as u32),
            },
            None => Self::Parse,
        }
    }

    /// A span of `start..start + len` of a payload, if it can be kept (the payload is at most
    /// 64 KiB, less the marker).
    pub fn span(start: usize, len: usize) -> Option<(u16, u16)> {
        let start = u16::try_from(start).ok()?;
        let len = u16::try_from(len).ok()?;
        // (0xFFFF, 0xFFFF) is the marker.
        (u32::from(start) + u32::from(len) < u32::from(u16::MAX)).then_some((start, len))
    }
}

// === impl Memory ===

impl Memory {
    /// An empty memory whose entries are worth `fresh_for` seconds.
    pub fn new(fresh_for: u32) -> Self {
        // `vec!` of zeros asks the allocator for zeroed memory, which it maps without writing:
        // a shard's pages cost nothing until a token is kept in them.
        let shards = (0..SHARDS)
            .map(|_| Mutex::new(vec![[0_u64; SET_WORDS]; SETS].into_boxed_slice()))
            .collect();
        Self { shards, fresh_for }
    }

    /// The entry kept for `key`, if any (fresh or not: the caller decides).
    pub fn get(&self, key: u128) -> Option<Entry> {
        let (shard, sets, h0, h1) = Self::place(key);
        let table = self.lock(shard);
        sets.into_iter().find_map(|s| {
            let set = table.get(s)?;
            find(set, h0, h1).map(|way| read(set, way))
        })
    }

    /// Keeps `entry` for `key` at time `now` (the verifier's seconds), in place of what was
    /// kept for it, else in a free or stale slot of the freer of its sets, else in place of
    /// the stalest entry of both.
    pub fn insert(&self, key: u128, entry: Entry, now: u32) {
        let (shard, [a, b], h0, h1) = Self::place(key);
        if h0 == 0 && h1 == 0 {
            // The empty slot's key: not kept (one token in 2^128).
            return;
        }
        let mut table = self.lock(shard);
        let fresh_for = self.fresh_for;
        let free = |set: &[u64; SET_WORDS], way: usize| {
            is_empty(set, way) || now.saturating_sub(read(set, way).verified_at) >= fresh_for
        };
        let mut target = None;
        for s in [a, b] {
            if let Some(way) = table.get(s).and_then(|set| find(set, h0, h1)) {
                target = Some((s, way));
                break;
            }
        }
        let target = target.or_else(|| {
            let free_ways = |s: usize| {
                table
                    .get(s)
                    .map_or(0, |set| (0..WAYS).filter(|&w| free(set, w)).count())
            };
            let s = if free_ways(b) > free_ways(a) { b } else { a };
            let set = table.get(s)?;
            (0..WAYS).find(|&w| free(set, w)).map(|w| (s, w))
        });
        let target = target.or_else(|| {
            [a, b]
                .into_iter()
                .flat_map(|s| (0..WAYS).map(move |w| (s, w)))
                .min_by_key(|&(s, w)| table.get(s).map_or(0, |set| read(set, w).verified_at))
        });
        if let Some(set) = target.and_then(|(s, w)| Some((table.get_mut(s)?, w))) {
            write(set.0, set.1, h0, h1, entry);
        }
    }

    /// Forgets `key`.
    pub fn remove(&self, key: u128) {
        let (shard, sets, h0, h1) = Self::place(key);
        let mut table = self.lock(shard);
        for s in sets {
            if let Some(set) = table.get_mut(s)
                && let Some(way) = find(set, h0, h1)
            {
                clear(set, way);
            }
        }
    }

    /// How many entries are kept (fresh or not); it reads the whole table.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        (0..SHARDS)
            .map(|shard| {
                self.lock(shard)
                    .iter()
                    .map(|set| (0..WAYS).filter(|&w| !is_empty(set, w)).count())
                    .sum::<usize>()
            })
            .sum()
    }

    /// The shard of `key`, its two sets there and its halves.
    fn place(key: u128) -> (usize, [usize; 2], u64, u64) {
        let h0 = (key >> 64) as u64;
        let h1 = key as u64;
        let shard = (h0 >> (64 - SHARDS.trailing_zeros())) as usize;
        (shard, [h0 as usize % SETS, h1 as usize % SETS], h0, h1)
    }

    fn lock(&self, shard: usize) -> std::sync::MutexGuard<'_, Shard> {
        // (`place` gives a shard below SHARDS.)
        self.shards[shard % SHARDS]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl std::fmt::Debug for Memory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Memory")
            .field("bytes", &BYTES)
            .finish_non_exhaustive()
    }
}

/// The way of `set` that holds the key (h0, h1).
fn find(set: &[u64; SET_WORDS], h0: u64, h1: u64) -> Option<usize> {
    (0..WAYS).find(|&way| set[way] == h0 && set[WAYS + 3 * way] == h1)
}

fn is_empty(set: &[u64; SET_WORDS], way: usize) -> bool {
    set[way] == 0 && set[WAYS + 3 * way] == 0
}

fn read(set: &[u64; SET_WORDS], way: usize) -> Entry {
    let times = set[WAYS + 3 * way + 1];
    Entry {
        exp: (times >> 32) as u32,
        verified_at: times as u32,
        spans: Spans::unpack(set[WAYS + 3 * way + 2]),
    }
}

fn write(set: &mut [u64; SET_WORDS], way: usize, h0: u64, h1: u64, entry: Entry) {
    set[way] = h0;
    set[WAYS + 3 * way] = h1;
    set[WAYS + 3 * way + 1] = (u64::from(entry.exp) << 32) | u64::from(entry.verified_at);
    set[WAYS + 3 * way + 2] = entry.spans.pack();
}

fn clear(set: &mut [u64; SET_WORDS], way: usize) {
    set[way] = 0;
    set[WAYS + 3 * way] = 0;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(verified_at: u32) -> Entry {
        Entry {
            exp: 4_102_444_800,
            verified_at,
            spans: Spans::At {
                workspace: (17, 36),
                subject: Some((70, 5)),
            },
        }
    }

    /// Keys as a keyed hash gives them, uniformly spread: a seed drawn for each test run.
    fn seed() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(7, |d| d.as_nanos() as u64)
    }

    fn keys(seed: u64, range: std::ops::Range<u64>) -> impl Iterator<Item = u128> {
        range.map(move |i| {
            let mut h = siphasher::sip128::SipHasher24::new_with_keys(seed, 0);
            std::hash::Hasher::write_u64(&mut h, i);
            siphasher::sip128::Hasher128::finish128(&h).as_u128()
        })
    }

    #[test]
    fn spans_pack_and_unpack() {
        for spans in [
            Spans::Parse,
            Spans::At {
                workspace: (0, 0),
                subject: None,
            },
            Spans::At {
                workspace: (65_000, 500),
                subject: Some((0, 65_534)),
            },
        ] {
            assert_eq!(Spans::unpack(spans.pack()), spans);
        }
        assert_eq!(Spans::span(65_535, 0), None, "the marker");
        assert_eq!(Spans::span(70_000, 1), None);
        assert_eq!(Spans::span(100, 36), Some((100, 36)));
    }

    #[test]
    fn an_entry_is_kept_replaced_and_forgotten() {
        let memory = Memory::new(60);
        let key = keys(seed(), 0..1).next().unwrap_or(1);
        assert_eq!(memory.get(key), None);
        memory.insert(key, entry(5), 5);
        assert_eq!(memory.get(key), Some(entry(5)));
        memory.insert(key, entry(9), 9);
        assert_eq!(memory.get(key), Some(entry(9)));
        assert_eq!(memory.len(), 1, "replaced in place");
        memory.remove(key);
        assert_eq!(memory.get(key), None);
        assert_eq!(memory.len(), 0);
        // A key that differs in one half only is another key.
        memory.insert(key, entry(1), 1);
        assert_eq!(memory.get(key ^ 1), None);
        assert_eq!(memory.get(key ^ (1 << 64)), None);
    }

    /// 200,000 pilots are all kept: the fleet in 16 MiB.
    #[test]
    fn two_hundred_thousand_pilots_are_all_kept() {
        const { assert!(PILOTS >= 200_000) };
        let memory = Memory::new(60);
        let all: Vec<u128> = keys(seed(), 0..200_000).collect();
        for &key in &all {
            memory.insert(key, entry(1), 1);
        }
        let lost = all.iter().filter(|&&k| memory.get(k).is_none()).count();
        assert_eq!(lost, 0, "of 200,000");
        assert_eq!(memory.len(), 200_000);
    }

    /// Past its size the memory forgets the stalest entries first, and a stale slot is taken
    /// before a fresh one.
    #[test]
    fn a_full_memory_forgets_the_stalest() {
        let memory = Memory::new(60);
        let seed = seed();
        let slots = (SHARDS * SETS * WAYS) as u64;
        let old: Vec<u128> = keys(seed, 0..slots).collect();
        for &key in &old {
            memory.insert(key, entry(0), 0);
        }
        // Some fresh keys arrive: each takes an old key's slot, never a fresh key's.
        let before = memory.len();
        let fresh: Vec<u128> = keys(seed, slots..slots + 50_000).collect();
        for &key in &fresh {
            memory.insert(key, entry(100), 100);
        }
        let lost = fresh.iter().filter(|&&k| memory.get(k).is_none()).count();
        assert_eq!(lost, 0, "a stale slot is always taken first");
        let old_kept = old.iter().filter(|&&k| memory.get(k).is_some()).count();
        assert!(
            before > slots as usize * 9 / 10,
            "{before} of {slots} slots used"
        );
        assert_eq!(old_kept + fresh.len(), memory.len());
        assert!(
            memory.len() >= before,
            "no slot is left empty to take a fresh key"
        );
    }
}
