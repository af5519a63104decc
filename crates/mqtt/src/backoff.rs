//! Delays between attempts at something that keeps failing: a broker connection here, and on
//! the box a camera's connection and a button's input. One rule everywhere: start at `first`,
//! double to `max`, start over once an attempt works.
//!
//! Backing off must not make an alarm wait: a broker (or camera) that comes back in the middle
//! of a 30 s delay should be tried at once, not when the delay ends. [`Backoff::wait_until`]
//! therefore asks every [`PROBE_EVERY`] whether the server answers again (for a broker,
//! [`Backoff::wait_for`]: whether it accepts a TCP connection), and ends the wait when it does
//! after having refused. A server that answers all along but refuses the client, a bad
//! password say, keeps the full delay.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How often a wait looks whether the server answers again.
pub const PROBE_EVERY: Duration = Duration::from_millis(250);

/// See the module documentation.
#[derive(Debug, Clone)]
pub struct Backoff {
    first: Duration,
    max: Duration,
    next: Duration,
    /// The last probe found the server not answering (carried from one wait to the next, so a
    /// server that comes back between two waits still ends the second at once).
    refused: bool,
    /// The last wait ended early, because the server answered again.
    ended_early: bool,
}

/// After a wait ended early, how long before trying once more if that attempt failed: a
/// server that has just come back may still be starting (gst-rtsp-server answers 503 while
/// it prepares the stream).
pub const RETRY_AFTER_EARLY: Duration = Duration::from_millis(500);

impl Backoff {
    /// Delays from `first`, doubling up to `max`.
    pub const fn new(first: Duration, max: Duration) -> Backoff {
        Backoff {
            first,
            max,
            next: first,
            refused: false,
            ended_early: false,
        }
    }

    /// An attempt worked: the next failure waits `first` again.
    pub fn reset(&mut self) {
        self.next = self.first;
        self.refused = false;
        self.ended_early = false;
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

impl Backoff {
    /// Waits the next delay, or until the TCP server at `host:port` accepts a connection after
    /// refusing one (probed every [`PROBE_EVERY`]); `false` when `cancel` came first.
    pub async fn wait_for(&mut self, host: &str, port: u16, cancel: &CancellationToken) -> bool {
        let addresses: Vec<SocketAddr> = tokio::select! {
            _ = cancel.cancelled() => return false,
            found = tokio::time::timeout(PROBE_EVERY, tokio::net::lookup_host((host, port))) => {
                found.ok().and_then(Result::ok).map(Iterator::collect).unwrap_or_default()
            }
        };
        let addresses = &addresses;
        self.wait_until(cancel, || accepts(addresses)).await
    }

    /// Waits the next delay, or until `answers` (asked every [`PROBE_EVERY`]) says yes
    /// (`Some(true)`) after having said no (`Some(false)`: refused, not merely slow), in this
    /// wait or at the end of the one before; `None` (no answer in time) changes nothing, so a
    /// slow link never cuts a delay short. `false` when `cancel` came first. When the attempt after a wait that ended so fails too, the next wait is
    /// [`RETRY_AFTER_EARLY`] once.
    pub async fn wait_until<F, A>(&mut self, cancel: &CancellationToken, mut answers: F) -> bool
    where
        F: FnMut() -> A,
        A: Future<Output = Option<bool>>,
    {
        if std::mem::take(&mut self.ended_early) {
            // The attempt right after the server came back failed: once more, shortly.
            return tokio::select! {
                _ = cancel.cancelled() => false,
                _ = tokio::time::sleep(RETRY_AFTER_EARLY) => true,
            };
        }
        let deadline = Instant::now() + self.next_delay();
        loop {
            let next_probe = Instant::now() + PROBE_EVERY;
            let answered = tokio::select! {
                _ = cancel.cancelled() => return false,
                _ = tokio::time::sleep_until(deadline) => return true,
                answered = answers() => answered,
            };
            if let Some(answered) = answered {
                let was_refused = std::mem::replace(&mut self.refused, !answered);
                if answered && was_refused {
                    self.ended_early = true;
                    return true;
                }
            }
            tokio::select! {
                _ = cancel.cancelled() => return false,
                _ = tokio::time::sleep_until(deadline.min(next_probe)) => {}
            }
            if Instant::now() >= deadline {
                return true;
            }
        }
    }
}

/// Whether any of `addresses` accepts a TCP connection: `Some(false)` when every one refused,
/// `None` when one gave no answer within [`PROBE_EVERY`] (or there are none to ask).
async fn accepts(addresses: &[SocketAddr]) -> Option<bool> {
    let mut answer = None;
    for address in addresses {
        let connect = tokio::net::TcpStream::connect(address);
        match tokio::time::timeout(PROBE_EVERY, connect).await {
            Ok(Ok(_)) => return Some(true),
            Ok(Err(_)) if answer.is_none() => answer = Some(false),
            Ok(Err(_)) => {}
            Err(_) => return None,
        }
    }
    answer
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

    #[tokio::test]
    async fn a_wait_ends_once_a_refusing_server_accepts_again_and_not_before() {
        // A port nothing listens on: found by binding, then freed.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let mut backoff = Backoff::new(Duration::from_secs(600), Duration::from_secs(600));
        let cancel = CancellationToken::new();
        let waiting =
            tokio::spawn(async move { backoff.wait_for("127.0.0.1", port, &cancel).await });
        // The wait goes on while the port refuses ...
        let refused = tokio::net::TcpStream::connect(("127.0.0.1", port)).await;
        assert!(refused.is_err());
        assert!(!waiting.is_finished());
        // ... and ends once it accepts (within a probe or two), long before 600 s.
        let _server = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap();
        let ended = tokio::time::timeout(Duration::from_secs(5), waiting).await;
        assert!(matches!(ended, Ok(Ok(true))), "{ended:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_server_back_between_waits_ends_the_next_at_once_and_a_failure_then_retries_soon() {
        let mut backoff = Backoff::new(Duration::from_secs(8), Duration::from_secs(30));
        let cancel = CancellationToken::new();
        let start = Instant::now();
        // Down for the whole first wait.
        assert!(backoff.wait_until(&cancel, || async { Some(false) }).await);
        assert_eq!(start.elapsed(), Duration::from_secs(8));
        // Back before the second began: it ends at its first probe.
        let second = Instant::now();
        assert!(backoff.wait_until(&cancel, || async { Some(true) }).await);
        assert_eq!(second.elapsed(), Duration::ZERO);
        // That attempt failed anyway: one more shortly, then the full delay again.
        let third = Instant::now();
        assert!(backoff.wait_until(&cancel, || async { Some(true) }).await);
        assert_eq!(third.elapsed(), RETRY_AFTER_EARLY);
        let fourth = Instant::now();
        assert!(backoff.wait_until(&cancel, || async { Some(true) }).await);
        assert_eq!(fourth.elapsed(), Duration::from_secs(30));
    }

    #[tokio::test]
    async fn a_server_that_accepts_all_along_keeps_the_full_delay() {
        let server = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = server.local_addr().unwrap().port();
        let mut backoff = Backoff::new(Duration::from_millis(1_500), Duration::from_secs(2));
        let start = Instant::now();
        assert!(
            backoff
                .wait_for("127.0.0.1", port, &CancellationToken::new())
                .await
        );
        assert!(start.elapsed() >= Duration::from_millis(1_500));
    }
}
