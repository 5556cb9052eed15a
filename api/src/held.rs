//! Held lookups: the requests whose callers wait for their result (a
//! lookup with `waitMs`, or an event stream), looked up together.
//!
//! A waiting caller takes a [`Hold`] on its request id and awaits it;
//! callers of the same id share one entry. One background task, while any
//! id is held, reads the results of all held ids every [`LOOKUP_EVERY`] in
//! one query (per [`CHUNK`] ids) and hands each result found to its
//! callers, so a crowd of waiting callers costs one MySQL read per interval
//! and api instance instead of one per caller and poll:
//!
//! - invariant H1: at most one look-up round starts per [`LOOKUP_EVERY`],
//!   and a round makes `ceil(held ids / CHUNK)` queries; so an api with
//!   ids held for `t` makes at most `(t / LOOKUP_EVERY + 1) * chunks`
//!   queries, whatever the number of callers;
//! - invariant H2: a result written while its id is held reaches its
//!   callers within one interval plus one query (the next round reads it);
//! - a caller that stops waiting (its time ran out, it disconnected) drops
//!   its hold; the last one to go removes the entry.
//!
//! Nothing here fails a caller: while MySQL is down the rounds fail (each
//! counted and logged) and the callers keep waiting until their own time
//! runs out.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::db;
use common::domain::IssueResult;
use sqlx::MySqlPool;
use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// How often the held ids are looked up (invariants H1, H2).
pub const LOOKUP_EVERY: Duration = Duration::from_millis(150);
// Invariant H2 keeps the api's promise: a held call is answered within a
// second of its result being written, a query's time included.
const _: () = assert!(LOOKUP_EVERY.as_millis() <= 500);
/// Most ids in one query (each is a placeholder).
pub const CHUNK: usize = 1_000;

/// The registry of held request ids; cheap to clone.
#[derive(Clone)]
pub struct Held {
    inner: Arc<Inner>,
}

struct Inner {
    pool: MySqlPool,
    entries: Mutex<Entries>,
    /// Raised when an id is held: wakes the look-up task when it is idle.
    wake: Notify,
    /// The number of the last look-up round that finished (found, not
    /// found or failed); a hold is checked once the first round that
    /// included it finished.
    finished: watch::Sender<u64>,
    /// Fires when the api starts shutting down: callers stop waiting, so
    /// that the drain is not held up by them.
    closing: CancellationToken,
}

#[derive(Default)]
struct Entries {
    by_id: HashMap<Uuid, Entry>,
    /// The number of the last look-up round that started.
    started: u64,
}

/// One held id: its result once found, watched by every caller of the id.
type Entry = watch::Sender<Option<Arc<IssueResult>>>;

impl Held {
    /// An empty registry; its look-ups run once [`Held::spawn_lookups`] runs.
    pub fn new(pool: MySqlPool) -> Self {
        Self {
            inner: Arc::new(Inner {
                pool,
                entries: Mutex::default(),
                wake: Notify::new(),
                finished: watch::Sender::new(0),
                closing: CancellationToken::new(),
            }),
        }
    }

    /// Holds `id`: the next look-up round includes it.
    pub fn hold(&self, id: Uuid) -> Hold {
        let mut entries = self.inner.entries.lock().expect("held lock");
        let first_round = entries.started + 1;
        let result = entries
            .by_id
            .entry(id)
            .or_insert_with(|| watch::Sender::new(None))
            .subscribe();
        drop(entries);
        self.inner.wake.notify_one();
        Hold {
            inner: self.inner.clone(),
            id,
            result: Some(result),
            first_round,
            finished: self.inner.finished.subscribe(),
        }
    }

    /// Distinct ids held now.
    pub fn len(&self) -> usize {
        self.inner.entries.lock().expect("held lock").by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Tells every caller to stop waiting (the api is shutting down);
    /// later holds do not wait either.
    pub fn close(&self) {
        self.inner.closing.cancel();
    }

    /// Resolves once [`Held::close`] was called.
    pub async fn closing(&self) {
        self.inner.closing.cancelled().await;
    }

    /// Looks the held ids up every [`LOOKUP_EVERY`] while any is held,
    /// until `cancel` fires.
    pub fn spawn_lookups(&self, cancel: CancellationToken) -> tokio::task::JoinHandle<()> {
        let inner = self.inner.clone();
        tokio::spawn(async move {
            // Delay: after an idle spell the first round starts at once,
            // then one per interval (invariant H1).
            let mut tick = tokio::time::interval(LOOKUP_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut failing = false;
            loop {
                tokio::select! {
                    _ = inner.until_held() => {}
                    _ = cancel.cancelled() => return,
                }
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = cancel.cancelled() => return,
                }
                inner.round(&mut failing).await;
            }
        })
    }
}

impl Inner {
    /// Returns once an id is held.
    async fn until_held(&self) {
        loop {
            // A hold taken after this check leaves a permit in `wake`.
            if !self.entries.lock().expect("held lock").by_id.is_empty() {
                return;
            }
            metrics::gauge!("coupon_held_requests").set(0.0);
            self.wake.notified().await;
        }
    }

