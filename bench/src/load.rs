//! The HTTP load: issue calls either closed-loop (a fixed number in flight)
//! or open-loop (a fixed offered rate, latency counted from each call's
//! scheduled start, so a stalled server cannot hide its queueing delay).
//! An answer is a `202` (queued), a `200` repeat (the user's earlier
//! request, nothing queued), a `409` (sold out), or a failure.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Deserialize;
use tokio::sync::mpsc::UnboundedSender;
use tokio::sync::Semaphore;
use uuid::Uuid;

/// How calls are paced.
#[derive(Debug, Clone, Copy)]
pub enum Pace {
    /// `concurrency` calls in flight at all times.
    Closed { concurrency: usize },
    /// One call every `1 / rate` seconds, over at most `connections` calls in
    /// flight (a client's connection pool); a call that waits for a free
    /// connection counts its wait, as latency runs from its scheduled start.
    Open { rate: f64, connections: usize },
}

/// What the api answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// `202`, with the request id.
    Accepted(Uuid),
    /// `200` with `"repeat": true`: the user already had a pending or
    /// winning request for the coupon, whose id this is; nothing queued.
    Repeat(Uuid),
    /// `409 SOLD_OUT`: answered at once, nothing queued.
    SoldOut,
    /// Anything else, or no answer.
    Failed,
}

/// One call: which one, when it finished and how long it took.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    pub index: usize,
    pub done: Duration,
    pub latency: Duration,
    pub outcome: Outcome,
    /// Open loop, sampled calls only: from the scheduled start until
    /// `GET /issue-requests/{id}` first answered `200`.
    pub to_result: Option<Duration>,
}

/// Live counters for the progress line.
#[derive(Debug, Default)]
pub struct Counters {
    pub sent: AtomicUsize,
    pub accepted: AtomicU64,
    pub repeats: AtomicU64,
    pub sold_out: AtomicU64,
    pub failed: AtomicU64,
}

/// Where the calls go.
pub struct Plan {
    pub api: String,
    /// One url per call, in order.
    pub urls: Vec<String>,
    pub pace: Pace,
    /// Open loop: every `result_sample`-th accepted call is followed until it
    /// has a result (0: none).
    pub result_sample: usize,
    /// Closed loop: every answer, by call index, as it comes (the channel
    /// closes when the last call is answered).
    pub answers: Option<UnboundedSender<(usize, Outcome)>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AcceptedBody {
    request_id: Uuid,
}

/// The `200` of a repeat click: the user's earlier request.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RepeatBody {
    request_id: Uuid,
    repeat: bool,
}

pub fn client(concurrency: usize) -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency.max(16))
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(30))
        .build()?)
}

async fn fire(client: &reqwest::Client, url: &str) -> Outcome {
    let Ok(res) = client.post(url).send().await else {
        return Outcome::Failed;
    };
    let status = res.status().as_u16();
    // Read the whole body: the call is over when the answer is.
    let Ok(body) = res.bytes().await else {
        return Outcome::Failed;
    };
    match status {
        202 => serde_json::from_slice::<AcceptedBody>(&body)
            .map(|b| Outcome::Accepted(b.request_id))
            .unwrap_or(Outcome::Failed),
        200 => match serde_json::from_slice::<RepeatBody>(&body) {
            Ok(b) if b.repeat => Outcome::Repeat(b.request_id),
            _ => Outcome::Failed,
        },
        409 => Outcome::SoldOut,
        _ => Outcome::Failed,
    }
}

fn count(counters: &Counters, outcome: Outcome) {
    let c = match outcome {
        Outcome::Accepted(_) => &counters.accepted,
        Outcome::Repeat(_) => &counters.repeats,
        Outcome::SoldOut => &counters.sold_out,
        Outcome::Failed => &counters.failed,
    };
    c.fetch_add(1, Ordering::Relaxed);
}

