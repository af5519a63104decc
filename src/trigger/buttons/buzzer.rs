//! The buzzer: two short chirps when an officer acknowledges an alert, so that staff who are
//! not looking at the light hear that a person saw it.

use std::time::Duration;

use alertclip_wire::command::ResponseState;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::trigger::buttons::button::InputError;
use crate::trigger::buttons::light::{Light, recv_news};

/// On, off, on: two chirps.
const CHIRP: [(bool, Duration); 3] = [
    (true, Duration::from_millis(120)),
    (false, Duration::from_millis(120)),
    (true, Duration::from_millis(120)),
];

/// Chirps on `buzzer` for every acknowledgement among `responses` until `cancel`. A buzzer
/// that cannot be opened is tried again at the next acknowledgement.
pub async fn run<B: Light>(
    open: impl Fn() -> Result<B, InputError> + Send,
    responses: broadcast::Receiver<(Uuid, ResponseState)>,
    cancel: CancellationToken,
) {
    let mut responses = Some(responses);
    let mut buzzer: Option<B> = None;
    loop {
        let state = tokio::select! {
            _ = cancel.cancelled() => break,
            news = recv_news(&mut responses) => match news {
                Some((_, state)) => state,
                None => continue,
            },
        };
        if state != ResponseState::Acknowledged {
            continue;
        }
        if buzzer.is_none() {
            match open() {
                Ok(opened) => buzzer = Some(opened),
                Err(error) => {
                    tracing::warn!(%error, "buzzer unavailable: the acknowledgement is not heard");
                    continue;
                }
            }
        }
        let Some(device) = buzzer.as_mut() else {
            continue;
        };
        for (on, length) in CHIRP {
            if let Err(error) = device.set(on) {
                tracing::warn!(%error, "buzzer lost");
                buzzer = None;
                break;
            }
            tokio::time::sleep(length).await;
        }
        if let Some(device) = buzzer.as_mut() {
            let _ = device.set(false);
        }
    }
    if let Some(device) = buzzer.as_mut() {
        let _ = device.set(false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use tokio::time::Instant;

    struct Recorder(Arc<Mutex<Vec<(Duration, bool)>>>, Instant);

    impl Light for Recorder {
        fn set(&mut self, on: bool) -> Result<(), InputError> {
            self.0.lock().unwrap().push((Instant::now() - self.1, on));
            Ok(())
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_acknowledgement_chirps_twice_and_other_states_do_not() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let (log2, t0) = (log.clone(), Instant::now());
        let (tx, rx) = broadcast::channel(8);
        let cancel = CancellationToken::new();
        let task = tokio::spawn(run(
            move || Ok(Recorder(log2.clone(), t0)),
            rx,
            cancel.clone(),
        ));
        let event = Uuid::now_v7();
        tx.send((event, ResponseState::Dispatched)).unwrap();
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(
            log.lock().unwrap().is_empty(),
            "only an acknowledgement chirps"
        );
        tx.send((event, ResponseState::Acknowledged)).unwrap();
        tokio::time::sleep(Duration::from_secs(1)).await;
        cancel.cancel();
        task.await.unwrap();
        let ms = Duration::from_millis;
        assert_eq!(
            log.lock().unwrap()[..4],
            [
                (ms(1000), true),
                (ms(1120), false),
                (ms(1240), true),
                (ms(1360), false)
            ]
        );
    }
}
