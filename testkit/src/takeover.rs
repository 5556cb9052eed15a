//! Killing the worker that has work in hand, and seeing another take it
//! over: what makes a kill test show more than a worker dying idle.

use std::time::{Duration, Instant};

use common::domain::{CouponId, QueueType};
use tokio::process::Child;

use crate::app::TestApp;
use crate::audit::wait_until;
use crate::ports::free_port;
use crate::queues::QueueReader;
use crate::workers::{kill9, scrape};

/// A worker process a test started, with its metrics port.
pub struct WorkerProcess {
    pub child: Child,
    pub pid: u32,
    pub port: u16,
    pub queue: QueueType,
}

impl WorkerProcess {
    /// Events it acknowledged so far (`coupon_issue_events_acknowledged_total`).
    pub async fn acknowledged(&self) -> f64 {
        scrape(self.port, "coupon_issue_events_acknowledged_total")
            .await
            .unwrap_or(0.0)
    }

    /// Kafka partitions it holds (`kafka_assigned_partitions`).
    pub async fn partitions(&self) -> f64 {
        scrape(self.port, "kafka_assigned_partitions")
            .await
            .unwrap_or(0.0)
    }
}

/// What a worker had in hand when it was killed.
#[derive(Debug)]
pub struct Killed {
    /// Its index in the test's workers.
    pub index: usize,
    pub pid: u32,
    /// The coupon it was draining.
    pub coupon: CouponId,
    /// That coupon's entries not acknowledged when it died, which the next
    /// worker reads again: Redis, its stream's length; Kafka, the group's
    /// lag on its partition.
    pub left: u64,
    /// Every worker's acknowledged count at the kill, by pid.
    acknowledged: Vec<(u32, f64)>,
}

impl TestApp {
    /// Launches a worker of this app's queue on a free metrics port, with
    /// these variables on top of the test's.
    pub fn start_worker(&self, vars: &[(&str, &str)]) -> WorkerProcess {
        self.start_worker_for(self.common.queue_type, vars)
    }

    /// [`TestApp::start_worker`] of `queue`.
    pub fn start_worker_for(&self, queue: QueueType, vars: &[(&str, &str)]) -> WorkerProcess {
        let port = free_port();
        let child = self
            .worker_command_for(queue)
            .env("WORKER_PORT", port.to_string())
            .envs(vars.iter().copied())
            .spawn()
            .expect("worker process starts");
        WorkerProcess {
            pid: child.id().expect("just started"),
            child,
            port,
            queue,
        }
    }

    /// Waits until every one of `workers` (Kafka) holds partitions and
    /// together they hold all of them, so that no rebalance moves a
    /// partition once the sale runs.
    pub async fn wait_for_partitions(&self, workers: &[WorkerProcess], within: Duration) {
        let total = f64::from(self.common.kafka_partitions);
        wait_until("every worker to hold partitions", within, || async {
            let mut held = Vec::new();
            for w in workers {
                held.push(w.partitions().await);
            }
            held.iter().all(|&n| n > 0.0) && held.iter().sum::<f64>() == total
        })
        .await;
    }

    /// SIGKILLs the worker of `workers` that is draining one of `coupons`
    /// now, at a moment it holds entries it has not acknowledged, which the
    /// next worker must read again. The worker is frozen (SIGSTOP) while
    /// that is checked, and let go (SIGCONT) to try again if it holds none.
    ///
    /// * Redis: the worker whose pid the coupon's lease names, while the
    ///   stream holds entries; after its death the lease still names it.
    /// * Kafka: the worker whose acknowledged count rises (in a sale of one
    ///   coupon only the holder of its partition acknowledges anything),
    ///   while the group's lag on the partition is not 0.
    pub async fn kill_worker_draining(
        &self,
        coupons: &[CouponId],
        workers: &mut [WorkerProcess],
        within: Duration,
    ) -> Killed {
        let queue = workers[0].queue;
        assert!(
            workers.iter().all(|w| w.queue == queue),
            "workers of one queue"
        );
        let mut reader = self.queue_reader(queue).await;
        let start = Instant::now();
        loop {
            assert!(
                start.elapsed() < within,
                "no worker was draining coupons {coupons:?} with entries left within {within:?}"
            );
            let Some((index, coupon)) = draining(&mut reader, queue, coupons, workers).await else {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            };
            let mut acknowledged = Vec::with_capacity(workers.len());
            for w in workers.iter() {
                acknowledged.push((w.pid, w.acknowledged().await));
            }
            // Frozen, it can neither acknowledge nor give its lease back
            // while what it holds is read; it dies only holding something.
            let pid = workers[index].pid;
            signal(pid, "STOP");
            let holds = match queue {
                QueueType::Redis => reader.lease_holder(coupon).await == Some(pid),
                QueueType::Kafka => true,
            };
            let left = reader.size(coupon).await;
            if !(holds && left > 0) {
                signal(pid, "CONT");
                continue;
            }
            kill9(&mut workers[index].child).await;
            if queue == QueueType::Redis {
                assert_eq!(
                    reader.lease_holder(coupon).await,
                    Some(pid),
                    "worker {pid} died holding coupon {coupon}'s lease"
                );
            }
            // The api may still add entries; nobody took any away.
            let now = reader.size(coupon).await;
            assert!(
                now >= left,
                "entries of coupon {coupon} were acknowledged after worker {pid} died: {left} then {now}"
            );
            return Killed {
                index,
                pid,
                coupon,
                left,
                acknowledged,
            };
        }
    }