/// Polls the request's result every 10 ms until it is final.
async fn follow(client: &reqwest::Client, api: &str, id: Uuid, from: Instant) -> Option<Duration> {
    let url = format!("{api}/api/coupons/issue-requests/{id}");
    let deadline = from + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Ok(r) = client.get(&url).send().await {
            let done = r.status().as_u16() == 200;
            let _ = r.bytes().await;
            if done {
                return Some(from.elapsed());
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    None
}

/// Runs the plan; returns the samples in call order and the time it took.
pub async fn run(
    client: reqwest::Client,
    plan: Plan,
    counters: Arc<Counters>,
) -> anyhow::Result<(Vec<Sample>, Duration)> {
    let plan = Arc::new(plan);
    let start = Instant::now();
    let mut samples = match plan.pace {
        Pace::Closed { concurrency } => {
            let next = Arc::new(AtomicUsize::new(0));
            let mut tasks = Vec::with_capacity(concurrency);
            for _ in 0..concurrency {
                let (client, plan, next, counters) =
                    (client.clone(), plan.clone(), next.clone(), counters.clone());
                tasks.push(tokio::spawn(async move {
                    let mut mine = Vec::new();
                    loop {
                        let index = next.fetch_add(1, Ordering::Relaxed);
                        let Some(url) = plan.urls.get(index) else {
                            break;
                        };
                        counters.sent.fetch_add(1, Ordering::Relaxed);
                        let t = Instant::now();
                        let outcome = fire(&client, url).await;
                        count(&counters, outcome);
                        if let Some(tx) = &plan.answers {
                            // The receiver may have stopped listening.
                            let _ = tx.send((index, outcome));
                        }
                        mine.push(Sample {
                            index,
                            done: start.elapsed(),
                            latency: t.elapsed(),
                            outcome,
                            to_result: None,
                        });
                    }
                    mine
                }));
            }
            let mut all = Vec::with_capacity(plan.urls.len());
            for t in tasks {
                all.extend(t.await?);
            }
            all
        }
        Pace::Open { rate, connections } => {
            let gate = Arc::new(Semaphore::new(connections.max(1)));
            let mut tasks = Vec::with_capacity(plan.urls.len());
            for index in 0..plan.urls.len() {
                let due = start + Duration::from_secs_f64(index as f64 / rate);
                tokio::time::sleep_until(due.into()).await;
                let (client, plan, counters) = (client.clone(), plan.clone(), counters.clone());
                let gate = gate.clone();
                counters.sent.fetch_add(1, Ordering::Relaxed);
                tasks.push(tokio::spawn(async move {
                    let permit = gate.acquire_owned().await.expect("gate is never closed");
                    let outcome = fire(&client, &plan.urls[index]).await;
                    drop(permit);
                    count(&counters, outcome);
                    let (done, latency) = (start.elapsed(), due.elapsed());
                    let to_result = match outcome {
                        Outcome::Accepted(id)
                            if plan.result_sample > 0 && index % plan.result_sample == 0 =>
                        {
                            follow(&client, &plan.api, id, due).await
                        }
                        _ => None,
                    };
                    Sample {
                        index,
                        done,
                        latency,
                        outcome,
                        to_result,
                    }
                }));
            }
            let mut all = Vec::with_capacity(tasks.len());
            for t in tasks {
                all.push(t.await?);
            }
            all
        }
    };
    let elapsed = samples.iter().map(|s| s.done).max().unwrap_or_default();
    samples.sort_by_key(|s| s.index);
    Ok((samples, elapsed))
}

/// The repeat answers that do not name a request this run saw accepted
/// (`202`) for the same user: the gate must only hand out the user's own
/// request. `user_of` gives the user of a call by its index; at most
/// `max` are described.
pub fn stray_repeats(
    samples: &[Sample],
    user_of: impl Fn(usize) -> i64,
    max: usize,
) -> Vec<String> {
    let accepted: HashMap<Uuid, i64> = samples
        .iter()
        .filter_map(|s| match s.outcome {
            Outcome::Accepted(id) => Some((id, user_of(s.index))),
            _ => None,
        })
        .collect();
    let stray: Vec<(Uuid, i64)> = samples
        .iter()
        .filter_map(|s| match s.outcome {
            Outcome::Repeat(id) if accepted.get(&id) != Some(&user_of(s.index)) => {
                Some((id, user_of(s.index)))
            }
            _ => None,
        })
        .collect();
    if stray.is_empty() {
        return vec![];
    }
    let mut out = vec![format!(
        "{} repeat answer(s) name no request accepted for their user",
        stray.len()
    )];
    out.extend(
        stray
            .iter()
            .take(max)
            .map(|(id, user)| format!("user {user} was answered with request {id}")),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(index: usize, outcome: Outcome) -> Sample {
        Sample {
            index,
            done: Duration::ZERO,
            latency: Duration::ZERO,
            outcome,
            to_result: None,
        }
    }

    #[test]
    fn a_repeat_must_name_its_users_accepted_request() {
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        // Calls 0..4 are users 1, 1, 2, 2 and 3.
        let users = [1, 1, 2, 2, 3];
        let good = [
            sample(0, Outcome::Accepted(a)),
            sample(1, Outcome::Repeat(a)),
            sample(2, Outcome::Accepted(b)),
            sample(3, Outcome::SoldOut),
        ];
        assert!(stray_repeats(&good, |i| users[i], 3).is_empty());
        // User 3 is told of user 1's request, and of one nobody was given.
        let bad = [
            sample(0, Outcome::Accepted(a)),
            sample(1, Outcome::Repeat(a)),
            sample(4, Outcome::Repeat(a)),
            sample(4, Outcome::Repeat(b)),
        ];
        let v = stray_repeats(&bad, |i| users[i], 1);
        assert_eq!(v.len(), 2);
        assert_eq!(
            v[0],
            "2 repeat answer(s) name no request accepted for their user"
        );
        assert_eq!(v[1], format!("user 3 was answered with request {a}"));
    }
}
