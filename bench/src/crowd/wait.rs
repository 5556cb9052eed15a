//! The waiting users of a crowd: one task per user with a `202`, asking for
//! that request's result until told, at most `--waiters` look-ups in flight
//! (the users take turns through a fair semaphore; a pause holds no turn).

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use uuid::Uuid;

use super::CrowdArgs;
use crate::load::Outcome;

/// The waiting users, live.
#[derive(Debug, Default)]
pub struct Waiting {
    pub users: AtomicUsize,
    pub known: AtomicUsize,
    pub lookups: AtomicUsize,
    pub pending: AtomicUsize,
    pub early: AtomicUsize,
    pub errors: AtomicUsize,
}

/// The request a user waits for: their first accepted one. Any of a user's
/// requests tells them their fate, since a coupon's queue is served in
/// order: after a `SUCCESS` their later requests are `DUPLICATE_REQUEST`,
/// after an `OUT_OF_STOCK` they are `OUT_OF_STOCK` too.
#[derive(Debug, Default)]
struct FirstAccepted(HashSet<i64>);

impl FirstAccepted {
    /// The request to wait for, when this answer is the user's first `202`.
    fn take(&mut self, user: i64, outcome: Outcome) -> Option<Uuid> {
        match outcome {
            Outcome::Accepted(id) if self.0.insert(user) => Some(id),
            _ => None,
        }
    }
}

/// Starts a waiter for every user's first accepted request, as its `202`
/// comes or, with `after_clicks`, once the clicks are over (the channel
/// closes); returns the waiters then.
pub async fn dispatch(
    mut answers: UnboundedReceiver<(usize, Outcome)>,
    waiters: Arc<Waiters>,
    user_of: Arc<Vec<i64>>,
    after_clicks: bool,
) -> Vec<JoinHandle<Option<Instant>>> {
    let mut first = FirstAccepted::default();
    let (mut running, mut held) = (vec![], vec![]);
    while let Some((index, outcome)) = answers.recv().await {
        if let Some(id) = first.take(user_of[index], outcome) {
            if after_clicks {
                held.push(id);
            } else {
                running.push(waiters.spawn(id));
            }
        }
    }
    running.extend(held.into_iter().map(|id| waiters.spawn(id)));
    running
}

/// When every waiting user knew their result, from `start`.
pub async fn know_all(
    waiters: Vec<JoinHandle<Option<Instant>>>,
    start: Instant,
) -> anyhow::Result<Vec<Duration>> {
    let n = waiters.len();
    let mut knows = Vec::with_capacity(n);
    for w in waiters {
        if let Some(at) = w.await? {
            knows.push(at.duration_since(start));
        }
    }
    if knows.len() < n {
        bail!(
            "{} of {n} waiting users had no result after the timeout",
            n - knows.len()
        );
    }
    Ok(knows)
}

/// What every waiting user shares: the client, the turns, the rules.
pub struct Waiters {
    client: reqwest::Client,
    turns: Semaphore,
    api: String,
    wait_ms: u64,
    pause: Duration,
    deadline: Instant,
    live: Arc<Waiting>,
}

impl Waiters {
    pub fn new(args: &CrowdArgs, live: Arc<Waiting>, deadline: Instant) -> anyhow::Result<Self> {
        let waiters = args.waiters.max(1);
        Ok(Self {
            client: reqwest::Client::builder()
                .pool_max_idle_per_host(waiters)
                .tcp_nodelay(true)
                .timeout(Duration::from_millis(args.wait_ms) + Duration::from_secs(30))
                .build()?,
            turns: Semaphore::new(waiters),
            api: args.target.api.clone(),
            wait_ms: args.wait_ms,
            pause: Duration::from_millis(args.pause_ms),
            deadline,
            live,
        })
    }

    fn spawn(self: &Arc<Self>, request: Uuid) -> JoinHandle<Option<Instant>> {
        self.live.users.fetch_add(1, Ordering::Relaxed);
        let me = self.clone();
        tokio::spawn(async move { me.wait_for(request).await })
    }

    /// One user asking until told: when the `200` came, or none by the
    /// deadline.
    async fn wait_for(&self, request: Uuid) -> Option<Instant> {
        let url = format!(
            "{}/api/coupons/issue-requests/{request}?waitMs={}",
            self.api, self.wait_ms
        );
        let live = &self.live;
        while Instant::now() < self.deadline {
            let turn = self.turns.acquire().await.expect("never closed");
            let asked = Instant::now();
            let status = match self.client.get(&url).send().await {
                // Read the whole body: the call is over when the answer is.
                Ok(r) => {
                    let status = r.status().as_u16();
                    r.bytes().await.ok().map(|_| status)
                }
                Err(_) => None,
            };
            drop(turn);
            live.lookups.fetch_add(1, Ordering::Relaxed);
            match status {
                Some(200) => {
                    live.known.fetch_add(1, Ordering::Relaxed);
                    return Some(Instant::now());
                }
                Some(202) => {
                    live.pending.fetch_add(1, Ordering::Relaxed);
                    if asked.elapsed() < Duration::from_millis(self.wait_ms / 2) {
                        live.early.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(self.pause).await;
                    }
                }
                _ => {
                    live.errors.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(self.pause).await;
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_waits_for_their_first_accepted_request() {
        let (a, b, c) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        let mut first = FirstAccepted::default();
        assert_eq!(first.take(1, Outcome::SoldOut), None);
        assert_eq!(first.take(1, Outcome::Accepted(a)), Some(a));
        // A door without the gate queues the user's repeat: still `a`.
        assert_eq!(first.take(1, Outcome::Accepted(b)), None);
        assert_eq!(first.take(1, Outcome::Repeat(a)), None);
        assert_eq!(first.take(2, Outcome::Accepted(c)), Some(c));
    }
}
