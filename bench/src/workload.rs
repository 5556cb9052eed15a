//! The requests of a run: `requests` issue calls from `users` distinct users
//! (every user at least once, the rest repeats drawn at random), spread
//! uniformly over `coupons` coupons, in a shuffled but seeded order so that
//! repeated runs send the same sequence.

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

/// One issue call: index of the coupon in the run's list, and the user.
#[derive(Debug, Clone, Copy)]
pub struct Call {
    pub coupon: usize,
    pub user: i64,
}

pub fn calls(requests: usize, users: usize, coupons: usize, seed: u64) -> Vec<Call> {
    let users = users.clamp(1, requests.max(1));
    let mut rng = StdRng::seed_from_u64(seed);
    let mut ids: Vec<i64> = (1..=users as i64).collect();
    ids.extend((users..requests).map(|_| rng.gen_range(1..=users as i64)));
    ids.shuffle(&mut rng);
    ids.into_iter()
        .map(|user| Call {
            coupon: rng.gen_range(0..coupons.max(1)),
            user,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn every_user_appears_and_only_those_users() {
        let c = calls(1000, 300, 20, 7);
        assert_eq!(c.len(), 1000);
        let distinct: HashSet<i64> = c.iter().map(|c| c.user).collect();
        assert_eq!(distinct.len(), 300);
        assert!(c.iter().all(|c| c.coupon < 20));
    }

    #[test]
    fn the_same_seed_sends_the_same_sequence() {
        let a: Vec<i64> = calls(100, 50, 1, 1).iter().map(|c| c.user).collect();
        let b: Vec<i64> = calls(100, 50, 1, 1).iter().map(|c| c.user).collect();
        assert_eq!(a, b);
    }
}
