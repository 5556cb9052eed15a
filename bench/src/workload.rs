//! The requests of a run: `requests` issue calls from `users` distinct users
//! (every user at least once, the rest repeats drawn at random), spread
//! uniformly over `coupons` coupons, in a shuffled but seeded order so that
//! repeated runs send the same sequence; and a crowd's clicks: every user
//! the same number of times, shuffled, so that one user's clicks are spread
//! over the whole phase.

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

/// The users of `users × clicks` clicks on one coupon (users `1..=users`,
/// each exactly `clicks` times), in a seeded shuffled order.
pub fn crowd(users: usize, clicks: usize, seed: u64) -> Vec<i64> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut out: Vec<i64> = (1..=users as i64)
        .flat_map(|u| std::iter::repeat_n(u, clicks))
        .collect();
    out.shuffle(&mut rng);
    out
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

    #[test]
    fn a_crowd_clicks_each_user_the_same_number_of_times_spread_out() {
        let c = crowd(1000, 5, 3);
        assert_eq!(c.len(), 5000);
        let mut per_user = std::collections::HashMap::new();
        for u in &c {
            *per_user.entry(*u).or_insert(0) += 1;
        }
        assert_eq!(per_user.len(), 1000);
        assert!(per_user.values().all(|n| *n == 5));
        // Shuffled: user 1's clicks are not all at the start.
        let last_of_1 = c.iter().rposition(|u| *u == 1).unwrap();
        assert!(last_of_1 > 100, "{last_of_1}");
        assert_eq!(c, crowd(1000, 5, 3));
    }
}
