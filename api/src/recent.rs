//! The latest requests' entries, bounded by count and by age: the oldest
//! goes first. An entry's age counts from its first insertion, so a queue
//! per shard in that order is all the bookkeeping eviction needs (request
//! ids are UUID v7, made when the request is accepted). An insert costs a
//! hash, a push and a lock of one shard of sixteen; a general-purpose cache
//! (admission, recency, a write log) cost the accept path more (see
//! docs/performance.md, "Profile of the accept path").
//!
//! A look-up does not keep an entry: unlike a least-recently-used cache, a
//! request asked about often leaves when it is the oldest all the same.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use foldhash::fast::RandomState;
use uuid::Uuid;

const SHARDS: usize = 16;

/// Entries by request id: the latest `capacity` (rounded down to a multiple
/// of sixteen, at least sixteen), none older than `ttl`.
pub struct Recent<V> {
    shards: Box<[Mutex<Shard<V>>]>,
    per_shard: usize,
    ttl: Duration,
}

struct Shard<V> {
    /// The value, and when its id was first inserted.
    entries: HashMap<Uuid, (V, Instant), RandomState>,
    /// The ids in order of first insertion, oldest first: each once.
    order: VecDeque<(Uuid, Instant)>,
}

impl<V: Clone> Recent<V> {
    pub fn new(capacity: usize, ttl: Duration) -> Self {
        let per_shard = (capacity / SHARDS).max(1);
        let shards = (0..SHARDS)
            .map(|_| {
                Mutex::new(Shard {
                    entries: HashMap::default(),
                    order: VecDeque::new(),
                })
            })
            .collect();
        Self {
            shards,
            per_shard,
            ttl,
        }
    }

    fn shard(&self, id: &Uuid) -> &Mutex<Shard<V>> {
        // The last byte of a v7 id is random.
        &self.shards[usize::from(id.as_bytes()[15]) % SHARDS]
    }

    /// Remembers `value` for `id`. An id held already gets the new value
    /// and keeps its place (a repeat click hands out its request again);
    /// a new one goes last, and the oldest entries past the shard's share
    /// of the capacity or the age limit go.
    pub fn insert(&self, id: Uuid, value: V) {
        self.insert_at(id, value, Instant::now());
    }

    fn insert_at(&self, id: Uuid, value: V, now: Instant) {
        let mut shard = self.shard(&id).lock().expect("recent shard lock");
        match shard.entries.entry(id) {
            Entry::Occupied(mut held) => {
                held.get_mut().0 = value;
                return;
            }
            Entry::Vacant(new) => {
                new.insert((value, now));
            }
        }
        shard.order.push_back((id, now));
        while let Some(&(old, at)) = shard.order.front() {
            if shard.order.len() <= self.per_shard && now.saturating_duration_since(at) < self.ttl {
                break;
            }
            shard.order.pop_front();
            shard.entries.remove(&old);
        }
    }

    /// The entry of `id`, unless it is gone or older than the age limit.
    pub fn get(&self, id: &Uuid) -> Option<V> {
        self.get_at(id, Instant::now())
    }

    fn get_at(&self, id: &Uuid, now: Instant) -> Option<V> {
        let shard = self.shard(id).lock().expect("recent shard lock");
        shard
            .entries
            .get(id)
            .filter(|(_, at)| now.saturating_duration_since(*at) < self.ttl)
            .map(|(v, _)| v.clone())
    }

    /// How many entries are held (expired ones included until an insert
    /// into their shard drops them).
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().expect("recent shard lock").entries.len())
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A v7-shaped id whose last byte (its shard) is `shard`.
    fn id_in(shard: u8, n: u64) -> Uuid {
        let mut bytes = *Uuid::now_v7().as_bytes();
        bytes[7..15].copy_from_slice(&n.to_be_bytes()[..8]);
        bytes[15] = shard;
        Uuid::from_bytes(bytes)
    }

    #[test]
    fn keeps_the_latest_past_its_capacity() {
        let recent = Recent::new(1_600, Duration::from_secs(60));
        let ids: Vec<Uuid> = (0..10_000).map(|_| Uuid::now_v7()).collect();
        for (i, id) in ids.iter().enumerate() {
            recent.insert(*id, i);
        }
        assert!(recent.len() <= 1_600, "{}", recent.len());
        // Shards fill unevenly; the latest few hundred are in every one.
        for (i, id) in ids.iter().enumerate().skip(ids.len() - 300) {
            assert_eq!(recent.get(id), Some(i));
        }
        assert_eq!(recent.get(&ids[0]), None);
    }

    #[test]
    fn forgets_entries_past_their_age() {
        let ttl = Duration::from_secs(60);
        let recent = Recent::new(1_600, ttl);
        let t0 = Instant::now();
        let (old, new) = (id_in(3, 1), id_in(3, 2));
        recent.insert_at(old, 1, t0);
        assert_eq!(recent.get_at(&old, t0 + ttl / 2), Some(1));
        assert_eq!(recent.get_at(&old, t0 + ttl), None, "past its age");
        // The next insert into its shard drops it.
        recent.insert_at(new, 2, t0 + ttl);
        assert_eq!(recent.len(), 1);
        assert_eq!(recent.get_at(&new, t0 + ttl), Some(2));
    }

    #[test]
    fn an_id_inserted_again_keeps_its_place_with_the_new_value() {
        let recent = Recent::new(2 * SHARDS, Duration::from_secs(60));
        let (a, b, c) = (id_in(5, 1), id_in(5, 2), id_in(5, 3));
        recent.insert(a, 1);
        recent.insert(b, 1);
        // Inserted again, as a repeat click does: no second place in line.
        recent.insert(a, 2);
        recent.insert(a, 3);
        assert_eq!((recent.len(), recent.get(&a)), (2, Some(3)));
        // A third id in the shard of two: the oldest, `a`, goes.
        recent.insert(c, 1);
        assert_eq!(recent.get(&a), None);
        assert_eq!((recent.get(&b), recent.get(&c)), (Some(1), Some(1)));
    }
}
