//! The latest requests' entries, bounded by count and by age: the oldest
//! goes first. Request ids are UUID v7, made when the request is accepted,
//! so the order of insertion is the order of age, and a queue per shard is
//! all the bookkeeping eviction needs. An insert costs a hash, a push and
//! a lock of one shard of sixteen; a general-purpose cache (admission,
//! recency, a write log) cost the accept path over a microsecond.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use foldhash::fast::RandomState;
use uuid::Uuid;

const SHARDS: usize = 16;

/// Entries by request id: at most `capacity` (the latest), none older than
/// `ttl`.
pub struct Recent<V> {
    shards: Box<[Mutex<Shard<V>>]>,
    per_shard: usize,
    ttl: Duration,
}

struct Shard<V> {
    /// The value, when it was inserted, and the insertion's number.
    entries: HashMap<Uuid, (V, Instant, u64), RandomState>,
    /// Insertion order, oldest first.
    order: VecDeque<(Uuid, Instant, u64)>,
    inserted: u64,
}

impl<V: Clone> Recent<V> {
    pub fn new(capacity: usize, ttl: Duration) -> Self {
        let per_shard = (capacity / SHARDS).max(1);
        let shards = (0..SHARDS)
            .map(|_| {
                Mutex::new(Shard {
                    entries: HashMap::default(),
                    order: VecDeque::new(),
                    inserted: 0,
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

    /// Remembers `value` for `id`, dropping the oldest entries past the
    /// shard's share of the capacity or the age limit.
    pub fn insert(&self, id: Uuid, value: V) {
        let now = Instant::now();
        let mut shard = self.shard(&id).lock().expect("recent shard lock");
        shard.inserted += 1;
        let n = shard.inserted;
        shard.entries.insert(id, (value, now, n));
        shard.order.push_back((id, now, n));
        while let Some(&(old, at, m)) = shard.order.front() {
            if shard.order.len() <= self.per_shard && now.duration_since(at) < self.ttl {
                break;
            }
            shard.order.pop_front();
            // An id inserted again is kept for its later insertion.
            if shard.entries.get(&old).is_some_and(|e| e.2 == m) {
                shard.entries.remove(&old);
            }
        }
    }

    /// The entry of `id`, unless it is gone or older than the age limit.
    pub fn get(&self, id: &Uuid) -> Option<V> {
        let shard = self.shard(id).lock().expect("recent shard lock");
        shard
            .entries
            .get(id)
            .filter(|(_, at, _)| at.elapsed() < self.ttl)
            .map(|(v, _, _)| v.clone())
    }

    /// How many entries are held (expired ones included until an insert
    /// drops them).
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
        let recent = Recent::new(100, Duration::from_millis(50));
        let old = Uuid::now_v7();
        recent.insert(old, 1);
        assert_eq!(recent.get(&old), Some(1));
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(recent.get(&old), None);
        let new = Uuid::now_v7();
        recent.insert(new, 2);
        assert_eq!(recent.get(&new), Some(2));
    }

    #[test]
    fn an_id_inserted_again_keeps_its_latest_value() {
        let recent = Recent::new(SHARDS, Duration::from_secs(60));
        let id = Uuid::now_v7();
        recent.insert(id, 1);
        recent.insert(id, 2);
        assert_eq!(recent.get(&id), Some(2));
    }
}
