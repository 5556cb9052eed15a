//! Exponential backoff for the loops that wait for a service to come back.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// Waits that double after each attempt, up to a cap.
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
    max: Duration,
    jitter: bool,
}

impl Backoff {
    /// Starts at `initial`, doubles up to `max` (`initial == max`: a fixed wait).
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self {
            next: initial,
            max,
            jitter: false,
        }
    }

    /// Each wait becomes a random time between half of it and all of it, so
    /// that workers retrying at once spread out.
    pub fn with_jitter(mut self) -> Self {
        self.jitter = true;
        self
    }

    /// The next wait, before jitter.
    pub fn current(&self) -> Duration {
        self.next
    }

    /// Sleeps the next wait and doubles the one after it; returns `false`
    /// at once if `cancel` fires first.
    pub async fn wait(&mut self, cancel: &CancellationToken) -> bool {
        let wait = if self.jitter {
            jitter(self.next)
        } else {
            self.next
        };
        self.next = (self.next * 2).min(self.max);
        tokio::select! {
            _ = tokio::time::sleep(wait) => true,
            _ = cancel.cancelled() => false,
        }
    }
}

fn jitter(d: Duration) -> Duration {
    let ms = d.as_millis() as u64;
    Duration::from_millis(ms / 2 + rand::random::<u64>() % (ms / 2 + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn waits_double_up_to_the_cap_and_stop_on_cancel() {
        let mut b = Backoff::new(Duration::from_millis(1), Duration::from_millis(3));
        let cancel = CancellationToken::new();
        let mut seen = Vec::new();
        for _ in 0..3 {
            seen.push(b.current());
            assert!(b.wait(&cancel).await);
        }
        assert_eq!(seen, [1, 2, 3].map(Duration::from_millis));
        cancel.cancel();
        assert!(!b.wait(&cancel).await);
    }
}