    /// One look-up round over every id held now.
    async fn round(&self, failing: &mut bool) {
        let (number, ids) = {
            let mut entries = self.entries.lock().expect("held lock");
            entries.started += 1;
            let ids: Vec<Uuid> = entries.by_id.keys().copied().collect();
            (entries.started, ids)
        };
        metrics::gauge!("coupon_held_requests").set(ids.len() as f64);
        for chunk in ids.chunks(CHUNK) {
            let read = db::find_results(&self.pool, chunk).await;
            let outcome = if read.is_ok() { "ok" } else { "error" };
            metrics::counter!("coupon_result_lookups_total", "outcome" => outcome).increment(1);
            match read {
                Ok(found) => {
                    if std::mem::take(failing) {
                        tracing::info!("held results are looked up again");
                    }
                    self.deliver(found);
                }
                Err(e) => {
                    // Callers keep waiting; the next round tries again.
                    if !std::mem::replace(failing, true) {
                        tracing::warn!(error = ?e, "looking up held results failed; callers keep waiting");
                    }
                    break;
                }
            }
        }
        self.finished.send_replace(number);
    }

    /// Hands each result to its callers; their ids are held no more.
    fn deliver(&self, found: Vec<IssueResult>) {
        if found.is_empty() {
            return;
        }
        let mut entries = self.entries.lock().expect("held lock");
        for result in found {
            if let Some(entry) = entries.by_id.remove(&result.request_id) {
                entry.send_replace(Some(Arc::new(result)));
            }
        }
    }
}

/// A caller's wait for one request's result; dropping it stops the wait.
pub struct Hold {
    inner: Arc<Inner>,
    id: Uuid,
    /// `None` only while dropping.
    result: Option<watch::Receiver<Option<Arc<IssueResult>>>>,
    /// The first look-up round that includes this hold.
    first_round: u64,
    finished: watch::Receiver<u64>,
}

impl Hold {
    /// The request's result, once a look-up round found it.
    pub async fn result(&mut self) -> Arc<IssueResult> {
        let rx = self.result.as_mut().expect("a live hold");
        let found = rx
            .wait_for(Option::is_some)
            .await
            .ok()
            .and_then(|r| r.clone());
        match found {
            Some(result) => result,
            // The entry went without a result: cannot happen while this
            // hold watches it (only a delivery or the last hold removes it).
            None => std::future::pending().await,
        }
    }

    /// Returns once a look-up round that included this hold finished, with
    /// the result if that round (or an earlier one) found it: a result
    /// written before the hold was taken is there, unless the round failed.
    pub async fn checked(&mut self) -> Option<Arc<IssueResult>> {
        let first = self.first_round;
        // The sender lives in `inner`, which this hold keeps alive.
        let _ = self.finished.wait_for(|n| *n >= first).await;
        // A round delivers what it found before it counts as finished.
        self.result.as_ref()?.borrow().clone()
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        let mut entries = self.inner.entries.lock().expect("held lock");
        // Under the lock, so that holds of one id dropping at once see
        // each other's receivers gone: the last one removes the entry.
        drop(self.result.take());
        if entries
            .by_id
            .get(&self.id)
            .is_some_and(|e| e.receiver_count() == 0)
        {
            entries.by_id.remove(&self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry() -> Held {
        let pool = db::pool("mysql://nobody@127.0.0.1:1/none", 1).unwrap();
        Held::new(pool)
    }

    fn result_for(id: Uuid) -> IssueResult {
        IssueResult {
            request_id: id,
            coupon_id: 1,
            user_id: 1,
            status: common::domain::IssueStatus::Success,
            reason: None,
            queue_position: "1-0".into(),
            queue_type: common::domain::QueueType::Redis,
            queue_epoch: 1,
            requested_at: chrono::Utc::now(),
            processed_at: chrono::Utc::now(),
        }
    }

    #[tokio::test]
    async fn callers_of_one_id_share_an_entry_and_the_last_to_leave_removes_it() {
        let held = registry();
        let id = Uuid::now_v7();
        let a = held.hold(id);
        let b = held.hold(id);
        let other = held.hold(Uuid::now_v7());
        assert_eq!(held.len(), 2);
        drop(a);
        assert_eq!(held.len(), 2, "b still waits for {id}");
        drop(b);
        assert_eq!(held.len(), 1);
        drop(other);
        assert!(held.is_empty());
    }

    #[tokio::test]
    async fn a_delivered_result_reaches_every_caller_and_frees_the_id() {
        let held = registry();
        let id = Uuid::now_v7();
        let (mut a, mut b) = (held.hold(id), held.hold(id));
        held.inner
            .deliver(vec![result_for(id), result_for(Uuid::now_v7())]);
        assert!(held.is_empty());
        assert_eq!(a.result().await.request_id, id);
        assert_eq!(b.result().await.request_id, id);
        drop((a, b));
        // A later caller of the same id holds it anew.
        let _c = held.hold(id);
        assert_eq!(held.len(), 1);
    }

    #[tokio::test]
    async fn a_hold_is_checked_once_a_round_that_included_it_finished() {
        let held = registry();
        let mut early = held.hold(Uuid::now_v7());
        held.inner.entries.lock().unwrap().started += 1; // round 1 starts
        let mut late = held.hold(Uuid::now_v7());
        held.inner.finished.send_replace(1);
        tokio::time::timeout(Duration::from_millis(100), early.checked())
            .await
            .expect("round 1 included the early hold");
        let waited = tokio::time::timeout(Duration::from_millis(100), late.checked()).await;
        assert!(waited.is_err(), "round 1 started before the late hold");
        held.inner.finished.send_replace(2);
        assert!(late.checked().await.is_none(), "nothing was delivered");
    }
}
