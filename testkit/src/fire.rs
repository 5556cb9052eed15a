//! Volleys of issue requests, and what the api answered them: accepted
//! (with the place each client was told), sold out, or refused while a
//! service was down.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::domain::{CouponId, QueueType};
use serde::Deserialize;
use tokio::sync::Semaphore;
use uuid::Uuid;

use crate::app::TestApp;

/// The `202` of an accepted issue request.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Accepted {
    pub request_id: Uuid,
    pub user_id: i64,
    pub queue_position: String,
    /// The queue the request went to.
    pub queue: QueueType,
}

/// The `200` of a repeat click: the user's request, nothing queued.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Repeated {
    pub request_id: Uuid,
    pub user_id: i64,
    pub status: common::domain::IssueStatus,
    pub queue_position: Option<String>,
    pub ahead: Option<u64>,
    pub repeat: bool,
}

/// How the api answered one issue request.
enum Answer {
    Accepted(Accepted),
    Repeat(Repeated),
    /// `409 SOLD_OUT`: not queued.
    SoldOut,
    /// `503`, with the request id when the outcome is unknown.
    Refused(Option<Uuid>),
}

/// What a volley of requests met while a service was down.
#[derive(Debug, Default)]
pub struct Refusals {
    pub accepted: Vec<Accepted>,
    /// Answered `200`, a repeat of the user's request.
    pub repeats: Vec<Repeated>,
    /// Answered `409 SOLD_OUT` (nothing queued).
    pub sold_out: usize,
    /// Answered 503.
    pub refused: usize,
    /// Of those, the ones whose outcome is unknown (`QUEUE_OUTCOME_UNKNOWN`).
    pub unconfirmed: HashSet<Uuid>,
}

impl Refusals {
    /// Every repeat names a request that was accepted for the same user
    /// (the gate never answers with a request nobody was given).
    pub fn check_repeats(&self) {
        let accepted: std::collections::HashMap<Uuid, i64> = self
            .accepted
            .iter()
            .map(|a| (a.request_id, a.user_id))
            .collect();
        for r in &self.repeats {
            assert!(r.repeat, "{r:?}");
            assert_eq!(
                accepted.get(&r.request_id),
                Some(&r.user_id),
                "a repeat must name an accepted request of its user: {r:?}"
            );
        }
    }

    fn absorb(&mut self, other: Refusals) {
        self.accepted.extend(other.accepted);
        self.repeats.extend(other.repeats);
        self.sold_out += other.sold_out;
        self.refused += other.refused;
        self.unconfirmed.extend(other.unconfirmed);
    }
}

/// `n` requests from `distinct` users: every user once, then repeats of the
/// first users, shuffled so repeats arrive anywhere.
pub fn users_with_repeats(n: usize, distinct: usize) -> Vec<i64> {
    use rand::seq::SliceRandom;
    let mut users: Vec<i64> = (1..=distinct as i64).collect();
    users.extend((0..n - distinct).map(|i| (i % distinct) as i64 + 1));
    users.shuffle(&mut rand::thread_rng());
    users
}

impl TestApp {
    /// Fires one request per entry of `users`, `concurrency` at a time;
    /// returns the accepted ones. Every request must be accepted, answered
    /// as a repeat of an accepted request of its user, or answered `409
    /// SOLD_OUT` once the coupon's stock is gone.
    pub async fn fire(&self, coupon: CouponId, users: &[i64], concurrency: usize) -> Vec<Accepted> {
        self.fire_all(coupon, users, concurrency).await.accepted
    }

    /// [`TestApp::fire`], returning every answer: the repeats too.
    pub async fn fire_all(&self, coupon: CouponId, users: &[i64], concurrency: usize) -> Refusals {
        let sale = self.fire_tolerant(coupon, users, concurrency).await;
        assert_eq!(sale.refused, 0, "every request is accepted or sold out");
        sale.check_repeats();
        sale
    }

