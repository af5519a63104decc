//! Delays between attempts at something that keeps failing: a broker connection here, and on
//! the box a camera's connection and a button's input. One rule everywhere: start at `first`,
//! double to `max`, start over once an attempt works.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// See the module documentation.
#[derive(Debug, Clone)]
pub struct Backoff {
    first: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    /// Delays from `first`, doubling up to `max`.
    pub const fn new(first: Duration, max: Duration) -> Backoff {
        Backoff {
            first,
            max,
            next: first,
        }
    }

    /// An attempt worked: the next failure waits `first` again.
    pub fn reset(&mut self) {
        self.next = self.first;
    }

    /// The delay before the next attempt; the one after is twice as long, up to `max`.
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(self.max);
        delay
    }

    /// Waits the next delay; `false` when `cancel` came first.
    pub async fn wait(&mut self, cancel: &CancellationToken) -> bool {
        let delay = self.next_delay();
        tokio::select! {
            _ = cancel.cancelled() => false,
            _ = tokio::time::sleep(delay) => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn delays_double_to_the_cap_and_start_over_after_a_success() {
        let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
        let delays: Vec<u64> = (0..7).map(|_| backoff.next_delay().as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 30, 30]);
        backoff.reset();
        let start = tokio::time::Instant::now();
        assert!(backoff.wait(&CancellationToken::new()).await);
        assert_eq!(start.elapsed(), Duration::from_secs(1));
        let cancel = CancellationToken::new();
        cancel.cancel();
        assert!(!backoff.wait(&cancel).await);
    }
}