    /// Freezes every one of `workers` (SIGSTOP) until the coupon's queue
    /// holds `backlog` entries not acknowledged (the api goes on accepting
    /// meanwhile), or `within` passed, then lets them go. However fast the
    /// workers drain, the next one to drain the coupon then has entries in
    /// hand for a while, for [`TestApp::kill_worker_draining`] to find.
    pub async fn hold_workers_until_backlog(
        &self,
        coupon: CouponId,
        workers: &[WorkerProcess],
        backlog: u64,
        within: Duration,
    ) {
        let reader = self.queue_reader(workers[0].queue).await;
        for w in workers {
            signal(w.pid, "STOP");
        }
        let start = Instant::now();
        while reader.size(coupon).await < backlog && start.elapsed() < within {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        for w in workers {
            signal(w.pid, "CONT");
        }
    }

    /// Waits until a live worker of `workers` has taken over what `killed`
    /// left: Redis, it holds the coupon's lease (once the dead worker's
    /// expired) or the stream was drained; Kafka, a worker acknowledged
    /// events since the kill (the dead member's partition was handed on).
    pub async fn wait_for_takeover(
        &self,
        killed: &Killed,
        workers: &[WorkerProcess],
        within: Duration,
    ) {
        let queue = workers[0].queue;
        let live = |w: &&WorkerProcess| w.pid != killed.pid;
        let reader = tokio::sync::Mutex::new(self.queue_reader(queue).await);
        wait_until(
            &format!("another worker to take over coupon {}", killed.coupon),
            within,
            || async {
                match queue {
                    QueueType::Redis => {
                        let mut reader = reader.lock().await;
                        let holder = reader.lease_holder(killed.coupon).await;
                        holder.is_some_and(|pid| workers.iter().filter(live).any(|w| w.pid == pid))
                            || reader.size(killed.coupon).await == 0
                    }
                    QueueType::Kafka => {
                        for w in workers.iter().filter(live) {
                            let before = killed
                                .acknowledged
                                .iter()
                                .find(|(pid, _)| *pid == w.pid)
                                .map_or(0.0, |(_, n)| *n);
                            if w.acknowledged().await > before {
                                return true;
                            }
                        }
                        false
                    }
                }
            },
        )
        .await;
    }
}

/// Sends `signal` (`STOP`, `CONT`) to the process `pid`.
fn signal(pid: u32, signal: &str) {
    let ok = std::process::Command::new("kill")
        .args([format!("-{signal}"), pid.to_string()])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "kill -{signal} {pid}");
}

/// The index of the worker draining one of `coupons` now, and that coupon.
async fn draining(
    reader: &mut QueueReader,
    queue: QueueType,
    coupons: &[CouponId],
    workers: &[WorkerProcess],
) -> Option<(usize, CouponId)> {
    match queue {
        QueueType::Redis => {
            for &coupon in coupons {
                let Some(pid) = reader.lease_holder(coupon).await else {
                    continue;
                };
                let Some(index) = workers.iter().position(|w| w.pid == pid) else {
                    continue;
                };
                if reader.size(coupon).await > 0 {
                    return Some((index, coupon));
                }
            }
            None
        }
        QueueType::Kafka => {
            let [coupon] = coupons else {
                panic!("a Kafka worker is told apart in a sale of one coupon");
            };
            let mut before = Vec::with_capacity(workers.len());
            for w in workers {
                before.push(w.acknowledged().await);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
            let mut rising = Vec::new();
            for (i, w) in workers.iter().enumerate() {
                if w.acknowledged().await > before[i] {
                    rising.push(i);
                }
            }
            // Two at once: the partition moved meanwhile; look again.
            match rising[..] {
                [index] => Some((index, *coupon)),
                _ => None,
            }
        }
    }
}