    /// Like [`TestApp::fire`], but a refused request (503 while a service is
    /// down) is counted instead of failing the test. Returns the accepted
    /// requests and how many were refused; any other answer fails the test.
    pub async fn fire_tolerant(
        &self,
        coupon: CouponId,
        users: &[i64],
        concurrency: usize,
    ) -> Refusals {
        let gate = Arc::new(Semaphore::new(concurrency));
        let mut tasks = Vec::with_capacity(users.len());
        for user in users {
            let permit = gate.clone().acquire_owned().await.unwrap();
            let client = self.client.clone();
            let url = format!(
                "{}/api/coupons/{}/issue?userId={user}",
                self.address,
                coupon.get()
            );
            tasks.push(tokio::spawn(async move {
                let res = client.post(url).send().await.expect("api answers");
                drop(permit);
                match res.status().as_u16() {
                    202 => Answer::Accepted(res.json::<Accepted>().await.unwrap()),
                    200 => Answer::Repeat(res.json::<Repeated>().await.unwrap()),
                    409 => {
                        let body: serde_json::Value = res.json().await.unwrap();
                        assert_eq!(body["error"]["code"], "SOLD_OUT", "{body}");
                        Answer::SoldOut
                    }
                    503 => {
                        let body: serde_json::Value = res.json().await.unwrap();
                        Answer::Refused(
                            body["error"]["requestId"]
                                .as_str()
                                .map(|id| Uuid::parse_str(id).unwrap()),
                        )
                    }
                    other => panic!("unexpected {other}: {:?}", res.text().await),
                }
            }));
        }
        let mut out = Refusals::default();
        for t in tasks {
            match t.await.unwrap() {
                Answer::Accepted(a) => out.accepted.push(a),
                Answer::Repeat(r) => out.repeats.push(r),
                Answer::SoldOut => out.sold_out += 1,
                Answer::Refused(Some(id)) => {
                    out.refused += 1;
                    out.unconfirmed.insert(id);
                }
                Answer::Refused(None) => out.refused += 1,
            }
        }
        out
    }

    /// Fires volleys of 100 requests from fresh users (1, 2, 3, ...) at
    /// `coupon` until `outage` (which kills and restarts a service) is over,
    /// then goes on until the coupon sells out (the api answers
    /// `SOLD_OUT`), so the sale runs through the outage and past it however
    /// fast either runs and however long the service takes to recover.
    pub async fn fire_through_outage(
        &self,
        coupon: CouponId,
        outage: impl std::future::Future<Output = ()>,
    ) -> Refusals {
        self.fire_through_outage_every(coupon, Duration::from_millis(20), outage)
            .await
    }

    /// [`TestApp::fire_through_outage`] with a volley every `every` (at
    /// least): a long outage with a bounded number of calls.
    pub async fn fire_through_outage_every(
        &self,
        coupon: CouponId,
        every: Duration,
        outage: impl std::future::Future<Output = ()>,
    ) -> Refusals {
        let over = std::sync::atomic::AtomicBool::new(false);
        let mut next_user = 1i64;
        let mut fresh = |n: usize| {
            let users: Vec<i64> = (next_user..next_user + n as i64).collect();
            next_user += n as i64;
            users
        };
        let mut all = Refusals::default();
        let firing = async {
            while !over.load(std::sync::atomic::Ordering::SeqCst) {
                let volley = tokio::time::sleep(every);
                all.absorb(self.fire_tolerant(coupon, &fresh(100), 50).await);
                volley.await;
            }
        };
        let outage = async {
            outage.await;
            over.store(true, std::sync::atomic::Ordering::SeqCst);
        };
        tokio::join!(firing, outage);
        let recovered = Instant::now();
        while all.sold_out == 0 {
            assert!(
                recovered.elapsed() < Duration::from_secs(120),
                "the coupon did not sell out within 120 s of the restart: {} accepted, {} refused",
                all.accepted.len(),
                all.refused
            );
            let volley = tokio::time::sleep(every);
            all.absorb(self.fire_tolerant(coupon, &fresh(100), 50).await);
            volley.await;
        }
        all
    }
}
